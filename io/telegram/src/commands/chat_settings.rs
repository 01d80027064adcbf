//! A chat's settings as the bot keeps them beside the engine's copy, so
//! that a command can answer from, and add to, what the chat last set.

use engine::event::{ChannelId, SettingsPatch};
use serde::{Deserialize, Serialize};

/// A chat's settings as the bot keeps them (the engine's defaults until
/// the chat changes one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatSettings {
    pub min_callers: u32,
    pub lookback_minutes: u32,
    pub min_fdv_usd: f64,
    /// `None`: no upper bound.
    pub max_fdv_usd: Option<f64>,
    /// Sorted; empty follows every channel.
    pub follow: Vec<ChannelId>,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            min_callers: 2,
            lookback_minutes: 60,
            min_fdv_usd: 0.0,
            max_fdv_usd: None,
            follow: Vec::new(),
        }
    }
}

impl ChatSettings {
    /// The settings with `patch` applied, as the engine applies it.
    pub fn patched(&self, patch: &SettingsPatch) -> ChatSettings {
        ChatSettings {
            min_callers: patch.min_callers.unwrap_or(self.min_callers),
            lookback_minutes: patch.lookback_minutes.unwrap_or(self.lookback_minutes),
            min_fdv_usd: patch.min_fdv_usd.unwrap_or(self.min_fdv_usd),
            max_fdv_usd: match patch.max_fdv_usd {
                Some(v) if v < f64::MAX => Some(v),
                Some(_) => None,
                None => self.max_fdv_usd,
            },
            follow: patch.follow.clone().unwrap_or_else(|| self.follow.clone()),
        }
    }
}
