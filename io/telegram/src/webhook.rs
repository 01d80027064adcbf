//! The webhook's front door: our own axum route between Telegram and the
//! dispatcher, in place of teloxide's, which compares the secret in
//! variable time, reads bodies up to axum's 2 MB default and queues
//! updates without bound.
//!
//! Each request, in this order:
//! 1. After the stop: 503 (Telegram sends it again later).
//! 2. `X-Telegram-Bot-Api-Secret-Token` missing or wrong: 401; not of the
//!    shape Telegram sends: 400. Compared in constant time over the whole
//!    256 bytes Telegram allows, so neither the secret's bytes nor its
//!    length show in how long a refusal takes.
//! 3. A body over [`BODY_LIMIT_BYTES`]: 413, read no further than that.
//! 4. A body that is no update: 200 (Telegram would only send it again),
//!    logged and counted.
//! 5. The queue to the dispatcher holds at most `queue` updates. When it
//!    is full: 429 with `Retry-After`, so Telegram sends the update again
//!    later instead of this process holding it in memory; counted.
//!
//! Otherwise the update is queued and answered 200. The queue closes when
//! the server stops, and the dispatcher still takes what it holds.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use teloxide::stop::{StopFlag, StopToken, mk_stop_token};
use teloxide::types::Update;
use teloxide::update_listeners::{StatefulListener, UpdateListener};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

/// The largest request body taken: Telegram's updates are a few KiB (a
/// message is at most 4,096 characters, a caption 1,024).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Updates the queue to the dispatcher holds by default.
pub const DEFAULT_QUEUE: usize = 256;

/// The header Telegram sends the secret in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The longest secret Telegram allows.
const SECRET_MAX: usize = 256;

/// What the front door did, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Updates queued for the dispatcher.
    pub queued: AtomicU64,
    /// Requests refused for a missing, malformed or wrong secret.
    pub refused_secret: AtomicU64,
    /// Requests refused for a body over [`BODY_LIMIT_BYTES`].
    pub too_large: AtomicU64,
    /// Updates refused (429) because the queue was full.
    pub queue_full: AtomicU64,
    /// Bodies with the secret that were no update (answered 200, dropped).
    pub unreadable: AtomicU64,
}

/// The secret, padded to [`SECRET_MAX`] bytes for a comparison whose time
/// does not depend on it.
struct Secret {
    padded: [u8; SECRET_MAX],
    len: u64,
}

impl Secret {
    /// `secret` is checked by the caller (1 to 256 bytes).
    fn new(secret: &str) -> Secret {
        assert!((1..=SECRET_MAX).contains(&secret.len()), "checked secret");
        let mut padded = [0; SECRET_MAX];
        padded[..secret.len()].copy_from_slice(secret.as_bytes());
        Secret {
            padded,
            len: secret.len() as u64,
        }
    }

    /// Whether `given` is the secret: every byte of both (padded) is
    /// compared, and the lengths, whatever differs first.
    fn matches(&self, given: &[u8]) -> bool {
        if given.len() > SECRET_MAX {
            return false;
        }
        let mut padded = [0; SECRET_MAX];
        padded[..given.len()].copy_from_slice(given);
        let same = padded.ct_eq(&self.padded) & (given.len() as u64).ct_eq(&self.len);
        same.into()
    }
}

/// Whether a header value has the shape of Telegram's secrets (1 to 256
/// of `A-Z a-z 0-9 _ -`); the secret itself plays no part.
fn secret_shaped(given: &[u8]) -> bool {
    (1..=SECRET_MAX).contains(&given.len())
        && given
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// The route's state.
struct Front {
    secret: Secret,
    queue: mpsc::Sender<Update>,
    stopped: StopFlag,
    counters: Arc<WebhookCounters>,
}

/// What the dispatcher reads: the queue's far end.
type Updates = Pin<Box<dyn Stream<Item = Result<Update, Infallible>> + Send>>;

/// The front door for `path`: the listener the dispatcher reads, the
/// future that completes when that listener is stopped, and the router to
/// serve. The queue holds at most `queue` updates (at least 1).
pub(crate) fn front(
    path: &str,
    secret: &str,
    queue: usize,
    counters: Arc<WebhookCounters>,
) -> (
    impl UpdateListener<Err = Infallible> + use<>,
    StopFlag,
    axum::Router,
) {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let (stop_token, stopped) = mk_stop_token();
    let front = Arc::new(Front {
        secret: Secret::new(secret),
        queue: tx,
        stopped: stopped.clone(),
        counters,
    });
    let router = axum::Router::new()
        .route(path, axum::routing::post(take))
        .with_state(front);
    let updates: Updates = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok));
    let listener = StatefulListener::new((updates, stop_token), updates_of, stop_token_of);
    (listener, stopped, router)
}

fn updates_of(state: &mut (Updates, StopToken)) -> &mut Updates {
    &mut state.0
}

fn stop_token_of(state: &mut (Updates, StopToken)) -> StopToken {
    state.1.clone()
}

/// One request from Telegram (see the module's docs for the order).
async fn take(State(front): State<Arc<Front>>, headers: HeaderMap, body: Body) -> Response {
    if front.stopped.is_stopped() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if let Err(status) = front.check_secret(&headers) {
        front
            .counters
            .refused_secret
            .fetch_add(1, Ordering::Relaxed);
        return status.into_response();
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = match declared {
        Some(n) if n > BODY_LIMIT_BYTES as u64 => None,
        _ => axum::body::to_bytes(body, BODY_LIMIT_BYTES).await.ok(),
    };
    let Some(body) = body else {
        front.counters.too_large.fetch_add(1, Ordering::Relaxed);
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let update = match serde_json::from_slice::<Update>(&body) {
        Ok(update) => update,
        Err(e) => {
            front.counters.unreadable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, bytes = body.len(), "webhook: a body that is no update; dropped");
            return StatusCode::OK.into_response();
        }
    };
    match front.queue.try_send(update) {
        Ok(()) => {
            front.counters.queued.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK.into_response()
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            front.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response()
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

impl Front {
    /// The secret header: missing or wrong 401, malformed 400.
    fn check_secret(&self, headers: &HeaderMap) -> Result<(), StatusCode> {
        let Some(given) = headers.get(SECRET_HEADER) else {
            return Err(StatusCode::UNAUTHORIZED);
        };
        let given = given.as_bytes();
        if !secret_shaped(given) {
            return Err(StatusCode::BAD_REQUEST);
        }
        if self.secret.matches(given) {
            Ok(())
        } else {
            Err(StatusCode::UNAUTHORIZED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_matches_itself_only_whatever_the_lengths() {
        let s = Secret::new("s3cret_Hook-token");
        assert!(s.matches(b"s3cret_Hook-token"));
        for other in [
            &b"s3cret_Hook-toke"[..],
            b"s3cret_Hook-tokenX",
            b"s3cret_Hook-tokeN",
            b"",
            &[b'a'; 257],
        ] {
            assert!(!s.matches(other), "{other:?}");
        }
        // Padding is not a way in: a secret and its zero-padded self differ.
        let mut zeros = b"s3cret_Hook-token".to_vec();
        zeros.push(0);
        assert!(!s.matches(&zeros));
        let full = "x".repeat(SECRET_MAX);
        assert!(Secret::new(&full).matches(full.as_bytes()));
    }

    #[test]
    fn only_headers_of_telegrams_shape_are_compared() {
        assert!(secret_shaped(b"aZ09_-"));
        for bad in [&b""[..], b"with space", b"a:b", &[b'x'; 257]] {
            assert!(!secret_shaped(bad), "{bad:?}");
        }
    }
}
