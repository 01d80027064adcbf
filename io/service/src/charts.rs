//! Charts of multiplier alerts in `serve`: the price history of tracked
//! tokens, and the renders, off the engine's and the sender's paths.
//!
//! - **What has a history.** A token gets one when a call alert starts
//!   tracking it (from the value at the call), or when a multiplier alert
//!   names a token without one (after a restart: from the alert's value at
//!   the call); it is kept until its tracking's TTL has passed by the
//!   stream's clock. Prices reach it from the reader's record of each
//!   batch ([`Submitted::prices`](crate::keeper::Submitted)), through the
//!   keeper: the engine is not asked and does no more work. Prices of
//!   tokens without a history are dropped at once.
//! - **Bounds.** Each history is at most [`callwatch_charts::POINTS`]
//!   points (2 KiB); at most `charts.max_tokens` histories are held. A new
//!   token when full first drops the expired ones; if none has expired, it
//!   gets no history, and its alerts no chart (counted, `untracked`).
//! - **Rendering.** A chart is drawn on tokio's blocking pool, at most
//!   `charts.renders` at once (a semaphore; an alert that finds none free
//!   goes without a chart: `busy`). The alerts of a batch wait for their
//!   charts together, at most `charts.wait_ms`; a chart not drawn by then
//!   is left (its render finishes and frees its permit) and the alert goes
//!   as text (`late`), as does one whose render failed (`failed`). So a
//!   chart delays a batch's alerts by at most `wait_ms` and never loses
//!   one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callwatch_charts::{Chart, History, Point, render};
use callwatch_telegram::sender::Photo;
use engine::effect::{Effect, MultiplierAlert};
use engine::time::Nanos;
use engine::token::Token;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::keeper::Price;

/// The `[charts]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChartSettings {
    /// Multiplier alerts carry a chart (each chat may turn them off with
    /// `/charts off`) [default: true].
    pub enabled: bool,
    /// Tokens with a price history at most [default: 20,000, about 45 MB].
    pub max_tokens: usize,
    /// Charts drawn at once, each on a blocking thread [default: 2].
    pub renders: usize,
    /// How long a batch's alerts wait for their charts [default: 250].
    pub wait_ms: u64,
}

impl Default for ChartSettings {
    fn default() -> Self {
        ChartSettings {
            enabled: true,
            max_tokens: 20_000,
            renders: 2,
            wait_ms: 250,
        }
    }
}

impl ChartSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled && (self.max_tokens == 0 || self.renders == 0) {
            problems.push("charts.max_tokens and charts.renders must be at least 1".to_owned());
        }
        if self.wait_ms == 0 || self.wait_ms > 5_000 {
            problems.push("charts.wait_ms must be from 1 to 5000".to_owned());
        }
        problems
    }
}

/// What became of the charts asked for.
#[derive(Debug, Default)]
pub struct ChartCounters {
    pub drawn: AtomicU64,
    /// Every render slot was taken.
    pub busy: AtomicU64,
    /// Not drawn within `wait_ms`.
    pub late: AtomicU64,
    pub failed: AtomicU64,
    /// The token had no history and there was no room for one.
    pub untracked: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One token's history and when its tracking ends.
#[derive(Debug)]
struct Kept {
    history: History,
    until: Nanos,
}

#[derive(Debug, Default)]
struct Histories {
    tokens: HashMap<Token, Kept>,
    /// The latest event time seen: expiry is judged against it, as the
    /// engine judges its own.
    clock: Nanos,
}

impl Histories {
    /// The token's history, made from `start` if it has none and there is
    /// room; tracking is extended to `until`.
    fn track(&mut self, token: Token, start: Point, until: Nanos, max: usize) -> Option<&mut Kept> {
        self.clock = self.clock.max(start.at_ns);
        if !self.tokens.contains_key(&token) && self.tokens.len() >= max {
            let clock = self.clock;
            self.tokens.retain(|_, k| k.until > clock);
            if self.tokens.len() >= max {
                return None;
            }
        }
        let kept = self.tokens.entry(token).or_insert_with(|| Kept {
            history: History::new(start),
            until,
        });
        kept.until = kept.until.max(until);
        Some(kept)
    }
}

/// The price histories and the render slots, shared by the keeper (which
/// feeds prices) and the alerts (which ask for charts).
#[derive(Debug)]
pub struct Charts {
    histories: Mutex<Histories>,
    slots: Arc<Semaphore>,
    /// The engine's thresholds, ascending.
    thresholds: Vec<f64>,
    ttl: Nanos,
    max_tokens: usize,
    wait: Duration,
    counters: Arc<ChartCounters>,
}

impl Charts {
    pub fn new(
        settings: &ChartSettings,
        thresholds: &[f64],
        ttl: Nanos,
        counters: Arc<ChartCounters>,
    ) -> Charts {
        Charts {
            histories: Mutex::default(),
            slots: Arc::new(Semaphore::new(settings.renders)),
            thresholds: thresholds.to_vec(),
            ttl,
            max_tokens: settings.max_tokens,
            wait: Duration::from_millis(settings.wait_ms),
            counters,
        }
    }

