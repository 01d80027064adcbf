//! The one answer to "is this Redis error worth a retry?", for every loop
//! that talks to Redis (ingest, the audit sink, the outbox, the
//! write-behind).

use redis::{RedisError, RetryMethod};

/// What a failed Redis call calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A new connection or a moment may cure it: retry with a backoff.
    Transient,
    /// Retrying changes nothing (a key of the wrong type, a script error, a
    /// command the server refuses): report it.
    Lasting,
}

/// Server error codes that pass: the server loading its data, a cluster
/// slot moving or its master down, a group gone because Redis lost its
/// data (it is made again), a blocked read whose stream was deleted, a
/// script running too long.
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "TRYAGAIN",
    "MASTERDOWN",
    "NOGROUP",
    "UNBLOCKED",
    "BUSY",
    "CLUSTERDOWN",
    // A cluster's slot moved (a failover): asked again of its new master.
    "MOVED",
    "ASK",
];

/// Sorts an error: the connection's own failures (I/O, timeouts, a dropped
/// or unusable connection, anything redis-rs would retry) and the codes in
/// [`TRANSIENT_CODES`] are transient; the rest last. A pipeline's error
/// counts as transient when any of its server errors is.
pub fn classify(e: &RedisError) -> ErrorClass {
    let connection = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || !matches!(e.retry_method(), RetryMethod::NoRetry);
    if connection || TRANSIENT_CODES.iter().any(|code| has_code(e, code)) {
        ErrorClass::Transient
    } else {
        ErrorClass::Lasting
    }
}

/// Server error codes that are one key's fault: it holds a value of
/// another type (someone wrote a hash where a string belongs). The command
/// fails on that key forever, and on no other.
pub const KEY_CODES: &[&str] = &["WRONGTYPE"];

/// For a failed pipeline sent without `MULTI` (every command ran, each
/// answered on its own), the commands that failed for their own key alone:
/// their indices and errors. `None` if any of its failures calls for
/// sending the pipeline again: the connection's, a transient code, or a
/// lasting one that is no key's fault (`NOPERM`, `OOM`, `MISCONF`, a script
/// missing), which would refuse every key alike. A single command's error
/// is its index 0.
pub fn key_errors(e: &RedisError) -> Option<Vec<(usize, String)>> {
    let errors = e.clone().into_server_errors()?;
    errors
        .iter()
        .all(|(_, s)| KEY_CODES.contains(&s.code()))
        .then(|| errors.iter().map(|(i, s)| (*i, s.to_string())).collect())
}

/// Shorthand for `classify(e) == ErrorClass::Transient`.
pub fn is_transient(e: &RedisError) -> bool {
    classify(e) == ErrorClass::Transient
}

/// Whether `e`, or one of a pipeline's server errors in it, has `code`.
pub fn has_code(e: &RedisError, code: &str) -> bool {
    e.code() == Some(code)
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, s)| s.code() == code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), None)
    }

    #[test]
    fn connection_failures_and_passing_codes_are_transient_the_rest_last() {
        for code in TRANSIENT_CODES {
            assert_eq!(classify(&server(code)), ErrorClass::Transient, "{code}");
        }
        for code in ["WRONGTYPE", "ERR", "NOSCRIPT", "NOPERM"] {
            assert_eq!(classify(&server(code)), ErrorClass::Lasting, "{code}");
        }
        let reset: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(is_transient(&reset));
        let timeout: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow").into();
        assert!(is_transient(&timeout));
        assert!(matches!(
            &key_errors(&server("WRONGTYPE")).unwrap()[..],
            [(0, _)]
        ));
        assert_eq!(key_errors(&server("NOPERM")), None);
        assert_eq!(key_errors(&reset), None);
    }
}
