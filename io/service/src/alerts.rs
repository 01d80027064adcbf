//! Alerts on their way to Telegram: rendered with the channels' names (a
//! multiplier alert with its chart, see [`crate::charts`]), kept in the
//! outbox (`callwatch_telegram::outbox`) until the sender answers for them,
//! and queued for the sender. At start, whatever a crash left in the outbox
//! is queued first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use anyhow::Context;
use callwatch_common::keys::outbox_key;
use callwatch_common::records::AlertKind;
use callwatch_streams::Conn;
use callwatch_streams::EntryId;
use callwatch_telegram::BotToken;
use callwatch_telegram::charts_off::ChartsOff;
use callwatch_telegram::config::TelegramConfig;
use callwatch_telegram::format::{self, Links};
use callwatch_telegram::names::{ChannelNames, NamesConfig};
use callwatch_telegram::outbox::Outbox;
use callwatch_telegram::sender::{self, Message, Report, SenderTask, SharedLimits};
use engine::effect::{Effect, MultiplierAlert};
use engine::token::Token;
use parking_lot::Mutex;

use crate::charts::Charts;
use crate::keeper::{Price, SenderClosed};

/// An alert's identity: token, kind, threshold bits, time.
type AlertId = (Token, AlertKind, u64, i64);

fn alert_id(tag: &sender::Tag) -> Option<AlertId> {
    match tag {
        sender::Tag::Alert(k) => Some((k.token, k.kind, k.threshold.to_bits(), k.at)),
        sender::Tag::Reply(_) => None,
    }
}

/// Outbox entry ids of the alerts queued for Telegram, by chat and alert,
/// so that an answer from the sender deletes the right entry.
#[derive(Debug, Default)]
struct Queued {
    ids: HashMap<(i64, AlertId), VecDeque<EntryId>>,
}

impl Queued {
    fn queued(&mut self, chat: i64, tag: &sender::Tag, id: EntryId) {
        if let Some(a) = alert_id(tag) {
            self.ids.entry((chat, a)).or_default().push_back(id);
        }
    }

    /// Whether an alert like this one is queued for the chat already.
    fn holds(&self, chat: i64, tag: &sender::Tag) -> bool {
        alert_id(tag).is_some_and(|a| self.ids.contains_key(&(chat, a)))
    }

    /// The entry to delete for an answered message.
    fn answered(&mut self, chat: i64, tag: &sender::Tag) -> Vec<EntryId> {
        let Some(a) = alert_id(tag) else {
            return Vec::new();
        };
        let key = (chat, a);
        let id = self.ids.get_mut(&key).and_then(VecDeque::pop_front);
        if self.ids.get(&key).is_some_and(VecDeque::is_empty) {
            self.ids.remove(&key);
        }
        id.into_iter().collect()
    }

    /// Every entry of a chat whose messages the sender dropped.
    fn chat_gone(&mut self, chat: i64) -> Vec<EntryId> {
        let keys: Vec<_> = self.ids.keys().filter(|k| k.0 == chat).copied().collect();
        keys.into_iter()
            .flat_map(|k| self.ids.remove(&k).unwrap_or_default())
            .collect()
    }
}

/// The Telegram side of alerts, shared by the keeper and the commands.
#[derive(Debug, Clone)]
pub struct Alerts {
    pub sender: sender::Sender,
    pub names: Arc<ChannelNames>,
    outbox: Outbox,
    con: Conn,
    queued: Arc<Mutex<Queued>>,
    links: Links,
    /// Charts of multiplier alerts, when they are on; their price
    /// histories also draw the dashboard's sparklines.
    pub charts: Option<Arc<Charts>>,
    charts_off: ChartsOff,
}

/// The tasks behind [`Alerts`]: the sender, and the reader of its reports
/// that deletes answered alerts from the outbox.
#[derive(Debug)]
pub struct AlertTasks {
    pub sender: SenderTask,
    pub reports: tokio::task::JoinHandle<()>,
}

impl Alerts {
    /// Starts the sender and its report reader; call inside the runtime.
    /// The sender keeps Telegram's limits with every other process of the
    /// bot, in this Redis under `prefix`, unless `telegram.limits` says
    /// `process`.
    pub fn start(
        telegram: &TelegramConfig,
        prefix: &str,
        con: &Conn,
        charts: Option<Arc<Charts>>,
    ) -> anyhow::Result<(Alerts, AlertTasks)> {
        let token = BotToken::new(telegram.token.expose());
        let (sender, reports, task) = if telegram.shared_limits() {
            let shared = SharedLimits::new(con.clone(), prefix, &token);
            sender::Sender::start_shared(token, telegram.sender(), shared)?
        } else {
            sender::Sender::start(token, telegram.sender())?
        };
        let names = Arc::new(ChannelNames::new(NamesConfig::under(prefix), con.clone()));
        let alerts = Alerts {
            sender,
            names,
            outbox: Outbox::new(outbox_key(prefix)),
            con: con.clone(),
            queued: Arc::default(),
            links: Links::default(),
            charts,
            charts_off: ChartsOff::new(prefix),
        };
        let reading = tokio::spawn(alerts.clone().read_reports(reports));
        Ok((
            alerts,
            AlertTasks {
                sender: task,
                reports: reading,
            },
        ))
    }

