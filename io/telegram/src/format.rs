//! Alerts as Telegram messages: HTML text (parse mode `HTML`) and a row of
//! URL buttons. Pure: the channel names come in already looked up (see
//! [`super::names`]), so the same alert always renders the same text.
//!
//! Every piece of outside text (channel names) is escaped; addresses and
//! numbers are ours. A message is at most [`MAX_MESSAGE_UNITS`] UTF-16 units
//! of *raw* HTML: Telegram's limit of 4,096 characters applies after the
//! entities are parsed, so the raw text being under it is a safe bound. The
//! only part that can grow without limit is the list of calling channels;
//! it is cut to fit and ends with "and N more channels".

use std::fmt::Write as _;

use engine::effect::{CallAlert, Effect, MultiplierAlert};
use engine::event::ChannelId;
use engine::token::{Chain, Token};
use url::Url;

/// Telegram's longest message text.
pub const MAX_MESSAGE_UNITS: usize = 4096;
/// Telegram's longest photo caption, counted after the entities are parsed.
pub const MAX_CAPTION_UNITS: usize = 1024;
/// A channel name longer than this many characters is cut, with `…`.
/// (Telegram titles may be 128 characters; a list of them reads badly.)
pub const MAX_NAME_CHARS: usize = 64;

/// Where the Chart and Explorer links of each chain point: a prefix to
/// which the token's address is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// Default: `https://dexscreener.com/solana/`.
    pub solana_chart: String,
    /// Default: `https://solscan.io/token/`.
    pub solana_explorer: String,
    /// Default: `https://dexscreener.com/ethereum/`. The engine's EVM
    /// tokens carry no network, so EVM links go to Ethereum's pages until
    /// they do.
    pub evm_chart: String,
    /// Default: `https://etherscan.io/token/`.
    pub evm_explorer: String,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            solana_chart: "https://dexscreener.com/solana/".to_owned(),
            solana_explorer: "https://solscan.io/token/".to_owned(),
            evm_chart: "https://dexscreener.com/ethereum/".to_owned(),
            evm_explorer: "https://etherscan.io/token/".to_owned(),
        }
    }
}

impl Links {
    /// Checks once, at start, that every prefix makes an http(s) URL.
    pub fn check(&self) -> Result<(), String> {
        for (name, prefix) in [
            ("solana-chart", &self.solana_chart),
            ("solana-explorer", &self.solana_explorer),
            ("evm-chart", &self.evm_chart),
            ("evm-explorer", &self.evm_explorer),
        ] {
            let url = Url::parse(&format!("{prefix}0x00"))
                .map_err(|e| format!("link {name} {prefix:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("link {name} {prefix:?}: not http(s)"));
            }
        }
        Ok(())
    }

    pub fn chart(&self, token: &Token) -> String {
        match token.chain() {
            Chain::Solana => format!("{}{token}", self.solana_chart),
            Chain::Evm => format!("{}{token}", self.evm_chart),
        }
    }

    pub fn explorer(&self, token: &Token) -> String {
        match token.chain() {
            Chain::Solana => format!("{}{token}", self.solana_explorer),
            Chain::Evm => format!("{}{token}", self.evm_explorer),
        }
    }
}

/// An inline keyboard button that opens a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub text: String,
    pub url: Url,
}

/// A message ready to send: HTML text and one row of buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub buttons: Vec<Button>,
}

/// The message of an alert; `None` for effects that are not alerts.
/// `names[i]` is the name of `callers[i]` of a call alert (`None`, or an
/// empty name, shows the numeric id).
pub fn alert<N: AsRef<str>>(
    effect: &Effect,
    names: &[Option<N>],
    links: &Links,
) -> Option<Rendered> {
    match effect {
        Effect::CallAlert(a) => Some(call_alert(a, names, links)),
        Effect::MultiplierAlert(a) => Some(multiplier_alert(a, links)),
        Effect::Progress(_) => None,
    }
}

