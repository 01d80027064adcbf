//! The one answer to "is this PostgreSQL error worth a retry, and whose
//! fault is it?": the PostgreSQL counterpart of
//! `callwatch_streams::classify`, for every loop that writes rows.
//!
//! A retry loop that retried everything would retry a row PostgreSQL can
//! never take (a NUL in a text, error 22021) forever, and hold up every row
//! behind it; one that gave up on everything would drop rows whenever the
//! connection drops. So errors are sorted by what cures them.

/// What a failed PostgreSQL call calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A new connection or a moment may cure it: the connection lost or
    /// refused, the server shutting down, out of resources or behind a
    /// lock, a serialization failure or a deadlock, a timeout. Retry.
    Transient,
    /// The rows' own fault: PostgreSQL refuses a value (class 22: a NUL in
    /// a text, JSON it cannot store, a number out of range), a constraint
    /// (class 23), or a size limit (class 54). The same rows fail forever
    /// and other rows may go in: find them and set them aside.
    Data,
    /// Anything else: the schema, a permission or a setting (a missing
    /// table, a denied grant). No row goes in until an operator acts, and
    /// setting rows aside would lose good ones: retry, and say so loudly.
    Lasting,
}

/// SQLSTATE classes (the code's first two characters) that pass.
const TRANSIENT_CLASSES: &[&str] = &[
    "08", // connection exception
    "40", // transaction rollback: serialization failure, deadlock
    "53", // insufficient resources: disk full, out of memory, too many connections
    "57", // operator intervention: shutdown, cancelled statement (but see below)
    "58", // system error: I/O
];

/// Codes that pass although their class does not: a lock not granted, an
/// object in use, an idle transaction timed out.
const TRANSIENT_CODES: &[&str] = &["55P03", "55006", "25P03"];

/// Codes of a transient class that last: the database dropped.
const LASTING_CODES: &[&str] = &["57P04"];

/// SQLSTATE classes that are the rows' fault.
const DATA_CLASSES: &[&str] = &["22", "23", "54"];

/// Sorts an error: a server error by its SQLSTATE ([`classify_code`]); an
/// error without one (the connection closed, I/O, a message the client
/// could not read) is transient.
pub fn classify(e: &tokio_postgres::Error) -> ErrorClass {
    match e.code() {
        Some(state) => classify_code(state.code()),
        None => ErrorClass::Transient,
    }
}

/// Sorts a SQLSTATE code (e.g. `"22021"`).
pub fn classify_code(code: &str) -> ErrorClass {
    let class = code.get(..2).unwrap_or(code);
    if LASTING_CODES.contains(&code) {
        ErrorClass::Lasting
    } else if TRANSIENT_CODES.contains(&code) || TRANSIENT_CLASSES.contains(&class) {
        ErrorClass::Transient
    } else if DATA_CLASSES.contains(&class) {
        ErrorClass::Data
    } else {
        ErrorClass::Lasting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sort_by_what_cures_them() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "57014", "40001", "40P01", "53300",
            "53100", "58030", "55P03", "25P03",
        ] {
            assert_eq!(classify_code(code), ErrorClass::Transient, "{code}");
        }
        // A NUL in a text, a NUL in JSON, a number out of range, a bad
        // time, a constraint, a key too large for its index.
        for code in [
            "22021", "22P05", "22003", "22008", "23505", "23502", "23514", "54000",
        ] {
            assert_eq!(classify_code(code), ErrorClass::Data, "{code}");
        }
        // A missing table, a denied grant, a missing schema, the database
        // dropped, a server bug.
        for code in ["42P01", "42501", "3F000", "57P04", "XX000", "?"] {
            assert_eq!(classify_code(code), ErrorClass::Lasting, "{code}");
        }
    }
}
