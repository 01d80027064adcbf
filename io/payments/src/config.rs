//! What payments need to know: where to read the chain, where subscribers
//! pay, and what each plan costs. Embedded in the bot's TOML settings as
//! `[payments]`, checked once at start by [`PaymentsConfig::check`].
//!
//! Prices are decimal text ("0.25"), not TOML floats: a float cannot hold
//! most decimal fractions, and a price that is off by one lamport makes an
//! exact payment look short. They are converted to lamports exactly.

use std::time::Duration;

use callwatch_common::secret::SecretUrl;
use serde::{Deserialize, Serialize};

use super::PaymentError;

/// Lamports in one SOL.
pub const LAMPORTS_PER_SOL: u64 = 1_000_000_000;
/// A SOL amount has at most this many decimals (one lamport).
const SOL_DECIMALS: usize = 9;
/// `getSignaturesForAddress` answers at most this many per request.
pub const MAX_SIGNATURES_PER_PAGE: usize = 1_000;
/// The depth at which the cluster finalizes a block: a shorter finality
/// timeout would drop transactions on their normal way to finality.
const MIN_FINALITY_TIMEOUT_SLOTS: u64 = 32;

/// One plan a chat can buy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Its name, as shown and as recorded with the subscription ("month").
    pub name: String,
    /// How long it runs, from the current expiry when renewed.
    pub days: u32,
    /// Its price, decimal SOL text with at most 9 decimals ("0.8").
    pub price_sol: String,
}

impl Plan {
    /// The price in lamports.
    pub fn lamports(&self) -> Result<u64, PaymentError> {
        sol_to_lamports(&self.price_sol).map_err(|why| {
            PaymentError::Config(format!(
                "plan `{}`: price_sol `{}` {why}",
                self.name, self.price_sol
            ))
        })
    }
}

/// Payments' settings. Every field has a default; `receiving_address` must
/// be set for [`check`](PaymentsConfig::check) to pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// The Solana JSON-RPC endpoint. It may carry an API key (in its path
    /// or query), so it is never printed unmasked. Default
    /// `https://api.mainnet-beta.solana.com`.
    pub rpc_url: SecretUrl,
    /// Where subscribers pay: a base58 32-byte public key. Default empty
    /// (which `check` refuses).
    pub receiving_address: String,
    /// What can be bought. Default: `week` (7 days, 0.25 SOL) and `month`
    /// (30 days, 0.8 SOL).
    pub plans: Vec<Plan>,
    /// How long a quoted price and its reference are valid. Default 1,800
    /// (30 minutes).
    pub quote_valid_secs: u64,
    /// How far under the quote a payment may fall and still count: a wallet
    /// that pays the fee out of the amount. Default 5,000 (0.000005 SOL, one
    /// signature's fee).
    pub tolerance_lamports: u64,
    /// An unmatched payment that brought less than this is kept for an
    /// admin (`/unmatched`) but told to nobody, so that a stream of dust
    /// transfers to the receiving address cannot spam the admins.
    /// Default 1,000,000 (0.001 SOL).
    pub dust_lamports: u64,
    /// How often the watcher asks for new transactions. Default 10,000.
    pub poll_interval_ms: u64,
    /// The limit on one RPC request, connecting included. Default 10,000.
    pub rpc_timeout_ms: u64,
    /// Retries of one RPC request that failed in a way worth retrying
    /// (transport, timeout, 5xx, 429, JSON-RPC error). Default 3.
    pub rpc_retries: u32,
    /// The first wait before a retry; it doubles up to `retry_max_ms`. A
    /// `Retry-After` from the server is honoured up to `retry_max_ms`.
    /// Default 500.
    pub retry_min_ms: u64,
    /// The longest wait between retries, also between failed polls.
    /// Default 30,000.
    pub retry_max_ms: u64,
    /// Signatures asked for per `getSignaturesForAddress`, 1 to 1,000 (some
    /// providers allow fewer). Default 1,000.
    pub signatures_per_page: usize,
    /// How far the cluster's finalized slot may pass a listed transaction's
    /// slot while `getTransaction` at `finalized` still answers nothing.
    /// Past it the transaction never finalizes (its block was on a fork the
    /// cluster dropped, or the node pruned it from its history): it is
    /// recorded as dropped, the admins are told, and the cursor moves past
    /// it. Measured on the chain's own clock, in slots, at least 32.
    /// Default 750 (about 5 minutes of 400 ms slots).
    pub finality_timeout_slots: u64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        let plan = |name: &str, days, price: &str| Plan {
            name: name.to_owned(),
            days,
            price_sol: price.to_owned(),
        };
        PaymentsConfig {
            rpc_url: SecretUrl::new("https://api.mainnet-beta.solana.com"),
            receiving_address: String::new(),
            plans: vec![plan("week", 7, "0.25"), plan("month", 30, "0.8")],
            quote_valid_secs: 30 * 60,
            tolerance_lamports: 5_000,
            dust_lamports: 1_000_000,
            poll_interval_ms: 10_000,
            rpc_timeout_ms: 10_000,
            rpc_retries: 3,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
            signatures_per_page: MAX_SIGNATURES_PER_PAGE,
            finality_timeout_slots: 750,
        }
    }
}