/// A call alert: the token, its chain, its market value and the channels
/// that called it.
///
/// # Panics
/// If `names` is not as long as `a.callers` (a broken caller).
pub fn call_alert<N: AsRef<str>>(a: &CallAlert, names: &[Option<N>], links: &Links) -> Rendered {
    assert_eq!(names.len(), a.callers.len(), "one name slot per caller");
    let (chart, explorer) = (links.chart(&a.token), links.explorer(&a.token));
    let n = a.callers.len();
    let mut head = String::with_capacity(256);
    head.push_str("🔔 <b>Called</b>");
    heading(&mut head, &a.token, a.fdv_usd);
    head.push_str("</b>\nCalled by <b>");
    head.push_str(itoa::Buffer::new().format(n));
    head.push_str(if n == 1 {
        "</b> channel: "
    } else {
        "</b> channels: "
    });
    let mut tail = String::with_capacity(256);
    tail.push('\n');
    links_line(&mut tail, &chart, &explorer);

    let budget = MAX_MESSAGE_UNITS.saturating_sub(units(&head) + units(&tail));
    let mut text = head;
    channel_list(&a.callers, names, budget, &mut text);
    text.push_str(&tail);
    debug_assert!(units(&text) <= MAX_MESSAGE_UNITS);
    Rendered {
        text,
        buttons: buttons(&chart, &explorer),
    }
}

/// A multiplier alert: the multiple reached, with the market value then
/// and at the call.
pub fn multiplier_alert(a: &MultiplierAlert, links: &Links) -> Rendered {
    let (chart, explorer) = (links.chart(&a.token), links.explorer(&a.token));
    let mut text = String::with_capacity(512);
    text.push_str("🚀 <b>");
    threshold(a.threshold, &mut text);
    text.push_str("</b>");
    heading(&mut text, &a.token, a.fdv_usd);
    text.push_str("</b>, <b>");
    multiple(a.multiplier, &mut text);
    text.push_str("</b> since the call at ");
    usd(a.fdv_at_call, &mut text);
    text.push('\n');
    links_line(&mut text, &chart, &explorer);
    Rendered {
        text,
        buttons: buttons(&chart, &explorer),
    }
}

pub fn chain_name(chain: Chain) -> &'static str {
    match chain {
        Chain::Solana => "Solana",
        Chain::Evm => "EVM",
    }
}

/// What follows an alert's title: ` · chain`, the address, and the market
/// value up to its closing `</b>`, which the caller writes.
fn heading(out: &mut String, token: &Token, fdv_usd: f64) {
    out.push_str(" · ");
    out.push_str(chain_name(token.chain()));
    // <code> so a tap copies the address; base58 and hex need no escaping.
    out.push_str("\n<code>");
    out.push_str(&token.to_string());
    out.push_str("</code>\nMarket value: <b>");
    usd(fdv_usd, out);
}

fn links_line(out: &mut String, chart: &str, explorer: &str) {
    out.push_str("<a href=\"");
    escape(chart, out);
    out.push_str("\">Chart</a> · <a href=\"");
    escape(explorer, out);
    out.push_str("\">Explorer</a>");
}

/// The Chart and Explorer buttons; one whose URL does not parse (a prefix
/// that [`Links::check`] would have refused) is left out.
fn buttons(chart: &str, explorer: &str) -> Vec<Button> {
    [("📈 Chart", chart), ("🔎 Explorer", explorer)]
        .into_iter()
        .filter_map(|(text, url)| {
            Some(Button {
                text: text.to_owned(),
                url: Url::parse(url).ok()?,
            })
        })
        .collect()
}

/// The calling channels by name, as many as fit in `budget` UTF-16 units,
/// then "and N more channels".
fn channel_list<N: AsRef<str>>(
    callers: &[ChannelId],
    names: &[Option<N>],
    budget: usize,
    out: &mut String,
) {
    let total = callers.len();
    let mut used = 0;
    let mut entry = String::with_capacity(2 * MAX_NAME_CHARS);
    for (i, (id, name)) in callers.iter().zip(names).enumerate() {
        entry.clear();
        if i > 0 {
            entry.push_str(", ");
        }
        channel_name(*id, name.as_ref().map(AsRef::as_ref), &mut entry);
        let left_after = total - i - 1;
        let need = units(&entry)
            + if left_after > 0 {
                more_units(left_after)
            } else {
                0
            };
        if used + need > budget {
            more(total - i, out);
            return;
        }
        used += units(&entry);
        out.push_str(&entry);
    }
}

