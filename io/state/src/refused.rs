//! Changes Redis refuses for their own key: a raise of `last_threshold` at
//! a key that someone made a hash, a list or a set (`WRONGTYPE`; a `SET`
//! replaces a key of any type, so only the raise can meet one). Sending
//! such a change again would fail forever, and its whole pipeline with it,
//! so the write-behind sets each aside: logged at error with its key, added
//! to the dead-letter stream with what it would have written and Redis's
//! answer, and counted (`WriteBehindStats::set_aside`).

use callwatch_streams::log::{DeadLetters, KeyLetter};
use redis::aio::ConnectionLike;

/// Entries the dead-letter stream is trimmed to, by default: the ingest's
/// default bound on the same stream.
pub const DEAD_LETTERS_MAX_LEN: u64 = 1_000_000;

/// One change Redis refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The key, prefix included.
    pub key: Vec<u8>,
    /// How it was to be written: `set` (the value) or `raise_threshold`
    /// (the raise script, given the threshold).
    pub write: &'static str,
    pub value: Vec<u8>,
    /// Redis's answer.
    pub reason: String,
}

/// Logs each of `refused` and adds it to `dead_letters`, in one pipeline.
/// If the dead-letter stream cannot take them, that is logged too and not
/// retried: the log already holds everything the entries would, and the
/// write-behind must not stall on its own way out of a stall.
pub(crate) async fn set_aside(
    con: &mut impl ConnectionLike,
    dead_letters: &DeadLetters,
    refused: &[Refused],
) {
    if refused.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for r in refused {
        tracing::error!(
            key = %r.key.escape_ascii(),
            write = r.write,
            value = %r.value.escape_ascii(),
            reason = %r.reason,
            "Redis refuses this change for its key; set aside in the dead-letter stream"
        );
        dead_letters.add_key_to(
            &mut pipe,
            &KeyLetter {
                key: &r.key,
                value: (r.write, &r.value),
                reason: &r.reason,
            },
        );
    }
    if let Err(e) = pipe.query_async::<()>(con).await {
        tracing::error!(
            error = %e,
            stream = %dead_letters.stream,
            changes = refused.len(),
            "refused changes not added to the dead-letter stream; the log above holds them"
        );
    }
}