    /// Prices of a batch: each one of a token with a history is recorded.
    pub fn prices(&self, prices: &[Price]) {
        if prices.is_empty() {
            return;
        }
        let mut h = self.histories.lock();
        for p in prices {
            h.clock = h.clock.max(p.at);
            if let Some(kept) = h.tokens.get_mut(&p.token) {
                kept.history.record(Point {
                    at_ns: p.at,
                    value: p.fdv_usd,
                });
            }
        }
    }

    /// The values (USD) of `token`'s history from `from_ns` on, in time
    /// order: at most [`callwatch_charts::POINTS`], each the higher of
    /// the updates it stands for. `None` when the token has no history.
    pub fn values_since(&self, token: &Token, from_ns: Nanos) -> Option<Vec<f64>> {
        let h = self.histories.lock();
        let kept = h.tokens.get(token)?;
        Some(
            kept.history
                .between(from_ns, Nanos::MAX)
                .iter()
                .map(|p| p.value)
                .collect(),
        )
    }

    /// Starts the history of every token a call alert starts tracking.
    pub fn track(&self, effects: &[Effect]) {
        let mut h = self.histories.lock();
        for effect in effects {
            if let Effect::CallAlert(a) = effect {
                let start = Point {
                    at_ns: a.at,
                    value: a.fdv_usd,
                };
                if h.track(a.token, start, a.at + self.ttl, self.max_tokens)
                    .is_none()
                {
                    bump(&self.counters.untracked);
                }
            }
        }
    }

    /// What a chart of `alert` shows: the values from its call through
    /// the alert, the alert's own last. `None` when the token has no
    /// history and there is no room for one.
    fn points_of(&self, alert: &MultiplierAlert) -> Option<Vec<Point>> {
        let call = Point {
            at_ns: alert.tracking_started,
            value: alert.fdv_at_call,
        };
        let now = Point {
            at_ns: alert.at,
            value: alert.fdv_usd,
        };
        let until = alert.tracking_started + self.ttl;
        let mut h = self.histories.lock();
        let kept = h.track(alert.token, call, until, self.max_tokens)?;
        let mut points = kept.history.between(call.at_ns + 1, now.at_ns - 1);
        points.push(now);
        Some(points)
    }

    /// The charts of `alerts`, in order: each drawn on the blocking pool
    /// if a render slot is free, all waited for together at most
    /// `wait_ms`. `None` for an alert whose chart is not ready by then,
    /// failed, or had no slot or no history.
    pub async fn draw(&self, alerts: &[&MultiplierAlert]) -> Vec<Option<Photo>> {
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut renders = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let Some(points) = self.points_of(alert) else {
                bump(&self.counters.untracked);
                renders.push(None);
                continue;
            };
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                bump(&self.counters.busy);
                renders.push(None);
                continue;
            };
            let thresholds: Vec<f64> = self
                .thresholds
                .iter()
                .copied()
                .filter(|&t| t <= alert.threshold)
                .collect();
            let title = title(&alert.token, alert.threshold);
            let call = Point {
                at_ns: alert.tracking_started,
                value: alert.fdv_at_call,
            };
            renders.push(Some(tokio::task::spawn_blocking(move || {
                let _slot = slot;
                render(&Chart {
                    title: &title,
                    call,
                    points: &points,
                    thresholds: &thresholds,
                })
            })));
        }
        self.gather(renders, deadline).await
    }

    /// The renders' charts, each waited for until `deadline` at most.
    async fn gather(
        &self,
        renders: Vec<Option<Render>>,
        deadline: tokio::time::Instant,
    ) -> Vec<Option<Photo>> {
        let mut photos = Vec::with_capacity(renders.len());
        for render in renders {
            let Some(handle) = render else {
                photos.push(None);
                continue;
            };
            photos.push(match tokio::time::timeout_at(deadline, handle).await {
                Ok(Ok(Ok(png))) => {
                    bump(&self.counters.drawn);
                    Some(Photo::new(png))
                }
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "a chart could not be drawn; its alert goes as text");
                    bump(&self.counters.failed);
                    None
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a chart's render panicked; its alert goes as text");
                    bump(&self.counters.failed);
                    None
                }
                Err(_) => {
                    bump(&self.counters.late);
                    None
                }
            });
        }
        photos
    }
}