/// " and N more channel(s)".
fn more(n: usize, out: &mut String) {
    out.push_str(" and ");
    out.push_str(itoa::Buffer::new().format(n));
    out.push_str(if n == 1 {
        " more channel"
    } else {
        " more channels"
    });
}

fn more_units(n: usize) -> usize {
    let mut s = String::with_capacity(32);
    more(n, &mut s);
    units(&s)
}

/// A channel's name, escaped, cut at [`MAX_NAME_CHARS`], with control
/// characters (a newline would break the layout) shown as spaces; the
/// numeric id when there is no name.
pub fn channel_name(id: ChannelId, name: Option<&str>, out: &mut String) {
    escape(&channel_label(id, name), out);
}

/// A channel's name as plain text, not escaped (for a page whose template
/// escapes it): cut at [`MAX_NAME_CHARS`], with control characters shown
/// as spaces; the numeric id when there is no name.
pub fn channel_label(id: ChannelId, name: Option<&str>) -> String {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let Some(name) = name else {
        return itoa::Buffer::new().format(id).to_owned();
    };
    let mut out = String::with_capacity(name.len().min(4 * MAX_NAME_CHARS));
    for (i, ch) in name.chars().enumerate() {
        if i == MAX_NAME_CHARS {
            out.push('…');
            break;
        }
        out.push(if ch.is_control() { ' ' } else { ch });
    }
    out
}

/// Escapes text for Telegram's HTML parse mode (also inside attribute
/// values).
pub fn escape(text: &str, out: &mut String) {
    for ch in text.chars() {
        escape_char(ch, out);
    }
}

fn escape_char(ch: char, out: &mut String) {
    match ch {
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '&' => out.push_str("&amp;"),
        '"' => out.push_str("&quot;"),
        _ => out.push(ch),
    }
}

/// Whether HTML `text` fits a photo caption: its length once Telegram has
/// parsed the entities (tags dropped, `&lt;` one character) is at most
/// [`MAX_CAPTION_UNITS`]. The text is ours (see [`escape`]): the only
/// entities in it are the four that function writes.
pub fn fits_caption(text: &str) -> bool {
    let mut shown = 0;
    let mut in_tag = false;
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        let mut step = ch.len_utf8();
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            '&' => {
                step = rest.find(';').map_or(step, |end| end + 1);
                shown += 1;
            }
            _ => shown += ch.len_utf16(),
        }
        rest = &rest[step..];
    }
    shown <= MAX_CAPTION_UNITS
}

/// Length as Telegram counts it: UTF-16 code units.
pub fn units(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

const SCALES: [(f64, &str); 5] = [(1.0, ""), (1e3, "K"), (1e6, "M"), (1e9, "B"), (1e12, "T")];

/// A dollar amount as people write it: `$950`, `$12.5K`, `$1.2M`, `$125M`.
pub fn usd(v: f64, out: &mut String) {
    out.push('$');
    compact(v, out);
}

/// A multiple: `2x`, `5.1x`, `120x`, `12.5Kx`.
pub fn multiple(v: f64, out: &mut String) {
    compact(v, out);
    out.push('x');
}

/// A share from 0 to 1 as a whole percentage: `67%`.
pub fn percent(share: f64, out: &mut String) {
    let _ = write!(out, "{:.0}%", share * 100.0);
}

/// A threshold: whole ones as integers (`10x`), others as they are (`1.5x`).
fn threshold(v: f64, out: &mut String) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        out.push_str(&trim_zeros(format!("{v}")));
    }
    out.push('x');
}

/// Three significant digits at most, with a K/M/B/T suffix: one decimal
/// under 100 of the unit, none above (`1.2M`, `12.5M`, `125M`). A value
/// that rounds up to 1,000 of a unit moves to the next (`$1M`, not
/// `$1000K`).
fn compact(v: f64, out: &mut String) {
    if !v.is_finite() || v < 0.0 {
        out.push('?');
        return;
    }
    if v > 0.0 && v < 1.0 {
        out.push_str(&trim_zeros(format!("{v:.2}")));
        return;
    }
    let mut i = SCALES.iter().rposition(|(s, _)| v >= *s).unwrap_or(0);
    loop {
        let (scale, suffix) = SCALES[i];
        let x = v / scale;
        let text = if x < 100.0 {
            trim_zeros(format!("{x:.1}"))
        } else {
            format!("{x:.0}")
        };
        if text.parse::<f64>().is_ok_and(|r| r >= 1000.0) && i + 1 < SCALES.len() {
            i += 1;
            continue;
        }
        out.push_str(&text);
        out.push_str(suffix);
        return;
    }
}