    /// Deletes from the outbox what the sender answered for: sent, given
    /// up, or for a chat that cannot be written to. If Redis is down the
    /// entry stays, and is sent again after a restart (a duplicate, never a
    /// loss).
    async fn read_reports(self, mut reports: tokio::sync::mpsc::Receiver<Report>) {
        while let Some(report) = reports.recv().await {
            let done = match report {
                Report::Sent { chat_id, tag, .. } => self.queued.lock().answered(chat_id, &tag),
                Report::Failed {
                    chat_id,
                    tag,
                    error,
                } => {
                    tracing::error!(chat_id, error = %error, "Telegram message given up");
                    self.queued.lock().answered(chat_id, &tag)
                }
                Report::Inactive {
                    chat_id, dropped, ..
                } => {
                    tracing::info!(chat_id, dropped, "chat unreachable; its alerts dropped");
                    self.queued.lock().chat_gone(chat_id)
                }
            };
            if let Err(e) = self.outbox.remove(&mut self.con.clone(), &done).await {
                tracing::warn!(error = %e, "could not delete answered alerts from the outbox");
            }
        }
    }

    /// Queues what a crash left in the outbox, first of all; an entry that
    /// cannot be read back is logged and deleted.
    pub async fn restore(&self) -> anyhow::Result<()> {
        let mut con = self.con.clone();
        let left = self
            .outbox
            .load(&mut con)
            .await
            .context("reading the Telegram outbox")?;
        let mut broken = Vec::new();
        for (id, message) in left {
            match message {
                Ok(m) => {
                    self.queue_one(m, id)
                        .await
                        .map_err(|_| anyhow::anyhow!("the Telegram sender closed at start"))?;
                }
                Err(why) => {
                    tracing::error!(%id, %why, "unreadable outbox entry deleted");
                    broken.push(id);
                }
            }
        }
        self.outbox.remove(&mut con, &broken).await?;
        Ok(())
    }

    /// The messages of `effects`' alerts, leaving out those queued already
    /// (from the outbox, after a restart); multiplier alerts with their
    /// charts, for the chats that have them on.
    pub async fn render(&self, effects: &[Effect]) -> Vec<Message> {
        let mut messages = Vec::new();
        let mut charted = Vec::new();
        for effect in effects.iter().filter(|e| e.is_alert()) {
            let callers = match effect {
                Effect::CallAlert(a) => a.callers.as_slice(),
                _ => &[],
            };
            let resolved = self.names.resolve(callers).await;
            if let Some(rendered) = format::alert(effect, &resolved, &self.links)
                && let Some(message) = Message::alert(effect, rendered)
                && !self.queued.lock().holds(message.chat_id, &message.tag)
            {
                if let Effect::MultiplierAlert(a) = effect {
                    charted.push((messages.len(), a));
                }
                messages.push(message);
            }
        }
        if let Some(charts) = &self.charts {
            charts.track(effects);
            self.attach_charts(charts, &mut messages, &charted).await;
        }
        messages
    }

    /// Draws the charts of the multiplier alerts `charted` (each with its
    /// message's index) whose chats have them on, and attaches those drawn
    /// in time. If Redis cannot say which chats turned charts off, none
    /// gets one: the alerts go as text.
    async fn attach_charts(
        &self,
        charts: &Charts,
        messages: &mut [Message],
        charted: &[(usize, &MultiplierAlert)],
    ) {
        if charted.is_empty() {
            return;
        }
        let chats: Vec<i64> = charted.iter().map(|(_, a)| a.chat_id).collect();
        let off = match self
            .charts_off
            .off_among(&mut self.con.clone(), &chats)
            .await
        {
            Ok(off) => off,
            Err(e) => {
                tracing::warn!(error = %e, "which chats have charts is unknown; alerts go as text");
                return;
            }
        };
        let wanted: Vec<&(usize, &MultiplierAlert)> = charted
            .iter()
            .filter(|(_, a)| !off.contains(&a.chat_id))
            .collect();
        let alerts: Vec<&MultiplierAlert> = wanted.iter().map(|(_, a)| *a).collect();
        let photos = charts.draw(&alerts).await;
        for ((i, _), photo) in wanted.into_iter().zip(photos) {
            if let Some(photo) = photo {
                messages[*i].attach(photo);
            }
        }
    }

    /// A batch's prices, for the charts' histories.
    pub fn prices(&self, prices: &[Price]) {
        if let Some(charts) = &self.charts {
            charts.prices(prices);
        }
    }

    /// Appends `messages` to the outbox.
    pub async fn outbox(&self, messages: &[Message]) -> callwatch_streams::Result<Vec<EntryId>> {
        self.outbox.push(&mut self.con.clone(), messages).await
    }

    /// Queues outboxed messages for the sender.
    pub async fn send(&self, messages: Vec<(Message, EntryId)>) -> Result<(), SenderClosed> {
        for (message, id) in messages {
            self.queue_one(message, id).await?;
        }
        Ok(())
    }

    /// Queues one outboxed message. An alert to a chat that holds as many
    /// as a chat may (`chat_alert_cap`, a backlog of many minutes) is
    /// dropped: deleted from the outbox, logged, and counted by the sender
    /// (`callwatch_telegram_messages_total{outcome="chat_full"}`).
    async fn queue_one(&self, message: Message, id: EntryId) -> Result<(), SenderClosed> {
        self.queued.lock().queued(message.chat_id, &message.tag, id);
        match self.sender.send(message).await {
            Ok(()) => Ok(()),
            Err(sender::Rejected::ChatFull(m)) => {
                tracing::warn!(
                    chat_id = m.chat_id,
                    "alert dropped: its chat has a full queue"
                );
                let done = self.queued.lock().answered(m.chat_id, &m.tag);
                if let Err(e) = self.outbox.remove(&mut self.con.clone(), &done).await {
                    tracing::warn!(error = %e, "could not delete a dropped alert from the outbox");
                }
                Ok(())
            }
            Err(_) => Err(SenderClosed),
        }
    }
}
