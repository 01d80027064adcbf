//! `/subscribe`: the plans on offer, or a quote for one: what to pay, to
//! which address, with which reference, until when.

use std::fmt::Write as _;

use super::text::{esc, when};
use super::{Answer, Ask, Backend, Command, Reply};

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    match args {
        [] => Ok(Command::Subscribe(None)),
        [plan] => Ok(Command::Subscribe(Some(plan.to_ascii_lowercase()))),
        _ => Err("Usage: <code>/subscribe</code> for the plans, or \
                  <code>/subscribe PLAN</code> to pay for one."
            .to_owned()),
    }
}

pub(super) async fn answer<B: Backend>(ask: &Ask<'_, B>, plan: Option<&str>) -> Answer {
    match plan {
        None => Ok(plans(ask.b)),
        Some(plan) => quote(ask, plan).await,
    }
}

fn plans<B: Backend>(b: &B) -> Reply {
    let plans = b.plans();
    if plans.is_empty() {
        return Reply::text("Payments are not open yet. An admin can /grant you days.");
    }
    let mut text = String::from("<b>Plans</b>\n");
    for p in &plans {
        let _ = writeln!(
            text,
            "<b>{}</b>: {} days for {} SOL — <code>/subscribe {}</code>",
            esc(&p.name),
            p.days,
            esc(&p.price_sol),
            esc(&p.name)
        );
    }
    text.push_str("\nA renewal adds to the time you have left.");
    Reply::text(text)
}

async fn quote<B: Backend>(ask: &Ask<'_, B>, plan: &str) -> Answer {
    let q = ask.b.quote(ask.chat, plan, ask.now).await?;
    // Telegram opens only http(s) and tg links from buttons and anchors,
    // so the wallet link is text to copy.
    Ok(Reply::text(format!(
        "<b>{}</b>: {} days for <b>{} SOL</b>.\n\nSend exactly {} SOL to\n\
         <code>{}</code>\nwith the reference key\n<code>{}</code>\n\
         or open this link in your wallet:\n<code>{}</code>\n\n\
         This quote is valid until {}. I confirm here once the payment is \
         finalized on-chain.",
        esc(&q.plan),
        q.days,
        esc(&q.amount_sol),
        esc(&q.amount_sol),
        esc(&q.address),
        esc(&q.reference),
        esc(&q.pay_url),
        when(q.expires_at)
    )))
}