impl PaymentsConfig {
    /// Every problem with the settings, in one error; `Ok` if none.
    pub fn check(&self) -> Result<(), PaymentError> {
        let mut problems = Vec::new();
        match url::Url::parse(self.rpc_url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            // Not the URL itself: it may hold an API key.
            _ => problems.push("rpc_url must be an http or https URL".to_owned()),
        }
        if let Err(why) = check_pubkey(&self.receiving_address) {
            problems.push(format!("receiving_address {why}"));
        }
        if self.plans.is_empty() {
            problems.push("plans: at least one plan is needed".to_owned());
        }
        for (i, plan) in self.plans.iter().enumerate() {
            if plan.name.trim().is_empty() {
                problems.push(format!("plans[{i}]: the name is empty"));
            } else if self.plans[..i].iter().any(|p| p.name == plan.name) {
                problems.push(format!("plans: `{}` is named twice", plan.name));
            }
            if !(1..=3_650).contains(&plan.days) {
                problems.push(format!("plan `{}`: days must be 1 to 3,650", plan.name));
            }
            match plan.lamports() {
                Err(e) => problems.push(e.to_string()),
                Ok(lamports) if lamports <= self.tolerance_lamports => problems.push(format!(
                    "plan `{}`: the price must be more than the tolerance ({} lamports)",
                    plan.name, self.tolerance_lamports
                )),
                Ok(_) => {}
            }
        }
        for (name, value) in [
            ("quote_valid_secs", self.quote_valid_secs),
            ("poll_interval_ms", self.poll_interval_ms),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("retry_min_ms", self.retry_min_ms),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be positive"));
            }
        }
        if self.retry_max_ms < self.retry_min_ms {
            problems.push("retry_max_ms must be at least retry_min_ms".to_owned());
        }
        if !(1..=MAX_SIGNATURES_PER_PAGE).contains(&self.signatures_per_page) {
            problems.push("signatures_per_page must be 1 to 1,000".to_owned());
        }
        if self.finality_timeout_slots < MIN_FINALITY_TIMEOUT_SLOTS {
            problems.push(format!(
                "finality_timeout_slots must be at least {MIN_FINALITY_TIMEOUT_SLOTS}"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PaymentError::Config(problems.join("; ")))
        }
    }

    /// The plan named `name`.
    pub fn plan(&self, name: &str) -> Result<&Plan, PaymentError> {
        self.plans
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| PaymentError::UnknownPlan(name.to_owned()))
    }

    pub fn quote_valid(&self) -> Duration {
        Duration::from_secs(self.quote_valid_secs)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }

    pub fn retry_min(&self) -> Duration {
        Duration::from_millis(self.retry_min_ms)
    }

    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
}

