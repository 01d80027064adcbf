//! The pages: what each shows, as plain values, and its askama template
//! (`templates/`). Pure: the rows come in already asked for, and each
//! page renders the same for the same rows.
//!
//! askama escapes every value for HTML (the templates end in `.html`), so
//! a channel named `<script>` shows as text. The one value put in
//! unescaped is a sparkline, which [`crate::sparkline`] makes of numbers.
//! Numbers are written by `callwatch_telegram::format`, as the bot's
//! replies write them.

use askama::Template;
use callwatch_telegram::commands::{rank_tracked, short_address, when};
use callwatch_telegram::format::{self, Links as ChartLinks};
use engine::board::ChannelScore;
use engine::event::ChatId;
use engine::shard::Holding;
use engine::time::{NANOS_PER_SEC, Nanos};

use crate::link::Pass;
use crate::sparkline;

/// Tokens the tracked page lists at most; the rest are counted.
pub const TRACKED_PAGE_ROWS: usize = 200;
/// Channels the leaderboard page ranks at most.
pub const TOP_PAGE_ROWS: usize = 50;
/// The highest minimum of calls the leaderboard's filter takes.
pub const MAX_MIN_CALLS: u32 = 1_000;

/// The leaderboard's periods: (the query's value, the label, the window).
/// The week is `/top`'s; the engine keeps calls no longer than that.
pub const PERIODS: &[(&str, &str, Nanos)] = &[
    ("1d", "last 24 hours", 24 * 3600 * NANOS_PER_SEC),
    ("3d", "last 3 days", 3 * 24 * 3600 * NANOS_PER_SEC),
    ("7d", "last 7 days", 7 * 24 * 3600 * NANOS_PER_SEC),
];
/// The period shown when the query names none: `/top`'s.
pub const DEFAULT_PERIOD: &str = "7d";

/// What every page's header links with: the chat's pages, each with the
/// link's signature.
#[derive(Debug, Clone)]
pub struct Nav {
    /// The dashboard's base URL, without a trailing `/`.
    pub base: String,
    pub chat_id: ChatId,
    /// `exp=…&sig=…`.
    pub query: String,
    pub exp: String,
    pub sig: String,
    /// When the link stops working, for people.
    pub expires: String,
    /// Which page this is: `tracked`, `top` or `health`.
    pub active: &'static str,
}

impl Nav {
    pub fn new(base: &str, pass: &Pass, active: &'static str) -> Nav {
        Nav {
            base: base.to_owned(),
            chat_id: pass.chat_id,
            query: pass.query(),
            exp: pass.exp_secs.to_string(),
            sig: pass.sig.clone(),
            expires: when(pass.exp_secs.saturating_mul(NANOS_PER_SEC)),
            active,
        }
    }

    /// The address of one of the chat's pages (`""`, `/top`, `/health`).
    pub fn href(&self, page: &str) -> String {
        format!(
            "{}/dashboard/{}{page}?{}",
            self.base, self.chat_id, self.query
        )
    }
}

/// One tracked token's row.
#[derive(Debug, Clone)]
pub struct TrackedRow {
    pub token: String,
    pub short: String,
    pub chart: String,
    pub at_call: String,
    pub now: String,
    pub multiple: String,
    /// The highest threshold reached, e.g. `5x`; `—` for none yet.
    pub reached: String,
    pub since: String,
    /// Inline SVG, made of numbers only.
    pub spark: String,
}

#[derive(Debug, Template)]
#[template(path = "tracked.html")]
pub struct TrackedPage {
    pub nav: Nav,
    pub rows: Vec<TrackedRow>,
    pub total: usize,
    /// Rows past [`TRACKED_PAGE_ROWS`], counted.
    pub more: usize,
}

impl TrackedPage {
    /// The page of `tracked`, in `/tracked`'s order; `history` gives a
    /// token's values since its call where a price history is kept.
    pub fn new(
        nav: Nav,
        mut tracked: Vec<Holding>,
        links: &ChartLinks,
        history: impl Fn(&Holding) -> Option<Vec<f64>>,
    ) -> TrackedPage {
        rank_tracked(&mut tracked);
        let total = tracked.len();
        let rows = tracked
            .iter()
            .take(TRACKED_PAGE_ROWS)
            .map(|h| tracked_row(h, links, history(h)))
            .collect();
        TrackedPage {
            nav,
            rows,
            total,
            more: total.saturating_sub(TRACKED_PAGE_ROWS),
        }
    }
}

