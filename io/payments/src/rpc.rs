//! The Solana JSON-RPC methods the watcher needs (a payment's signatures,
//! its transaction, and the finalized slot that tells a transaction that
//! will never finalize), over HTTP, with a limit on each request and
//! retries of the failures that pass.
//!
//! Public endpoints and paid providers alike answer 429 under load and drop
//! out now and then; a payment must survive both. So transport errors,
//! timeouts, 5xx, 429 and JSON-RPC errors (a node that is behind answers
//! one) are retried with doubling waits, honouring `Retry-After`; an answer
//! that cannot be parsed is not, since asking again would get the same.
//!
//! The endpoint URL may carry an API key, so errors are stripped of it.

use std::time::Duration;

use callwatch_common::backoff::Backoff;
use callwatch_common::secret::SecretUrl;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Why an RPC request failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Connecting, sending or reading failed, or took too long.
    #[error("RPC transport: {0}")]
    Transport(reqwest::Error),
    /// An HTTP status other than 200.
    #[error("RPC answered HTTP {status}")]
    Http {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// A JSON-RPC error object.
    #[error("RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
    /// An answer of the wrong shape.
    #[error("RPC answer not understood: {0}")]
    Parse(String),
}

impl RpcError {
    /// Whether asking again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            RpcError::Transport(_) | RpcError::Rpc { .. } => true,
            RpcError::Http { status, .. } => *status == 429 || *status >= 500,
            RpcError::Parse(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RpcError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// One entry of `getSignaturesForAddress`, newest first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureInfo {
    pub signature: String,
    pub slot: u64,
    /// The transaction's error; `None` if it succeeded.
    pub err: Option<Value>,
    pub memo: Option<String>,
    /// Unix seconds; `None` when the node does not know.
    pub block_time: Option<i64>,
    /// `processed`, `confirmed` or `finalized`.
    pub confirmation_status: Option<String>,
}

/// A transaction as `getTransaction` answers it with `encoding: json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    pub slot: u64,
    pub block_time: Option<i64>,
    pub meta: Option<Meta>,
    pub transaction: TransactionBody,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub err: Option<Value>,
    pub fee: u64,
    pub pre_balances: Vec<u64>,
    pub post_balances: Vec<u64>,
    /// Accounts a version 0 transaction loaded from lookup tables; they
    /// follow the message's own keys in the balance lists.
    #[serde(default)]
    pub loaded_addresses: Option<LoadedAddresses>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LoadedAddresses {
    pub writable: Vec<String>,
    pub readonly: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransactionBody {
    pub signatures: Vec<String>,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub account_keys: Vec<String>,
}

impl Transaction {
    /// Every account the transaction names, in the order of the balance
    /// lists: the message's keys, then those loaded from lookup tables.
    pub fn account_keys(&self) -> impl Iterator<Item = &str> {
        let loaded = self.meta.as_ref().and_then(|m| m.loaded_addresses.as_ref());
        self.transaction
            .message
            .account_keys
            .iter()
            .chain(loaded.into_iter().flat_map(|l| l.writable.iter()))
            .chain(loaded.into_iter().flat_map(|l| l.readonly.iter()))
            .map(String::as_str)
    }
}

/// Which part of an address's history one `getSignaturesForAddress`
/// request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignaturesQuery<'a> {
    /// At most this many, 1 to 1,000.
    pub limit: usize,
    /// Only those older than this signature.
    pub before: Option<&'a str>,
    /// Only those newer than this signature.
    pub until: Option<&'a str>,
    /// `confirmed` or `finalized`.
    pub commitment: &'a str,
}

/// A JSON-RPC client for one endpoint.
#[derive(Debug, Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    url: SecretUrl,
    retries: u32,
    backoff_min: Duration,
    backoff_max: Duration,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    result: Value,
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: i64,
    message: String,
}