/// A chart being drawn on the blocking pool.
type Render = tokio::task::JoinHandle<callwatch_charts::render::Result<Vec<u8>>>;

/// The line above a chart: the token, shortened, and the multiple.
fn title(token: &Token, threshold: f64) -> String {
    let address = token.to_string();
    let short = if address.len() > 12 {
        format!("{}…{}", &address[..4], &address[address.len() - 4..])
    } else {
        address
    };
    format!("{short} reached {threshold}x")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";
    const MIN: Nanos = 60_000_000_000;

    fn charts(max_tokens: usize, renders: usize) -> Charts {
        let settings = ChartSettings {
            max_tokens,
            renders,
            wait_ms: 5_000,
            ..ChartSettings::default()
        };
        Charts::new(
            &settings,
            &[2.0, 5.0, 10.0],
            60 * MIN,
            Arc::new(ChartCounters::default()),
        )
    }

    fn token(i: u8) -> Token {
        if i == 0 {
            return SOL.parse().unwrap();
        }
        format!("0x{:040x}", i).parse().unwrap()
    }

    fn price(token: Token, minute: i64, fdv_usd: f64) -> Price {
        Price {
            token,
            at: minute * MIN,
            fdv_usd,
        }
    }

    fn alert(token: Token, minute: i64, fdv_usd: f64) -> MultiplierAlert {
        MultiplierAlert {
            seq: 1,
            chat_id: 42,
            token,
            at: minute * MIN,
            threshold: 2.0,
            multiplier: fdv_usd / 100.0,
            fdv_at_call: 100.0,
            fdv_usd,
            tracking_started: 0,
        }
    }

    fn call_alert(token: Token, minute: i64) -> Effect {
        Effect::CallAlert(engine::effect::CallAlert {
            seq: 1,
            chat_id: 42,
            token,
            at: minute * MIN,
            fdv_usd: 100.0,
            callers: vec![-1].into(),
            channel_id: -1,
        })
    }

    #[test]
    fn only_tracked_tokens_keep_prices() {
        let c = charts(10, 1);
        c.prices(&[price(token(0), 1, 120.0)]);
        assert!(c.histories.lock().tokens.is_empty(), "not tracked yet");
        c.track(&[call_alert(token(0), 0)]);
        c.prices(&[price(token(0), 1, 120.0), price(token(1), 1, 5.0)]);
        let points = c.points_of(&alert(token(0), 2, 250.0)).unwrap();
        assert_eq!(
            points.iter().map(|p| p.value).collect::<Vec<_>>(),
            [120.0, 250.0],
            "the call is drawn apart; the alert's value last"
        );
        assert_eq!(c.histories.lock().tokens.len(), 1);
    }

    #[test]
    fn a_full_table_makes_room_from_expired_tokens_only() {
        let c = charts(2, 1);
        c.track(&[call_alert(token(1), 0), call_alert(token(2), 30)]);
        c.track(&[call_alert(token(3), 40)]);
        assert_eq!(
            c.counters.untracked.load(Ordering::Relaxed),
            1,
            "none expired"
        );
        // Token 1's tracking ends at minute 60.
        c.prices(&[price(token(2), 61, 1.0)]);
        c.track(&[call_alert(token(3), 61)]);
        let h = c.histories.lock();
        assert!(h.tokens.contains_key(&token(3)) && !h.tokens.contains_key(&token(1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn charts_are_drawn_within_the_slots() {
        let c = charts(10, 1);
        c.track(&[call_alert(token(0), 0)]);
        let (a, b) = (alert(token(0), 5, 210.0), alert(token(0), 6, 220.0));
        let slot = Arc::clone(&c.slots).try_acquire_owned().unwrap();
        assert_eq!(c.draw(&[&a, &b]).await, vec![None, None], "no slot free");
        assert_eq!(c.counters.busy.load(Ordering::Relaxed), 2);
        drop(slot);
        let photos = c.draw(&[&a]).await;
        assert!(photos[0].is_some(), "drawn");
        assert_eq!(c.counters.drawn.load(Ordering::Relaxed), 1);
    }

    /// A render that outlasts the wait is left behind: the alert goes
    /// without its chart, counted late.
    #[tokio::test]
    async fn a_chart_not_ready_in_time_is_left_behind() {
        let c = charts(10, 1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let stuck: Render = tokio::task::spawn_blocking(move || {
            let _ = held.recv();
            Err(callwatch_charts::RenderError::Font)
        });
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        assert_eq!(
            c.gather(vec![Some(stuck), None], deadline).await,
            vec![None, None]
        );
        assert_eq!(c.counters.late.load(Ordering::Relaxed), 1);
        assert_eq!(c.counters.failed.load(Ordering::Relaxed), 0);
        release.send(()).unwrap();
    }
}