fn write(f: fn(f64, &mut String), v: f64) -> String {
    let mut s = String::new();
    f(v, &mut s);
    s
}

/// A sparkline's steps, as multiples of the value at the call, and its
/// label: the price history since the call when there is one (1x first,
/// the value now last); otherwise what the engine itself keeps, the value
/// at the call, the highest threshold crossed since (the peak was at least
/// that) and the value now.
fn steps(h: &Holding, history: Option<Vec<f64>>) -> (Vec<f64>, String) {
    let now = h.multiple();
    let Some(values) = history.filter(|v| !v.is_empty()) else {
        let reached = h.tracked.last_threshold;
        let mut label = String::from("at call 1x");
        if let Some(r) = reached {
            label.push_str(", reached ");
            label.push_str(&write(format::multiple, r));
        }
        label.push_str(", now ");
        label.push_str(&write(format::multiple, now));
        return (
            [1.0].into_iter().chain(reached).chain([now]).collect(),
            label,
        );
    };
    let mut steps: Vec<f64> = values.iter().map(|v| v / h.tracked.fdv_at_call).collect();
    if steps.first() != Some(&1.0) {
        steps.insert(0, 1.0);
    }
    if steps.last() != Some(&now) {
        steps.push(now);
    }
    let high = steps.iter().copied().fold(f64::MIN, f64::max);
    let label = format!(
        "{} prices since the call, highest {}, now {}",
        values.len(),
        write(format::multiple, high),
        write(format::multiple, now)
    );
    (steps, label)
}

fn tracked_row(h: &Holding, links: &ChartLinks, history: Option<Vec<f64>>) -> TrackedRow {
    let token = h.tracked.token.to_string();
    let reached = h.tracked.last_threshold;
    let (steps, label) = steps(h, history);
    TrackedRow {
        chart: links.chart(&h.tracked.token),
        short: short_address(&token),
        token,
        at_call: write(format::usd, h.tracked.fdv_at_call),
        now: write(format::usd, h.fdv_usd),
        multiple: write(format::multiple, h.multiple()),
        reached: reached.map_or_else(|| "—".to_owned(), |r| write(format::multiple, r)),
        since: when(h.tracked.started),
        spark: sparkline::svg(&steps, &label),
    }
}

/// One channel's row on the leaderboard.
#[derive(Debug, Clone)]
pub struct TopRow {
    pub rank: usize,
    pub name: String,
    pub channel_id: i64,
    pub calls: u32,
    pub share: String,
    pub median: String,
}

/// One choice of the period filter.
#[derive(Debug, Clone)]
pub struct PeriodChoice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Debug, Template)]
#[template(path = "top.html")]
pub struct TopPage {
    pub nav: Nav,
    pub rows: Vec<TopRow>,
    pub periods: Vec<PeriodChoice>,
    pub period_label: &'static str,
    pub min_calls: u32,
    pub max_min_calls: u32,
}

impl TopPage {
    /// The page of `board` (ranked, filtered), with `names[i]` the name of
    /// `board[i]`'s channel where known.
    pub fn new(
        nav: Nav,
        board: &[ChannelScore],
        names: &[Option<String>],
        period: &str,
        min_calls: u32,
    ) -> TopPage {
        let rows = board
            .iter()
            .zip(names)
            .enumerate()
            .map(|(i, (s, name))| {
                let (mut share, mut median) = (String::new(), String::new());
                format::percent(s.share_2x(), &mut share);
                format::multiple(s.median_peak, &mut median);
                TopRow {
                    rank: i + 1,
                    name: format::channel_label(s.channel_id, name.as_deref()),
                    channel_id: s.channel_id,
                    calls: s.calls,
                    share,
                    median,
                }
            })
            .collect();
        let periods = PERIODS
            .iter()
            .map(|&(value, label, _)| PeriodChoice {
                value,
                label,
                selected: value == period,
            })
            .collect();
        let period_label = PERIODS.iter().find(|p| p.0 == period).map_or("", |p| p.1);
        TopPage {
            nav,
            rows,
            periods,
            period_label,
            min_calls,
            max_min_calls: MAX_MIN_CALLS,
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "health.html")]
pub struct HealthPage {
    pub nav: Nav,
    pub ready: bool,
    /// One line per dependency, as `/readyz` shows it.
    pub detail: Vec<String>,
}

/// A page that explains a refusal (a bad link, a bad filter, the engine
/// busy), with no data.
#[derive(Debug, Template)]
#[template(path = "refused.html")]
pub struct RefusedPage {
    pub title: String,
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::shard::TrackedView;

