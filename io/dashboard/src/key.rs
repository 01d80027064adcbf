//! The key links are signed with: `dashboard.secret` when the settings
//! name one; otherwise one made at first start and kept in Redis.
//!
//! Made, not refused: a deployment gets working links without a step of
//! its own, and every process on the same Redis (the one that answers
//! `/dashboard` and any that serves the pages) reads the same key. The
//! first start writes 32 random bytes with `SET NX`, so two processes
//! starting at once agree on the one that landed; later starts read it.
//! It has no TTL: losing it (a Redis flushed) only voids the links given,
//! which expire within a day anyway.

use callwatch_common::keys::dashboard_key_key;
use callwatch_streams::Conn;

use crate::config::DashboardConfig;

/// Random bytes in a made key.
const MADE_KEY_BYTES: usize = 32;

/// Why there is no key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the dashboard's key in Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no randomness for the dashboard's key: {0}")]
    Random(getrandom::Error),
    #[error("the dashboard's key in Redis ({0}) is not one callwatch made")]
    Damaged(String),
}

/// Where the key came from, for the start's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Settings,
    /// Made by this start and kept in Redis.
    Made,
    /// Made by an earlier start, read from Redis.
    Kept,
}

/// The signing key and where it came from.
pub async fn signing_key(
    config: &DashboardConfig,
    con: &mut Conn,
    prefix: &str,
) -> Result<(Vec<u8>, Origin), KeyError> {
    if !config.secret.is_empty() {
        return Ok((config.secret.expose().as_bytes().to_vec(), Origin::Settings));
    }
    let key = dashboard_key_key(prefix);
    let mut made = [0u8; MADE_KEY_BYTES];
    getrandom::fill(&mut made).map_err(KeyError::Random)?;
    let made = hex(&made);
    let (set, kept): (Option<String>, String) = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(&made)
        .arg("NX")
        .cmd("GET")
        .arg(&key)
        .query_async(con)
        .await?;
    if kept.len() != 2 * MADE_KEY_BYTES || !kept.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Damaged(key));
    }
    let origin = if set.is_some() && kept == made {
        Origin::Made
    } else {
        Origin::Kept
    };
    Ok((kept.into_bytes(), origin))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
