//! The dashboard's routes, each a signed link's page:
//!
//! | route | page |
//! | --- | --- |
//! | `GET /dashboard/{chat}?exp&sig` | the chat's tracked tokens |
//! | `GET /dashboard/{chat}/top?exp&sig[&period=1d\|3d\|7d][&min_calls=N]` | the channel leaderboard |
//! | `GET /dashboard/{chat}/health?exp&sig` | the service's health |
//!
//! Each checks the link first ([`Signer::check`]): forged, expired or
//! incomplete is 403, and nothing is asked of the engine. A chat id that is
//! no number is 404, a bad filter 400, the engine too busy to answer 503.
//! Every answer says not to cache it, sends no referrer (the address holds
//! the signature, and the chart links lead to other sites) and forbids
//! scripts (`Content-Security-Policy`): the pages have none.

use std::future::Future;
use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use callwatch_telegram::format::Links as ChartLinks;
use engine::board::ChannelScore;
use engine::event::{ChannelId, ChatId};
use engine::shard::Holding;
use engine::time::{NANOS_PER_SEC, Nanos};
use engine::token::Token;
use serde::Deserialize;

use crate::link::{Pass, Refusal, Signer};
use crate::pages::{
    DEFAULT_PERIOD, HealthPage, MAX_MIN_CALLS, Nav, PERIODS, RefusedPage, TOP_PAGE_ROWS, TopPage,
    TrackedPage,
};

/// The service's health, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub ready: bool,
    /// One line per dependency, e.g. `redis ok (0.40 ms)`.
    pub detail: Vec<String>,
}

/// The engine could not answer now (busy, stopping); worth asking again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Where the pages' data comes from: the same questions `/tracked` and
/// `/top` ask, so a page shows what the bot replies.
pub trait Source: Send + Sync + 'static {
    /// The chat's tracked tokens with their current values.
    fn tracked(
        &self,
        chat_id: ChatId,
    ) -> impl Future<Output = Result<Vec<Holding>, Unavailable>> + Send;

    /// The channels ranked over the last `window` as `/top` ranks them,
    /// those with fewer than `min_calls` calls left out, the first `limit`.
    fn leaderboard(
        &self,
        window: Nanos,
        min_calls: u32,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ChannelScore>, Unavailable>> + Send;

    /// The token's values (USD) since `since`, in time order, where a
    /// price history is kept (the alerts' charts); `None` without one.
    fn history(&self, token: &Token, since: Nanos) -> Option<Vec<f64>>;

    /// Channel names, where known.
    fn names(&self, ids: &[ChannelId]) -> impl Future<Output = Vec<Option<String>>> + Send;

    fn health(&self) -> Health;

    /// Now, by the wall clock (links expire by it).
    fn now(&self) -> Nanos;
}

/// What the routes share.
#[derive(Debug)]
pub struct Dashboard<S> {
    pub source: S,
    pub signer: Signer,
    /// `dashboard.base_url`, without a trailing `/`.
    pub base: String,
    pub charts: ChartLinks,
}

/// The dashboard's routes, to merge into the service's HTTP server.
pub fn router<S: Source>(dashboard: Dashboard<S>) -> axum::Router {
    let dashboard = Arc::new(Dashboard {
        base: dashboard.base.trim_end_matches('/').to_owned(),
        ..dashboard
    });
    axum::Router::new()
        .route("/dashboard/{chat}", get(tracked::<S>))
        .route("/dashboard/{chat}/top", get(top::<S>))
        .route("/dashboard/{chat}/health", get(health::<S>))
        .with_state(dashboard)
}

/// A page's query: the link's parts and the leaderboard's filters.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    exp: Option<String>,
    sig: Option<String>,
    period: Option<String>,
    min_calls: Option<String>,
}

type Shared<S> = State<Arc<Dashboard<S>>>;

