//! `/mcap`: the market value range of the tokens a chat is alerted to, in
//! USD, with `k`, `m` and `b` for people who think in those.

use engine::event::SettingsPatch;

use super::text::{esc, range, usd};
use super::{Answer, Ask, Backend, Command, Reply};

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    let usage = "Usage: <code>/mcap MIN MAX</code> in USD, with k, m or b for \
                 thousands, millions, billions; <code>any</code> for no upper bound. \
                 Example: <code>/mcap 50k 5m</code>.";
    let [min, max] = args else {
        return Err(usage.to_owned());
    };
    let min_v = parse_usd(min)
        .filter(|v| *v >= 0.0)
        .ok_or_else(|| format!("{} is not an amount.\n{usage}", esc(min)))?;
    let max_v = if ["any", "none", "-", "inf", "∞"].contains(&&*max.to_ascii_lowercase()) {
        None
    } else {
        Some(
            parse_usd(max)
                .filter(|v| *v > 0.0)
                .ok_or_else(|| format!("{} is not an amount above 0.\n{usage}", esc(max)))?,
        )
    };
    if let Some(max_v) = max_v
        && min_v > max_v
    {
        return Err(format!(
            "The minimum ({}) is above the maximum ({}).\n{usage}",
            usd(min_v),
            usd(max_v)
        ));
    }
    Ok(Command::Mcap {
        min: min_v,
        max: max_v,
    })
}

/// `50k`, `1.5M`, `$2b`, `1,000,000` → dollars.
fn parse_usd(text: &str) -> Option<f64> {
    let t = text.trim().trim_start_matches('$').replace(['_', ','], "");
    let (num, scale) = match t.chars().last()?.to_ascii_lowercase() {
        'k' => (&t[..t.len() - 1], 1e3),
        'm' => (&t[..t.len() - 1], 1e6),
        'b' => (&t[..t.len() - 1], 1e9),
        _ => (&t[..], 1.0),
    };
    let v = num.parse::<f64>().ok()? * scale;
    v.is_finite().then_some(v)
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>, min: f64, max: Option<f64>) -> Answer {
    let patch = SettingsPatch {
        min_fdv_usd: Some(min),
        // The contract has no "unbounded" value; the largest finite one is.
        max_fdv_usd: Some(max.unwrap_or(f64::MAX)),
        ..SettingsPatch::default()
    };
    ask.save(&patch).await?;
    Ok(Reply::text(format!(
        "Done: market value {}.",
        range(min, max)
    )))
}
