//! The web dashboard in the service: its signing key, the links the bot's
//! `/dashboard` hands out, and its pages' [`Source`], which asks what the
//! commands ask: the engine's tracked entries as `/tracked` does, the
//! leaderboard through the same [`EngineAsk`] and window end as `/top`,
//! the readiness `/readyz` shows; and for sparklines, the price histories
//! the alerts' charts keep ([`Charts`]), when charts are on.

use std::sync::Arc;

use anyhow::Context;
use callwatch_common::clock;
use callwatch_dashboard::key::{Origin, signing_key};
use callwatch_dashboard::routes::Dashboard;
use callwatch_dashboard::{Health, Links, Signer, Source, Unavailable, router};
use callwatch_streams::Conn;
use callwatch_telegram::commands::BackendError;
use callwatch_telegram::format::Links as ChartLinks;
use callwatch_telegram::names::{ChannelNames, NamesConfig};
use engine::board::ChannelScore;
use engine::event::{ChannelId, ChatId};
use engine::shard::Holding;
use engine::time::Nanos;
use engine::token::Token;

use crate::charts::Charts;
use crate::commands::{EngineAsk, board_end};
use crate::metrics::Live;
use crate::ops::Report;
use crate::settings::Settings;

/// The dashboard, started: the links for `/dashboard` and the pages'
/// routes for the HTTP server.
#[derive(Debug)]
pub struct DashboardParts {
    pub links: Links,
    pub routes: axum::Router,
}

/// The dashboard when `dashboard.base_url` is set: its key (the settings'
/// or the one kept in Redis), links and routes.
pub async fn start(
    settings: &Settings,
    engine: Arc<EngineAsk>,
    charts: Option<Arc<Charts>>,
    live: Arc<Live>,
) -> anyhow::Result<Option<DashboardParts>> {
    let config = &settings.dashboard;
    if !config.enabled() {
        return Ok(None);
    }
    let prefix = &settings.redis.key_prefix;
    let mut redis = settings.redis.connect().context("redis.url")?;
    let (key, origin) = signing_key(config, &mut redis, prefix)
        .await
        .context("the dashboard's signing key")?;
    match origin {
        Origin::Settings => tracing::info!("dashboard links signed with dashboard.secret"),
        Origin::Made => tracing::info!("dashboard links signed with a key made now, kept in Redis"),
        Origin::Kept => tracing::info!("dashboard links signed with the key kept in Redis"),
    }
    let signer = Signer::new(&key);
    let names = Arc::new(ChannelNames::new(NamesConfig::under(prefix), redis.clone()));
    let source = ServiceSource {
        engine,
        charts,
        redis,
        names,
        live,
    };
    let routes = router(Dashboard {
        source,
        signer: signer.clone(),
        base: config.base_url.clone(),
        charts: ChartLinks::default(),
    });
    tracing::info!(base_url = %config.base_url, "dashboard on");
    Ok(Some(DashboardParts {
        links: Links::new(&config.base_url, signer, config.link_ttl_secs),
        routes,
    }))
}

/// The pages' data, from the running service.
#[derive(Debug)]
struct ServiceSource {
    engine: Arc<EngineAsk>,
    charts: Option<Arc<Charts>>,
    redis: Conn,
    names: Arc<ChannelNames>,
    live: Arc<Live>,
}

fn unavailable(e: BackendError) -> Unavailable {
    Unavailable(e.to_string())
}

impl Source for ServiceSource {
    async fn tracked(&self, chat_id: ChatId) -> Result<Vec<Holding>, Unavailable> {
        self.engine.tracked(chat_id).await.map_err(unavailable)
    }

    async fn leaderboard(
        &self,
        window: Nanos,
        min_calls: u32,
        limit: usize,
    ) -> Result<Vec<ChannelScore>, Unavailable> {
        let end = board_end(&self.redis, clock::now()).await;
        self.engine
            .leaderboard(end, window, min_calls, limit)
            .await
            .map_err(unavailable)
    }

    async fn names(&self, ids: &[ChannelId]) -> Vec<Option<String>> {
        self.names.resolve_owned(ids).await
    }

    fn history(&self, token: &Token, since: Nanos) -> Option<Vec<f64>> {
        self.charts.as_ref()?.values_since(token, since)
    }

    fn health(&self) -> Health {
        let r = self.live.readiness();
        Health {
            ready: r.ready,
            detail: r.detail,
        }
    }

    fn now(&self) -> Nanos {
        clock::now()
    }
}