impl<S: Source> Dashboard<S> {
    /// The link's pass, or the refusal to answer with.
    fn pass(&self, chat: &str, q: &PageQuery) -> Result<Pass, Response> {
        let Ok(chat_id) = chat.parse::<ChatId>() else {
            return Err(refused(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page.",
            ));
        };
        let now_secs = self.source.now().div_euclid(NANOS_PER_SEC);
        self.signer
            .check(chat_id, q.exp.as_deref(), q.sig.as_deref(), now_secs)
            .map_err(|why| {
                let hint = match why {
                    Refusal::Expired => "Send /dashboard in your chat with the bot for a new link.",
                    Refusal::Forged | Refusal::Malformed => {
                        "Open the link exactly as the bot's /dashboard reply gives it."
                    }
                };
                refused(
                    StatusCode::FORBIDDEN,
                    "Link not accepted",
                    &format!("{}: {hint}", capitalised(&why.to_string())),
                )
            })
    }
}

/// A request whose link was checked: its pass and its query. Taking one
/// is the check, so no page can forget it.
struct Signed {
    pass: Pass,
    query: PageQuery,
}

impl<S: Source> FromRequestParts<Arc<Dashboard<S>>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        d: &Arc<Dashboard<S>>,
    ) -> Result<Signed, Response> {
        let Path(chat) = Path::<String>::from_request_parts(parts, d)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(query) = Query::<PageQuery>::from_request_parts(parts, d)
            .await
            .map_err(IntoResponse::into_response)?;
        let pass = d.pass(&chat, &query)?;
        Ok(Signed { pass, query })
    }
}

async fn tracked<S: Source>(State(d): Shared<S>, Signed { pass, .. }: Signed) -> Response {
    match d.source.tracked(pass.chat_id).await {
        Ok(tracked) => page(&TrackedPage::new(
            Nav::new(&d.base, &pass, "tracked"),
            tracked,
            &d.charts,
            |h| d.source.history(&h.tracked.token, h.tracked.started),
        )),
        Err(e) => busy(&e),
    }
}

async fn top<S: Source>(State(d): Shared<S>, Signed { pass, query: q }: Signed) -> Response {
    let period = q.period.as_deref().unwrap_or(DEFAULT_PERIOD);
    let Some(&(period, _, window)) = PERIODS.iter().find(|p| p.0 == period) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Unknown period",
            "The period is one of 1d, 3d and 7d.",
        );
    };
    let min_calls = match q.min_calls.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(n) => match n.parse::<u32>() {
            Ok(n) if (1..=MAX_MIN_CALLS).contains(&n) => n,
            _ => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "Bad minimum of calls",
                    &format!(
                        "The minimum number of calls is a whole number from 1 to {MAX_MIN_CALLS}."
                    ),
                );
            }
        },
    };
    let board = match d.source.leaderboard(window, min_calls, TOP_PAGE_ROWS).await {
        Ok(b) => b,
        Err(e) => return busy(&e),
    };
    let ids: Vec<ChannelId> = board.iter().map(|s| s.channel_id).collect();
    let names = d.source.names(&ids).await;
    page(&TopPage::new(
        Nav::new(&d.base, &pass, "top"),
        &board,
        &names,
        period,
        min_calls,
    ))
}

async fn health<S: Source>(State(d): Shared<S>, Signed { pass, .. }: Signed) -> Response {
    let h = d.source.health();
    page(&HealthPage {
        nav: Nav::new(&d.base, &pass, "health"),
        ready: h.ready,
        detail: h.detail,
    })
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

fn busy(e: &Unavailable) -> Response {
    tracing::warn!(error = %e, "a dashboard page could not be answered");
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "Busy",
        "The service could not answer right now. Please try again in a minute.",
    )
}

fn refused(status: StatusCode, title: &str, why: &str) -> Response {
    let mut r = page(&RefusedPage {
        title: title.to_owned(),
        why: why.to_owned(),
    });
    *r.status_mut() = status;
    r
}

/// A rendered page with the headers every answer carries.
fn page(template: &impl Template) -> Response {
    let mut r = match template.render() {
        Ok(html) => html.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page did not render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    };
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}
