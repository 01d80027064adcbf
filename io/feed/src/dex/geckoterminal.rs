//! GeckoTerminal's public API, the second source:
//! `GET /api/v2/networks/{network}/tokens/multi/{addresses}`, up to 30
//! addresses a request, its own limit (30 requests a minute on the free
//! tier). A token's value is its `fdv_usd`, else its `market_cap_usd`.

use std::time::Duration;

use callwatch_sources::network::Network;
use engine::token::Token;
use serde::Deserialize;

use super::{SourceError, Valued, address, body_of, checked_value, number, same_address};

/// Addresses one request may name.
pub const MAX_ADDRESSES: usize = 30;

/// A GeckoTerminal client.
#[derive(Debug, Clone)]
pub struct GeckoTerminal {
    http: reqwest::Client,
    base_url: String,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    data: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    attributes: Attributes,
}

#[derive(Debug, Deserialize)]
struct Attributes {
    address: String,
    #[serde(default)]
    fdv_usd: Option<serde_json::Value>,
    #[serde(default)]
    market_cap_usd: Option<serde_json::Value>,
}

impl GeckoTerminal {
    /// A client of `base_url` (`https://api.geckoterminal.com`), each
    /// request limited to `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<GeckoTerminal, SourceError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| SourceError::Transport(e.to_string()))?;
        Ok(GeckoTerminal {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The value of each of `tokens` (at most [`MAX_ADDRESSES`]) on
    /// `network`, or why there is none.
    pub async fn values(
        &self,
        network: Network,
        tokens: &[Token],
    ) -> Result<Vec<Valued>, SourceError> {
        assert!(
            tokens.len() <= MAX_ADDRESSES,
            "at most 30 addresses a request"
        );
        let list: Vec<String> = tokens.iter().map(address).collect();
        let url = format!(
            "{}/api/v2/networks/{}/tokens/multi/{}",
            self.base_url,
            network.geckoterminal_id(),
            list.join(",")
        );
        let request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json;version=20230302");
        let body = body_of(request.send().await).await?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| SourceError::Body(e.to_string()))?;
        Ok(tokens.iter().map(|t| (*t, value_of(t, &answer))).collect())
    }
}

fn value_of(token: &Token, answer: &Answer) -> Result<f64, String> {
    let a = &answer
        .data
        .iter()
        .find(|i| same_address(&i.attributes.address, token))
        .ok_or_else(|| "unknown to GeckoTerminal".to_owned())?
        .attributes;
    checked_value(a.fdv_usd.as_ref().and_then(number), "fdv_usd").or_else(|fdv| {
        checked_value(a.market_cap_usd.as_ref().and_then(number), "market_cap_usd")
            .map_err(|cap| format!("GeckoTerminal: {fdv}, and {cap}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdv_then_market_cap_then_a_reason() {
        let t: Token = "0x6982508145454ce325ddbe47a25d4ec3d2311933"
            .parse()
            .unwrap();
        let answer: Answer = serde_json::from_str(
            r#"{"data":[{"id":"eth_0x69","type":"token","attributes":{
                "address":"0x6982508145454Ce325dDbE47a25d4ec3d2311933",
                "fdv_usd":"4200000.5","market_cap_usd":null}}]}"#,
        )
        .unwrap();
        assert_eq!(value_of(&t, &answer), Ok(4_200_000.5));
        let cap: Answer = serde_json::from_str(
            r#"{"data":[{"attributes":{"address":"0x6982508145454ce325ddbe47a25d4ec3d2311933","fdv_usd":"NaN","market_cap_usd":"12"}}]}"#,
        )
        .unwrap();
        assert_eq!(value_of(&t, &cap), Ok(12.0));
        let empty: Answer = serde_json::from_str(r#"{"data":[]}"#).unwrap();
        assert_eq!(
            value_of(&t, &empty),
            Err("unknown to GeckoTerminal".to_owned())
        );
    }
}