/// `1.0` → `1`, `1.50` → `1.5`.
fn trim_zeros(mut s: String) -> String {
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";
    const EVM: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

    fn call(token: &str, callers: Vec<i64>) -> CallAlert {
        CallAlert {
            seq: 1,
            chat_id: 42,
            token: token.parse().unwrap(),
            at: 0,
            fdv_usd: 1_234_567.0,
            callers: callers.into(),
            channel_id: -1,
        }
    }

    fn text_of(v: f64, f: fn(f64, &mut String)) -> String {
        let mut s = String::new();
        f(v, &mut s);
        s
    }

    #[test]
    fn market_values_read_as_people_write_them() {
        for (v, want) in [
            (0.5, "$0.5"),
            (950.0, "$950"),
            (999.6, "$1K"),
            (1_000.0, "$1K"),
            (12_345.0, "$12.3K"),
            (950_000.0, "$950K"),
            (999_950.0, "$1M"),
            (1_234_567.0, "$1.2M"),
            (12_500_000.0, "$12.5M"),
            (125_000_000.0, "$125M"),
            (3.4e9, "$3.4B"),
            (2e15, "$2000T"),
            (f64::NAN, "$?"),
        ] {
            assert_eq!(text_of(v, usd), want, "{v}");
        }
        assert_eq!(text_of(2.0, multiple), "2x");
        assert_eq!(text_of(5.06, multiple), "5.1x");
        assert_eq!(text_of(120.4, multiple), "120x");
        assert_eq!(text_of(12_500.0, multiple), "12.5Kx");
        assert_eq!(text_of(f64::INFINITY, multiple), "?x");
    }

    #[test]
    fn names_are_escaped_and_missing_ones_show_the_id() {
        let a = call(SOL, vec![-3, -2, -1]);
        let names = [Some("<b>Alpha</b> & \"Co\""), None, Some("  ")];
        let r = call_alert(&a, &names, &Links::default());
        assert!(
            r.text
                .contains("&lt;b&gt;Alpha&lt;/b&gt; &amp; &quot;Co&quot;, -2, -1\n"),
            "{}",
            r.text
        );
        assert!(!r.text.contains("<b>Alpha"), "raw HTML from a name leaked");
        assert!(r.text.contains("Called by <b>3</b> channels: "));
        assert!(r.text.contains("Market value: <b>$1.2M</b>"));
    }

    #[test]
    fn control_characters_and_long_names_are_tamed() {
        let long = "x".repeat(200);
        let mut out = String::new();
        channel_name(-5, Some(&long), &mut out);
        assert_eq!(out.chars().count(), MAX_NAME_CHARS + 1);
        assert!(out.ends_with('…'));
        out.clear();
        channel_name(-5, Some("a\nb\tc"), &mut out);
        assert_eq!(out, "a b c");
    }

    #[test]
    fn links_follow_the_chain() {
        let sol = call(SOL, vec![-1]);
        let r = call_alert(&sol, &[None::<&str>], &Links::default());
        assert!(r.text.contains(&format!(
            "<a href=\"https://dexscreener.com/solana/{SOL}\">Chart</a>"
        )));
        assert!(r.text.contains(&format!(
            "<a href=\"https://solscan.io/token/{SOL}\">Explorer</a>"
        )));
        assert!(r.text.contains("· Solana\n"));
        assert_eq!(
            r.buttons
                .iter()
                .map(|b| b.url.as_str().to_owned())
                .collect::<Vec<_>>(),
            [
                format!("https://dexscreener.com/solana/{SOL}"),
                format!("https://solscan.io/token/{SOL}")
            ]
        );

        let evm = call(EVM, vec![-1]);
        let lower = EVM.to_lowercase();
        let r = call_alert(&evm, &[None::<&str>], &Links::default());
        assert!(r.text.contains(&format!(
            "<a href=\"https://etherscan.io/token/{lower}\">Explorer</a>"
        )));
        assert!(r.text.contains(&format!("<code>{lower}</code>")));
        assert!(r.text.contains("· EVM\n"));
        assert_eq!(
            r.buttons[0].url.as_str(),
            format!("https://dexscreener.com/ethereum/{lower}")
        );
    }

    #[test]
    fn a_prefix_with_an_ampersand_is_escaped_in_the_href() {
        let links = Links {
            solana_chart: "https://example.com/chart?ref=cw&t=".to_owned(),
            ..Links::default()
        };
        links.check().unwrap();
        let r = call_alert(&call(SOL, vec![-1]), &[Some("A")], &links);
        assert!(
            r.text
                .contains("href=\"https://example.com/chart?ref=cw&amp;t=So1")
        );
        assert_eq!(
            r.buttons[0].url.as_str(),
            format!("https://example.com/chart?ref=cw&t={SOL}")
        );
        let bad = Links {
            evm_explorer: "ftp://x/".to_owned(),
            ..Links::default()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn a_long_channel_list_is_cut_to_fit_with_the_rest_counted() {
        let callers: Vec<i64> = (1..=2_000).map(|i| -1_000_000 - i).collect();
        // Names that grow fourfold when escaped.
        let names: Vec<Option<String>> =
            callers.iter().map(|c| Some(format!("<&>{c}<&>"))).collect();
        let r = call_alert(&call(SOL, callers.clone()), &names, &Links::default());
        let len = units(&r.text);
        assert!(len <= MAX_MESSAGE_UNITS, "{len} units");
        assert!(len > MAX_MESSAGE_UNITS - 80, "cut too early: {len} units");
        let shown = r.text.matches("&lt;&amp;&gt;-").count();
        let rest: usize = r
            .text
            .split(" and ")
            .last()
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("an 'and N more channels' tail");
        assert_eq!(shown + rest, callers.len());
        assert!(r.text.contains(" more channels\n<a href"));
        assert!(r.text.contains("Called by <b>2000</b> channels"));

        // Astral characters count twice (UTF-16), as Telegram counts them.
        let emoji: Vec<Option<String>> = callers.iter().map(|_| Some("🚀".repeat(60))).collect();
        let r = call_alert(&call(SOL, callers), &emoji, &Links::default());
        assert!(units(&r.text) <= MAX_MESSAGE_UNITS);
        assert!(r.text.chars().count() < MAX_MESSAGE_UNITS / 2 + 200);
    }

    #[test]
    fn a_list_that_fits_has_no_tail() {
        let r = call_alert(&call(SOL, vec![-1]), &[Some("Solo")], &Links::default());
        assert!(r.text.contains("Called by <b>1</b> channel: Solo\n"));
        assert!(!r.text.contains(" more channel"));
    }

    #[test]
    fn a_caption_is_measured_after_the_entities_are_parsed() {
        let fits = format!("<b>{}</b>", "a".repeat(MAX_CAPTION_UNITS));
        assert!(fits_caption(&fits));
        assert!(!fits_caption(&format!("{fits}b")));
        // Entities count as the one character they show.
        let escaped = "&amp;".repeat(MAX_CAPTION_UNITS);
        assert!(fits_caption(&escaped));
        assert!(!fits_caption(&format!("{escaped}&lt;")));
        // Telegram counts UTF-16 units: an emoji is two.
        assert!(!fits_caption(&"🚀".repeat(MAX_CAPTION_UNITS / 2 + 1)));
    }

    #[test]
    fn multiplier_alerts_show_the_multiple() {
        let a = MultiplierAlert {
            seq: 1,
            chat_id: 42,
            token: SOL.parse().unwrap(),
            at: 0,
            threshold: 5.0,
            multiplier: 5.06,
            fdv_at_call: 240_000.0,
            fdv_usd: 1_214_400.0,
            tracking_started: 0,
        };
        let r = multiplier_alert(&a, &Links::default());
        assert!(r.text.starts_with("🚀 <b>5x</b> · Solana\n"), "{}", r.text);
        assert!(
            r.text
                .contains("Market value: <b>$1.2M</b>, <b>5.1x</b> since the call at $240K\n")
        );
        assert_eq!(r.buttons.len(), 2);
        let half = MultiplierAlert {
            threshold: 1.5,
            ..a
        };
        assert!(
            multiplier_alert(&half, &Links::default())
                .text
                .starts_with("🚀 <b>1.5x</b>")
        );
    }
}
