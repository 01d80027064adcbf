//! DexScreener's public API: `GET /tokens/v1/{chainId}/{addresses}`, up to
//! 30 addresses a request, 300 requests a minute. The answer lists pairs;
//! a token's value is the `fdv` (else `marketCap`) of the pair with the
//! most liquidity in USD among those that trade it as their base token.

use std::time::Duration;

use callwatch_sources::network::Network;
use engine::token::Token;
use serde::Deserialize;

use super::{SourceError, Valued, address, body_of, checked_value, number, same_address};

/// Addresses one request may name.
pub const MAX_ADDRESSES: usize = 30;

/// A DexScreener client.
#[derive(Debug, Clone)]
pub struct DexScreener {
    http: reqwest::Client,
    base_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pair {
    base_token: Side,
    #[serde(default)]
    liquidity: Option<Liquidity>,
    #[serde(default)]
    fdv: Option<serde_json::Value>,
    #[serde(default)]
    market_cap: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Side {
    address: String,
}

#[derive(Debug, Deserialize)]
struct Liquidity {
    #[serde(default)]
    usd: Option<serde_json::Value>,
}

impl DexScreener {
    /// A client of `base_url` (`https://api.dexscreener.com`), each request
    /// limited to `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<DexScreener, SourceError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| SourceError::Transport(e.to_string()))?;
        Ok(DexScreener {
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
            "{}/tokens/v1/{}/{}",
            self.base_url,
            network.dexscreener_id(),
            list.join(",")
        );
        let body = body_of(self.http.get(url).send().await).await?;
        let pairs: Vec<Pair> =
            serde_json::from_slice(&body).map_err(|e| SourceError::Body(e.to_string()))?;
        Ok(tokens.iter().map(|t| (*t, value_of(t, &pairs))).collect())
    }
}

/// `token`'s value from `pairs`: see the module's docs.
fn value_of(token: &Token, pairs: &[Pair]) -> Result<f64, String> {
    let liquidity = |p: &Pair| {
        p.liquidity
            .as_ref()
            .and_then(|l| l.usd.as_ref())
            .and_then(number)
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
    };
    let best = pairs
        .iter()
        .filter(|p| same_address(&p.base_token.address, token))
        .max_by(|a, b| liquidity(a).total_cmp(&liquidity(b)))
        .ok_or_else(|| "no pair on DexScreener".to_owned())?;
    checked_value(best.fdv.as_ref().and_then(number), "fdv").or_else(|fdv| {
        checked_value(best.market_cap.as_ref().and_then(number), "marketCap")
            .map_err(|cap| format!("DexScreener: {fdv}, and {cap}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUP: &str = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";

    fn pairs(json: &str) -> Vec<Pair> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_most_liquid_pair_gives_the_value_and_market_cap_stands_in_for_fdv() {
        let t: Token = JUP.parse().unwrap();
        let p = pairs(&format!(
            r#"[{{"baseToken":{{"address":"{JUP}"}},"liquidity":{{"usd":10}},"fdv":111}},
                {{"baseToken":{{"address":"{JUP}"}},"liquidity":{{"usd":5000}},"fdv":222,"marketCap":200}},
                {{"baseToken":{{"address":"So11111111111111111111111111111111111111112"}},"liquidity":{{"usd":99999}},"fdv":999}}]"#
        ));
        assert_eq!(value_of(&t, &p), Ok(222.0));
        let cap_only = pairs(&format!(
            r#"[{{"baseToken":{{"address":"{JUP}"}},"liquidity":{{"usd":1}},"fdv":0,"marketCap":"150.5"}}]"#
        ));
        assert_eq!(value_of(&t, &cap_only), Ok(150.5));
    }

    #[test]
    fn absent_zero_or_unknown_values_are_refused_with_a_reason() {
        let t: Token = JUP.parse().unwrap();
        assert_eq!(value_of(&t, &[]), Err("no pair on DexScreener".to_owned()));
        let none = pairs(&format!(r#"[{{"baseToken":{{"address":"{JUP}"}}}}]"#));
        let why = value_of(&t, &none).unwrap_err();
        assert!(
            why.contains("no fdv") && why.contains("no marketCap"),
            "{why}"
        );
        let zero = pairs(&format!(
            r#"[{{"baseToken":{{"address":"{JUP}"}},"fdv":0,"marketCap":-3}}]"#
        ));
        assert!(
            value_of(&t, &zero)
                .unwrap_err()
                .contains("not a finite number")
        );
    }
}