/// Whether `text` is a base58 32-byte public key; why not if it is not.
pub(crate) fn check_pubkey(text: &str) -> Result<(), String> {
    match bs58::decode(text).into_vec() {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        Ok(bytes) => Err(format!(
            "is {} bytes, not a 32-byte public key",
            bytes.len()
        )),
        Err(_) => Err("is not base58".to_owned()),
    }
}

/// Decimal SOL text ("0.25", "1", "1.000000001") to lamports, exactly;
/// why not, if it is not such text.
pub fn sol_to_lamports(text: &str) -> Result<u64, String> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
        return Err("is not a decimal number like 0.25".to_owned());
    }
    if fraction.len() > SOL_DECIMALS {
        return Err("has more than 9 decimals (finer than a lamport)".to_owned());
    }
    let too_big = || "is too large".to_owned();
    let whole: u64 = whole.parse().map_err(|_| too_big())?;
    let mut frac: u64 = 0;
    for b in fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(SOL_DECIMALS)
    {
        frac = frac * 10 + u64::from(b - b'0');
    }
    whole
        .checked_mul(LAMPORTS_PER_SOL)
        .and_then(|l| l.checked_add(frac))
        .ok_or_else(too_big)
}

/// Lamports as decimal SOL text, without trailing zeros ("0.25", "1").
pub fn lamports_to_sol(lamports: u64) -> String {
    let whole = lamports / LAMPORTS_PER_SOL;
    let frac = lamports % LAMPORTS_PER_SOL;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sol_text_converts_exactly_both_ways() {
        for (text, lamports) in [
            ("0.25", 250_000_000),
            ("0.8", 800_000_000),
            ("1", LAMPORTS_PER_SOL),
            ("0.000005", 5_000),
            ("1.000000001", 1_000_000_001),
            ("18446744073.709551615", u64::MAX),
        ] {
            assert_eq!(sol_to_lamports(text), Ok(lamports), "{text}");
            assert_eq!(lamports_to_sol(lamports), text);
        }
        assert_eq!(sol_to_lamports("00.50"), Ok(500_000_000));
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e9",
            "0,5",
            " 1",
            "0.1234567891",
            "18446744074",
        ] {
            assert!(sol_to_lamports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_defaults_pass_once_an_address_is_set() {
        let mut config = PaymentsConfig::default();
        assert!(config.check().is_err(), "no receiving address");
        config.receiving_address = bs58::encode([7u8; 32]).into_string();
        config.check().unwrap();
        assert_eq!(
            config.plan("month").unwrap().lamports().unwrap(),
            800_000_000
        );
        assert_eq!(config.plan("week").unwrap().days, 7);
    }

    #[test]
    fn bad_settings_are_each_named() {
        let config = PaymentsConfig {
            rpc_url: "ftp://x".into(),
            receiving_address: bs58::encode([7u8; 31]).into_string(),
            plans: vec![
                Plan {
                    name: "a".to_owned(),
                    days: 0,
                    price_sol: "0.1.2".to_owned(),
                },
                Plan {
                    name: "a".to_owned(),
                    days: 1,
                    price_sol: "0.000001".to_owned(),
                },
            ],
            signatures_per_page: 0,
            finality_timeout_slots: 31,
            ..PaymentsConfig::default()
        };
        let err = config.check().unwrap_err().to_string();
        for expected in [
            "rpc_url",
            "receiving_address is 31 bytes",
            "days must be 1 to 3,650",
            "`0.1.2` is not a decimal number",
            "`a` is named twice",
            "more than the tolerance",
            "signatures_per_page",
            "finality_timeout_slots must be at least 32",
        ] {
            assert!(err.contains(expected), "{expected} in {err}");
        }
    }

    #[test]
    fn missing_fields_take_their_defaults() {
        let config: PaymentsConfig = serde_json::from_value(serde_json::json!({
            "receiving_address": "x",
            "plans": [{"name": "day", "days": 1, "price_sol": "0.05"}],
        }))
        .unwrap();
        assert_eq!(config.plans[0].lamports().unwrap(), 50_000_000);
        assert_eq!(config.quote_valid_secs, 1_800);
    }
}
