//! `/resolve` (admins): credits a payment that matched no quote (see
//! `/unmatched`) to a chat as a plan, recorded as the admin's decision,
//! once (a payment resolved before is refused, naming who resolved it), and
//! tells that chat.

use engine::event::ChatId;

use super::text::{esc, when};
use super::{Answer, Ask, Backend, Command, Reply, args};

pub(super) fn parse(args: &[&str]) -> Result<Command, String> {
    let usage = "Usage: <code>/resolve SIGNATURE CHAT PLAN</code>: credit an unmatched \
                 payment (see /unmatched) to a chat as a plan.";
    let [signature, chat, plan] = args else {
        return Err(usage.to_owned());
    };
    let signature_ok = (32..=100).contains(&signature.len())
        && signature.bytes().all(|b| b.is_ascii_alphanumeric());
    if !signature_ok {
        return Err(format!(
            "{} is not a transaction signature.\n{usage}",
            esc(signature)
        ));
    }
    let chat_id = args::chat_id(chat, usage)?;
    Ok(Command::Resolve {
        signature: (*signature).to_owned(),
        chat_id,
        plan: plan.to_ascii_lowercase(),
    })
}

pub(super) async fn answer<B: Backend>(
    ask: &Ask<'_, B>,
    signature: &str,
    chat_id: ChatId,
    plan: &str,
) -> Answer {
    let applied = ask
        .b
        .resolve(ask.user, signature, chat_id, plan, ask.now)
        .await?;
    let mut text = format!(
        "Credited to <code>{chat_id}</code> as {}: subscribed until {}. The chat is told.",
        esc(plan),
        when(applied.expires_at)
    );
    if !applied.announced {
        text.push_str(
            "\n\nThe credit is recorded, but I could not tell the alerting engine yet \
             (storage is unavailable). In a minute, send the same /resolve again to finish: \
             it credits nothing more.",
        );
    }
    Ok(Reply::text(text))
}