impl RpcClient {
    /// A client of `url`: each request limited to `timeout`, retried up to
    /// `retries` times, with waits between tries that grow from
    /// `backoff_min` to `backoff_max` (or the server's `retry_after`).
    pub fn new(
        url: &str,
        timeout: Duration,
        retries: u32,
        (backoff_min, backoff_max): (Duration, Duration),
    ) -> Result<RpcClient, RpcError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| RpcError::Transport(e.without_url()))?;
        Ok(RpcClient {
            http,
            url: SecretUrl::new(url),
            retries,
            backoff_min,
            backoff_max,
        })
    }

    /// `getSignaturesForAddress`: the address's transactions, newest first.
    pub async fn signatures_for_address(
        &self,
        address: &str,
        query: &SignaturesQuery<'_>,
    ) -> Result<Vec<SignatureInfo>, RpcError> {
        let mut options = json!({"limit": query.limit, "commitment": query.commitment});
        if let Some(before) = query.before {
            options["before"] = json!(before);
        }
        if let Some(until) = query.until {
            options["until"] = json!(until);
        }
        self.call("getSignaturesForAddress", json!([address, options]))
            .await
    }

    /// `getTransaction` at `finalized`: `None` if the transaction is not
    /// (yet) finalized, or unknown to the node.
    pub async fn finalized_transaction(
        &self,
        signature: &str,
    ) -> Result<Option<Transaction>, RpcError> {
        let options = json!({
            "encoding": "json",
            "commitment": "finalized",
            "maxSupportedTransactionVersion": 0,
        });
        self.call("getTransaction", json!([signature, options]))
            .await
    }

    /// `getSlot` at `finalized`: the newest slot the cluster has finalized.
    pub async fn finalized_slot(&self) -> Result<u64, RpcError> {
        self.call("getSlot", json!([{"commitment": "finalized"}]))
            .await
    }

    /// One call, retried while its failure is retryable and tries remain.
    async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, RpcError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut backoff = Backoff::new(self.backoff_min, self.backoff_max);
        let mut tries = 0;
        loop {
            match self.call_once(&body).await {
                Err(e) if e.is_retryable() && tries < self.retries => {
                    tries += 1;
                    let step = backoff.next_delay();
                    // The server's `retry_after` when it gave one, capped.
                    let wait = e.retry_after().map_or(step, |r| r.min(self.backoff_max));
                    tracing::debug!(method, error = %e, ?wait, "Solana RPC: retrying");
                    tokio::time::sleep(wait).await;
                }
                answer => return answer,
            }
        }
    }

    async fn call_once<T: DeserializeOwned>(&self, body: &Value) -> Result<T, RpcError> {
        let transport = |e: reqwest::Error| RpcError::Transport(e.without_url());
        let response = self
            .http
            .post(self.url.expose())
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs);
            return Err(RpcError::Http {
                status: status.as_u16(),
                retry_after,
            });
        }
        let bytes = response.bytes().await.map_err(transport)?;
        parse_answer(&bytes)
    }
}

/// A JSON-RPC answer's result, or its error.
fn parse_answer<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    let answer: Answer =
        serde_json::from_slice(bytes).map_err(|e| RpcError::Parse(e.to_string()))?;
    if let Some(ErrorObject { code, message }) = answer.error {
        return Err(RpcError::Rpc { code, message });
    }
    serde_json::from_value(answer.result).map_err(|e| RpcError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_debug_shows_no_key() {
        let url = "https://user:pw@rpc.example/v2/KEY123?api-key=KEY456";
        let limits = (Duration::from_millis(1), Duration::from_millis(2));
        let client = RpcClient::new(url, Duration::from_secs(1), 0, limits).unwrap();
        let shown = format!("{client:?}");
        for secret in ["pw@", "KEY123", "KEY456"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn answers_are_parsed_and_errors_classified() {
        let none: Option<Transaction> =
            parse_answer(br#"{"jsonrpc":"2.0","result":null,"id":1}"#).unwrap();
        assert_eq!(none, None);
        let err = parse_answer::<Vec<SignatureInfo>>(
            br#"{"jsonrpc":"2.0","error":{"code":-32005,"message":"Node is behind"},"id":1}"#,
        )
        .unwrap_err();
        assert!(matches!(err, RpcError::Rpc { code: -32005, .. }), "{err}");
        assert!(err.is_retryable());
        let bad = parse_answer::<Vec<SignatureInfo>>(br#"{"result":[{"slot":"x"}]}"#).unwrap_err();
        assert!(matches!(bad, RpcError::Parse(_)) && !bad.is_retryable());
        let http = |status| RpcError::Http {
            status,
            retry_after: None,
        };
        assert!(http(429).is_retryable() && http(503).is_retryable());
        assert!(!http(401).is_retryable());
    }

    #[test]
    fn a_version_0_transaction_lists_its_loaded_accounts_after_its_own() {
        let tx: Transaction = serde_json::from_value(json!({
            "slot": 5, "blockTime": null,
            "meta": {"err": null, "fee": 5000, "preBalances": [1, 2, 3, 4],
                     "postBalances": [1, 2, 3, 4],
                     "loadedAddresses": {"writable": ["w"], "readonly": ["r"]}},
            "transaction": {"signatures": ["s"],
                            "message": {"accountKeys": ["a", "b"], "instructions": []}},
            "version": 0
        }))
        .unwrap();
        assert_eq!(tx.account_keys().collect::<Vec<_>>(), ["a", "b", "w", "r"]);
    }
}
