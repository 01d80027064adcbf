//! Settings are for subscribers. Anyone can write to the bot, and every
//! settings change is an entry on the chats stream and a chat in every
//! engine shard, so a command that changes settings is refused to a chat
//! without an active subscription, with the way to get one. Commands that
//! only read stay open to everyone.

use super::text::when;
use super::{Ask, Backend, BackendError};

/// `Ok` when the asking chat's subscription runs past `now`; otherwise the
/// refusal, which points to `/subscribe`.
pub(super) async fn check<B: Backend>(ask: &Ask<'_, B>) -> Result<(), BackendError> {
    match ask.b.subscription(ask.chat).await? {
        Some(s) if s.expires_at > ask.now => Ok(()),
        Some(s) => Err(BackendError::Refused(format!(
            "This chat's subscription expired {}: settings can be changed while it runs. \
             /subscribe to renew.",
            when(s.expires_at)
        ))),
        None => Err(BackendError::Refused(
            "Settings are for subscribers, and this chat has no subscription. \
             /subscribe shows the plans."
                .to_owned(),
        )),
    }
}