    fn nav(active: &'static str) -> Nav {
        let pass = Pass {
            chat_id: 42,
            exp_secs: 1_800_000_000,
            sig: "ab".repeat(32),
        };
        Nav::new("https://cw.example.com", &pass, active)
    }

    #[test]
    fn a_script_in_a_channel_name_is_shown_as_text() {
        let board = [ChannelScore {
            channel_id: -1001,
            calls: 3,
            reached_2x: 2,
            median_peak: 2.5,
        }];
        let names = [Some("<script>alert('x')</script> & \"Co\"".to_owned())];
        let html = TopPage::new(nav("top"), &board, &names, "7d", 1)
            .render()
            .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62; &#38; &#34;Co&#34;"),
            "{html}"
        );
        assert!(html.contains("<td class=\"num share\">67%</td>"), "{html}");
        assert!(html.contains("2.5x") && html.contains("-1001"), "{html}");
    }

    #[test]
    fn pages_fit_a_phone_and_link_to_each_other_with_the_signature() {
        let html = HealthPage {
            nav: nav("health"),
            ready: true,
            detail: vec!["redis ok (0.20 ms)".to_owned()],
        }
        .render()
        .unwrap();
        assert!(
            html.contains(
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            ),
            "{html}"
        );
        let sig = "ab".repeat(32);
        let top = format!("https://cw.example.com/dashboard/42/top?exp=1800000000&#38;sig={sig}");
        assert!(html.contains(&top), "{html}");
        assert!(html.contains("redis ok (0.20 ms)"), "{html}");
        assert!(!html.contains("<script"), "no script on any page");
    }

    #[test]
    fn tracked_rows_come_in_tracked_order_with_their_numbers_and_sparkline() {
        let holding = |token: &str, at_call: f64, now: f64, reached: Option<f64>| Holding {
            tracked: TrackedView {
                token: token.parse().unwrap(),
                chat_id: 42,
                fdv_at_call: at_call,
                started: 1_764_064_800 * NANOS_PER_SEC,
                last_threshold: reached,
            },
            fdv_usd: now,
        };
        let page = TrackedPage::new(
            nav("tracked"),
            vec![
                holding(
                    "So11111111111111111111111111111111111111112",
                    100_000.0,
                    150_000.0,
                    None,
                ),
                holding(
                    "0x00000000000000000000000000000000000000aa",
                    50_000.0,
                    600_000.0,
                    Some(10.0),
                ),
            ],
            &ChartLinks::default(),
            |h| {
                (h.tracked.token.to_string() == "So11111111111111111111111111111111111111112")
                    .then(|| vec![100_000.0, 80_000.0, 250_000.0])
            },
        );
        assert_eq!(page.rows[0].multiple, "12x");
        assert_eq!(
            (page.rows[1].at_call.as_str(), page.rows[1].now.as_str()),
            ("$100K", "$150K")
        );
        assert_eq!(
            (page.rows[0].reached.as_str(), page.rows[1].reached.as_str()),
            ("10x", "—")
        );
        assert!(
            page.rows[0]
                .spark
                .contains("at call 1x, reached 10x, now 12x")
        );
        // With a history: the call, each value, then the value now.
        assert!(
            page.rows[1]
                .spark
                .contains("3 prices since the call, highest 2.5x, now 1.5x"),
            "{}",
            page.rows[1].spark
        );
        let points = |svg: &str| {
            svg.split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .split(' ')
                .count()
        };
        assert_eq!(
            (points(&page.rows[0].spark), points(&page.rows[1].spark)),
            (3, 4)
        );
        let html = page.render().unwrap();
        assert!(html.contains("<svg class=\"spark\""), "{html}");
        assert!(html.contains("2025-11-25 10:00 UTC"), "{html}");
    }
}
