//! The `[sources]` section of the service's settings: which inputs
//! callwatch reads itself, and how.

use serde::{Deserialize, Serialize};

use callwatch_sources::extract::ExtractConfig;
use callwatch_sources::schedule::ScheduleConfig;

/// Which inputs callwatch reads itself, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedConfig {
    /// Read calls from channel posts (the bot's channels and groups, and
    /// the raw-posts stream) [default: true].
    pub calls: bool,
    /// Poll prices for tracked tokens [default: true].
    pub prices: bool,
    /// The consumer group on the raw-posts stream, shared by every process
    /// that reads posts [default: `callwatch-posts`].
    pub group: String,
    /// This process's consumer name there, the same across restarts
    /// [default: `feed-1`].
    pub consumer: String,
    /// How long a call waits for its value (the price sources down, or not
    /// knowing the token yet) before it is set aside in the dead-letter
    /// stream with the reason [default: 600].
    pub call_value_wait_secs: u64,
    /// A post dated more than this after it reached the stream is set
    /// aside: its date is not to be trusted [default: 300].
    pub max_future_skew_secs: u64,
    /// The network of an EVM address with no link naming one, and the
    /// addresses that are never a call.
    pub extract: ExtractConfig,
    /// How the price budget is spent.
    pub schedule: ScheduleConfig,
    pub dexscreener: ApiConfig<DexScreenerApi>,
    pub geckoterminal: ApiConfig<GeckoTerminalApi>,
}

/// What differs between the DEX data APIs' settings: their defaults.
pub trait Api: Default + std::fmt::Debug + Clone + PartialEq {
    /// The section's name, for messages.
    const NAME: &'static str;
    const URL: &'static str;
    const REQUESTS_PER_MINUTE: u32;
}

/// DexScreener: 300 requests a minute on its public API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DexScreenerApi;

impl Api for DexScreenerApi {
    const NAME: &'static str = "dexscreener";
    const URL: &'static str = "https://api.dexscreener.com";
    const REQUESTS_PER_MINUTE: u32 = 300;
}

/// GeckoTerminal: 30 requests a minute on its free tier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeckoTerminalApi;

impl Api for GeckoTerminalApi {
    const NAME: &'static str = "geckoterminal";
    const URL: &'static str = "https://api.geckoterminal.com";
    const REQUESTS_PER_MINUTE: u32 = 30;
}

/// One DEX data API. A section that sets only some keys takes that API's
/// own defaults for the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, bound = "")]
pub struct ApiConfig<A: Api> {
    /// Ask it at all [default: true].
    pub enabled: bool,
    /// Its base URL [default: the API's public one].
    pub url: String,
    /// Requests a minute this process may send; give each process its
    /// share of the API's limit [default: DexScreener 300, GeckoTerminal
    /// 30].
    pub requests_per_minute: u32,
    /// Giving up on one request [default: 10000].
    pub timeout_ms: u64,
    #[serde(skip)]
    api: std::marker::PhantomData<A>,
}

impl<A: Api> Default for ApiConfig<A> {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            url: A::URL.to_owned(),
            requests_per_minute: A::REQUESTS_PER_MINUTE,
            timeout_ms: 10_000,
            api: std::marker::PhantomData,
        }
    }
}

impl<A: Api> ApiConfig<A> {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    fn problems(&self) -> Vec<String> {
        let name = A::NAME;
        let mut problems = Vec::new();
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            problems.push(format!("sources.{name}.url must be an http(s) URL"));
        }
        if self.requests_per_minute == 0 || self.timeout_ms == 0 {
            problems.push(format!(
                "sources.{name}.requests_per_minute and timeout_ms must be positive"
            ));
        }
        problems
    }
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            calls: true,
            prices: true,
            group: "callwatch-posts".to_owned(),
            consumer: "feed-1".to_owned(),
            call_value_wait_secs: 600,
            max_future_skew_secs: 300,
            extract: ExtractConfig::default(),
            schedule: ScheduleConfig::default(),
            dexscreener: ApiConfig::default(),
            geckoterminal: ApiConfig::default(),
        }
    }
}

impl FeedConfig {
    /// Whether any source runs.
    pub fn any(&self) -> bool {
        self.calls || self.prices
    }

    /// What is wrong with it, each problem named.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.group.is_empty() || self.consumer.is_empty() {
            problems.push("sources.group and sources.consumer must be named".to_owned());
        }
        if self.call_value_wait_secs == 0 {
            problems.push("sources.call_value_wait_secs must be positive".to_owned());
        }
        if let Err(e) = callwatch_sources::extract::Extractor::new(&self.extract) {
            problems.push(format!("sources.extract: {e}"));
        }
        problems.extend(
            self.schedule
                .problems()
                .into_iter()
                .map(|p| format!("sources.schedule: {p}")),
        );
        problems.extend(self.dexscreener.problems());
        problems.extend(self.geckoterminal.problems());
        if self.any() && !self.dexscreener.enabled && !self.geckoterminal.enabled {
            problems.push(
                "sources need a price source: enable sources.dexscreener or sources.geckoterminal"
                    .to_owned(),
            );
        }
        problems
    }

    pub fn call_value_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.call_value_wait_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_api_section_takes_that_apis_defaults() {
        let c: FeedConfig = toml::from_str("[geckoterminal]\ntimeout_ms = 5\n").unwrap();
        assert_eq!(c.geckoterminal.url, "https://api.geckoterminal.com");
        assert_eq!(c.geckoterminal.requests_per_minute, 30);
        assert_eq!(c.geckoterminal.timeout_ms, 5);
        assert_eq!(c.dexscreener.requests_per_minute, 300);
        assert!(c.problems().is_empty());
        let off: FeedConfig =
            toml::from_str("[dexscreener]\nenabled = false\n[geckoterminal]\nenabled = false\n")
                .unwrap();
        assert!(off.problems()[0].contains("need a price source"));
    }
}
