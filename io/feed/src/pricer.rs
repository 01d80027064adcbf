//! The price sources together, each within its budget: DexScreener first;
//! GeckoTerminal for the tokens DexScreener does not know, and for all of
//! them while DexScreener is down. A source that fails (429, 5xx, a
//! timeout) is paused for its `Retry-After` or a backoff with jitter, and
//! the other is asked meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use callwatch_common::backoff::Backoff;
use callwatch_sources::network::Network;
use engine::token::Token;
use tokio::time::Instant;

use crate::budget::Budget;
use crate::config::FeedConfig;
use crate::dex::dexscreener::DexScreener;
use crate::dex::geckoterminal::GeckoTerminal;
use crate::dex::{SourceError, Valued};

/// One API client.
#[derive(Debug, Clone)]
enum Client {
    DexScreener(DexScreener),
    GeckoTerminal(GeckoTerminal),
}

impl Client {
    async fn values(&self, network: Network, tokens: &[Token]) -> Result<Vec<Valued>, SourceError> {
        match self {
            Client::DexScreener(c) => c.values(network, tokens).await,
            Client::GeckoTerminal(c) => c.values(network, tokens).await,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Client::DexScreener(_) => "DexScreener",
            Client::GeckoTerminal(_) => "GeckoTerminal",
        }
    }
}

/// A source with its budget and its state.
#[derive(Debug)]
struct Source {
    client: Client,
    budget: Budget,
    backoff: Backoff,
    counters: Arc<SourceCounters>,
}

/// What one source did; read as metrics.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Requests in the last minute, and the budget: sampled at each request.
    pub used_last_minute: AtomicU64,
    pub limit_per_minute: AtomicU64,
}

impl Source {
    fn new(client: Client, per_minute: u32) -> Source {
        let counters = SourceCounters::default();
        counters
            .limit_per_minute
            .store(u64::from(per_minute), Ordering::Relaxed);
        Source {
            client,
            budget: Budget::per_minute(per_minute),
            // A dead source is tried again within half a minute at most.
            backoff: Backoff::new(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(30),
            ),
            counters: Arc::new(counters),
        }
    }

    /// Whether it can be asked within `patience` (not paused for longer).
    fn ready_within(&self, patience: std::time::Duration) -> bool {
        self.budget.next_at(Instant::now()) <= Instant::now() + patience
    }

    /// One request within the budget; a failure pauses the source.
    async fn ask(&mut self, network: Network, tokens: &[Token]) -> Result<Vec<Valued>, String> {
        self.budget.acquire().await;
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.used_last_minute
            .store(self.budget.used(Instant::now()) as u64, Ordering::Relaxed);
        match self.client.values(network, tokens).await {
            Ok(values) => {
                self.backoff.reset();
                Ok(values)
            }
            Err(e) => {
                c.failures.fetch_add(1, Ordering::Relaxed);
                let wait = match &e {
                    SourceError::RateLimited { retry_after } => {
                        c.rate_limited.fetch_add(1, Ordering::Relaxed);
                        let step = self.backoff.next_delay();
                        retry_after.unwrap_or(step)
                    }
                    _ => self.backoff.next_delay(),
                };
                self.budget.pause(Instant::now(), wait);
                tracing::warn!(source = self.client.name(), error = %e, ?wait, "price source failed; paused");
                Err(format!("{}: {e}", self.client.name()))
            }
        }
    }
}

/// The sources; see the module's docs.
#[derive(Debug)]
pub struct Pricer {
    sources: Vec<Source>,
}

/// How long a request waits for a source's budget before it goes to the
/// next source (a source paused longer is skipped).
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl Pricer {
    /// The sources `config` enables, in order.
    pub fn new(config: &FeedConfig) -> Result<Pricer, SourceError> {
        let mut sources = Vec::new();
        if config.dexscreener.enabled {
            let c = &config.dexscreener;
            let client = DexScreener::new(&c.url, c.timeout())?;
            sources.push(Source::new(
                Client::DexScreener(client),
                c.requests_per_minute,
            ));
        }
        if config.geckoterminal.enabled {
            let c = &config.geckoterminal;
            let client = GeckoTerminal::new(&c.url, c.timeout())?;
            sources.push(Source::new(
                Client::GeckoTerminal(client),
                c.requests_per_minute,
            ));
        }
        Ok(Pricer { sources })
    }

    /// Each source's counters, by name.
    pub fn counters(&self) -> Vec<(&'static str, Arc<SourceCounters>)> {
        self.sources
            .iter()
            .map(|s| (s.client.name(), Arc::clone(&s.counters)))
            .collect()
    }

    /// Whether some source can be asked within a few seconds.
    pub fn ready(&self) -> bool {
        self.sources.iter().any(|s| s.ready_within(PATIENCE))
    }

    /// The value of each of `tokens` (one network, at most 30), or why
    /// there is none: each source in turn for what the ones before did not
    /// value.
    pub async fn values(&mut self, network: Network, tokens: &[Token]) -> Vec<Valued> {
        let mut out: Vec<Valued> = tokens
            .iter()
            .map(|t| (*t, Err("no price source could be asked".to_owned())))
            .collect();
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); tokens.len()];
        for source in &mut self.sources {
            let missing: Vec<usize> = (0..out.len()).filter(|&i| out[i].1.is_err()).collect();
            if missing.is_empty() {
                break;
            }
            if !source.ready_within(PATIENCE) {
                for &i in &missing {
                    reasons[i].push(format!("{} paused", source.client.name()));
                }
                continue;
            }
            let ask: Vec<Token> = missing.iter().map(|&i| tokens[i]).collect();
            match source.ask(network, &ask).await {
                Ok(values) => {
                    for (&i, (_, value)) in missing.iter().zip(values) {
                        match value {
                            Ok(v) => out[i].1 = Ok(v),
                            Err(why) => reasons[i].push(why),
                        }
                    }
                }
                Err(why) => missing.iter().for_each(|&i| reasons[i].push(why.clone())),
            }
        }
        for (i, (_, value)) in out.iter_mut().enumerate() {
            if value.is_err() && !reasons[i].is_empty() {
                *value = Err(reasons[i].join("; "));
            }
        }
        out
    }
}
