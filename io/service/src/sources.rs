//! The sources inside `serve`: the feed (channel posts to calls, prices of
//! tracked tokens), every call the service keeps recorded for the price
//! scheduler (calls from any producer, not only the feed's), and the
//! engine's tokens near a crossing exported for it every half minute.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callwatch_common::keys::source_near_key;
use callwatch_feed::Feed;
use callwatch_feed::feed::record_call;
use callwatch_feed::metrics::FeedCounters;
use callwatch_sources::extract::Found;
use callwatch_sources::network::Network;
use callwatch_streams::Conn;
use engine::EngineConfig;
use engine::token::Chain;
use tokio::sync::{mpsc, oneshot, watch};

use crate::keeper::Call;
use crate::reader::EngineQuery;
use crate::settings::Settings;

/// Calls waiting to be recorded, at most; past it they are dropped and
/// counted (the scheduler then learns the token at its next call).
const CALLS_DEPTH: usize = 10_000;
/// How often the engine is asked for its tokens near a crossing.
const NEAR_EVERY: Duration = Duration::from_secs(30);
/// How long an export of near tokens stands if no newer one replaces it.
const NEAR_TTL_SECS: u64 = 120;

/// The sources' handles in the service.
#[derive(Debug)]
pub struct Sources {
    /// Where the keeper records every call it keeps.
    pub calls: mpsc::Sender<Call>,
    pub counters: Arc<FeedCounters>,
    pub feed: tokio::task::JoinHandle<Result<(), callwatch_feed::FeedError>>,
}

/// Starts the sources `settings` configure (none: `None`); call inside
/// the runtime.
pub fn start(
    settings: &Settings,
    engine: &EngineConfig,
    queries: mpsc::Sender<EngineQuery>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<Sources>> {
    let config = &settings.sources;
    if !config.any() {
        return Ok(None);
    }
    let prefix = &settings.redis.key_prefix;
    let con = settings.redis.connect()?;
    let feed = Feed::new(
        config.clone(),
        prefix,
        settings.ingest.partitions,
        engine.ttl_nanos,
        con.clone(),
    )
    .context("sources")?;
    let counters = feed.counters();
    let feed = tokio::spawn(feed.run(stop.clone()));
    let (calls, recorded) = mpsc::channel(CALLS_DEPTH);
    let default_evm = config.extract.default_evm_network;
    tokio::spawn(record_calls(
        recorded,
        con.clone(),
        prefix.clone(),
        default_evm,
    ));
    if config.prices {
        let share = config.schedule.near_threshold;
        tokio::spawn(export_near(
            queries,
            con,
            prefix.clone(),
            share,
            stop.clone(),
        ));
    }
    Ok(Some(Sources {
        calls,
        counters,
        feed,
    }))
}

/// Appends every call kept to `sources:calls`, where each process's
/// scheduler learns its tokens. An EVM token's network is the configured
/// default here; the feed records its own calls with the network their
/// link named, first.
async fn record_calls(
    mut calls: mpsc::Receiver<Call>,
    mut con: Conn,
    prefix: String,
    default_evm: Network,
) {
    while let Some(call) = calls.recv().await {
        let network = match call.token.chain() {
            Chain::Solana => Network::Solana,
            Chain::Evm => default_evm,
        };
        let found = Found {
            token: call.token,
            network,
        };
        if let Err(e) = record_call(&mut con, &prefix, found, call.at).await {
            tracing::warn!(error = %e, "a call was not recorded for the price sources");
        }
    }
}

/// Every half minute, the engine's tokens valued at least `share` of their
/// next crossing, into `sources:near` (replacing the last export).
async fn export_near(
    queries: mpsc::Sender<EngineQuery>,
    mut con: Conn,
    prefix: String,
    share: f64,
    mut stop: watch::Receiver<bool>,
) {
    let key = source_near_key(&prefix);
    loop {
        let (reply, answer) = oneshot::channel();
        if queries
            .send(EngineQuery::Near { share, reply })
            .await
            .is_err()
        {
            return;
        }
        if let Ok(Ok(near)) = tokio::time::timeout(Duration::from_secs(10), answer).await {
            let mut pipe = redis::pipe();
            pipe.atomic().del(&key).ignore();
            for n in &near {
                pipe.hset(&key, n.token.to_string(), n.next_cross).ignore();
            }
            pipe.expire(&key, NEAR_TTL_SECS as i64).ignore();
            if let Err(e) = pipe.query_async::<()>(&mut con).await {
                tracing::warn!(error = %e, "near-crossing tokens not exported");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(NEAR_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
