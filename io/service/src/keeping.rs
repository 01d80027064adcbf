//! What the service's [`Keeper`](crate::keeper::Keeper) keeps with: the
//! outbox and sender (with a bot), the audit queue and write-behind, the
//! ingest's acknowledger, and the figures.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use callwatch_ingest::stream::Acker;
use callwatch_streams::EntryId;
use callwatch_telegram::sender::Message;
use engine::effect::Effect;

use crate::alerts::Alerts;
use crate::keeper::{Call, Keep, Price, SenderClosed};
use crate::metrics::Live;
use crate::persist::Persistence;

/// The service's [`Keep`].
#[derive(Debug)]
pub struct ServiceKeep {
    /// `None` without a Telegram token: alerts are kept and audited only.
    pub alerts: Option<Alerts>,
    pub persist: Arc<Persistence>,
    pub acker: Acker,
    pub live: Arc<Live>,
    /// Where every call kept goes for the price sources, when they run.
    pub sources: Option<tokio::sync::mpsc::Sender<Call>>,
}

impl Keep for ServiceKeep {
    async fn render(&self, effects: &[Effect]) -> Vec<Message> {
        match &self.alerts {
            Some(alerts) => alerts.render(effects).await,
            None => Vec::new(),
        }
    }

    async fn outbox(&self, messages: &[Message]) -> Result<Vec<EntryId>, String> {
        let alerts = self.alerts.as_ref().expect("messages come from the alerts");
        alerts.outbox(messages).await.map_err(|e| e.to_string())
    }

    async fn send(&self, messages: Vec<(Message, EntryId)>) -> Result<(), SenderClosed> {
        let alerts = self.alerts.as_ref().expect("messages come from the alerts");
        alerts.send(messages).await
    }

    async fn audit(&self, effects: &[Effect]) {
        self.persist.push_audit(effects).await;
    }

    async fn state(&self, effects: &[Effect]) {
        self.persist.record_state(effects).await;
    }

    async fn call(&self, call: &Call) {
        self.persist
            .record_call(call.token, call.channel_id, call.at, call.fdv_usd)
            .await;
        if let Some(sources) = &self.sources
            && sources.try_send(*call).is_err()
        {
            self.live.calls_not_recorded.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn prices(&self, prices: &[Price]) {
        if let Some(alerts) = &self.alerts {
            alerts.prices(prices);
        }
    }

    fn settled(&self) -> bool {
        self.persist.settled()
    }

    fn ack_through(&self, seq: u64) {
        self.acker.ack_through(seq);
        self.live.acked_through.store(seq, Ordering::Relaxed);
    }

    fn kept(&self, seq: u64, effects: &[Effect], alert_ages_ms: &[u64]) {
        for effect in effects {
            match effect {
                Effect::CallAlert(_) => self.live.alerts_call.fetch_add(1, Ordering::Relaxed),
                Effect::MultiplierAlert(_) => {
                    self.live.alerts_multiplier.fetch_add(1, Ordering::Relaxed)
                }
                Effect::Progress(_) => continue,
            };
        }
        if !alert_ages_ms.is_empty() {
            let mut h = self.live.alert_latency.lock();
            for &ms in alert_ages_ms {
                let _ = h.record(ms * 1000);
                self.live.alert_latency_seconds.observe(ms as f64 / 1e3);
            }
        }
        self.live.applied_through.store(seq, Ordering::Relaxed);
    }
}
