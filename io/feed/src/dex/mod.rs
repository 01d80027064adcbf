//! The DEX data APIs callwatch asks for a token's value: DexScreener first,
//! GeckoTerminal for what DexScreener does not know or while it is down.
//! Each client asks about up to 30 addresses of one network per request
//! and says, per token, its value or why there is none.

pub mod dexscreener;
pub mod geckoterminal;

use std::time::Duration;

use engine::token::Token;

/// A token's value, or why there is none.
pub type Valued = (Token, Result<f64, String>);

/// Why a request got no answer worth reading.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// 429: wait, for as long as the server says if it says.
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    #[error("HTTP {0}")]
    Status(u16),
    #[error("no answer: {0}")]
    Transport(String),
    #[error("unreadable answer: {0}")]
    Body(String),
}

impl SourceError {
    /// Whether waiting and asking again may cure it.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::RateLimited { .. } | SourceError::Transport(_) => true,
            SourceError::Status(s) => *s >= 500 || *s == 408,
            SourceError::Body(_) => false,
        }
    }
}

/// A value that callwatch takes: finite and above zero.
pub fn checked_value(v: Option<f64>, what: &str) -> Result<f64, String> {
    match v {
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => Err(format!("{what} is {v}, not a finite number above zero")),
        None => Err(format!("no {what}")),
    }
}

/// A number the APIs give as a JSON number or a string of one.
pub(crate) fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The request's outcome from a response: the body for 200, the error
/// otherwise (a 429's `Retry-After` in seconds kept).
pub(crate) async fn body_of(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<bytes::Bytes, SourceError> {
    let response = response.map_err(|e| SourceError::Transport(e.without_url().to_string()))?;
    let status = response.status();
    if status.as_u16() == 429 {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        return Err(SourceError::RateLimited { retry_after });
    }
    if !status.is_success() {
        return Err(SourceError::Status(status.as_u16()));
    }
    response
        .bytes()
        .await
        .map_err(|e| SourceError::Transport(e.without_url().to_string()))
}

/// The address text an API wants for `token` on `network`.
pub(crate) fn address(token: &Token) -> String {
    token.to_string()
}

/// Whether an API's address text names `token` (EVM in any case).
pub(crate) fn same_address(text: &str, token: &Token) -> bool {
    Token::parse(text.trim()).is_ok_and(|t| t == *token)
}
