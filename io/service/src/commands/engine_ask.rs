//! Commands' questions to the engine, bounded. Each question is a scan of
//! a shard's state, made on the shard's thread between two batches of
//! events, so the questions take turns: one at a time, at least
//! [`QUESTION_SPACING`] apart. A shard then meets at most one question
//! per batch and spends at most one scan in twenty of each second on
//! them, however many chats ask. `/top`'s leaderboard, the same for every
//! chat, is computed at most once per [`BOARD_FRESH_FOR`] and shared.

use std::time::Duration;

use callwatch_telegram::commands::BackendError;
use engine::board::{self, ChannelScore};
use engine::event::ChatId;
use engine::shard::Holding;
use engine::time::Nanos;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use super::unavailable;
use crate::reader::EngineQuery;

/// How long a command waits for the engine, its turn included, before it
/// apologises.
const ENGINE_WAIT: Duration = Duration::from_secs(5);
/// The least time between two questions to the engine (20 a second).
pub const QUESTION_SPACING: Duration = Duration::from_millis(50);
/// How long a computed leaderboard is served before it is computed again.
pub const BOARD_FRESH_FOR: Duration = Duration::from_secs(60);

/// A leaderboard computed, and when.
#[derive(Debug)]
struct Board {
    at: Instant,
    rows: Vec<ChannelScore>,
}

/// The commands' side of the engine's question channel.
#[derive(Debug)]
pub struct EngineAsk {
    queries: mpsc::Sender<EngineQuery>,
    /// When the last question was answered; held while one is asked.
    turn: Mutex<Option<Instant>>,
    board: Mutex<Option<Board>>,
}

impl EngineAsk {
    pub fn new(queries: mpsc::Sender<EngineQuery>) -> EngineAsk {
        EngineAsk {
            queries,
            turn: Mutex::new(None),
            board: Mutex::new(None),
        }
    }

    /// Asks one question in its turn, within [`ENGINE_WAIT`] in all.
    async fn ask<T>(
        &self,
        query: impl FnOnce(oneshot::Sender<T>) -> EngineQuery,
    ) -> Result<T, BackendError> {
        let deadline = Instant::now() + ENGINE_WAIT;
        let busy = || unavailable("engine", "no answer in 5 s (busy)");
        let mut last = tokio::time::timeout_at(deadline, self.turn.lock())
            .await
            .map_err(|_| busy())?;
        if let Some(last) = *last {
            tokio::time::sleep_until((last + QUESTION_SPACING).min(deadline)).await;
        }
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.queries
                .send(query(tx))
                .await
                .map_err(|_| unavailable("engine", "stopping"))?;
            rx.await
                .map_err(|_| unavailable("engine", "stopped before answering"))
        };
        let answer = tokio::time::timeout_at(deadline, asked).await;
        *last = Some(Instant::now());
        answer.map_err(|_| busy())?
    }

    /// A chat's tracked entries.
    pub async fn tracked(&self, chat_id: ChatId) -> Result<Vec<Holding>, BackendError> {
        self.ask(|reply| EngineQuery::Tracked { chat_id, reply })
            .await
    }

    /// The channels ranked by their calls since `since`: the board
    /// computed less than [`BOARD_FRESH_FOR`] ago if there is one (its
    /// window then ends up to that much earlier).
    pub async fn leaderboard(
        &self,
        since: Nanos,
        limit: usize,
    ) -> Result<Vec<ChannelScore>, BackendError> {
        let mut board = self.board.lock().await;
        if let Some(b) = board.as_ref()
            && b.at.elapsed() < BOARD_FRESH_FOR
        {
            return Ok(b.rows.iter().take(limit).cloned().collect());
        }
        let outcomes = self
            .ask(|reply| EngineQuery::Outcomes { since, reply })
            .await?;
        let rows = board::leaderboard(outcomes, limit);
        *board = Some(Board {
            at: Instant::now(),
            rows: rows.clone(),
        });
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in engine that answers every question with nothing, after
    /// `work`, and counts them and the most in hand at once.
    fn engine(work: Duration) -> (EngineAsk, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (tx, mut rx) = mpsc::channel(64);
        let (asked, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, m) = (Arc::clone(&asked), Arc::clone(&most));
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                a.fetch_add(1, Ordering::SeqCst);
                m.fetch_max(1 + rx.len(), Ordering::SeqCst);
                tokio::time::sleep(work).await;
                match q {
                    EngineQuery::Tracked { reply, .. } => drop(reply.send(Vec::new())),
                    EngineQuery::Outcomes { reply, .. } => drop(reply.send(Vec::new())),
                    EngineQuery::Near { reply, .. } => drop(reply.send(Vec::new())),
                }
            }
        });
        (EngineAsk::new(tx), asked, most)
    }

    #[tokio::test(start_paused = true)]
    async fn the_board_is_computed_once_while_fresh() {
        let (ask, asked, _) = engine(Duration::from_millis(1));
        for _ in 0..50 {
            ask.leaderboard(0, 10).await.unwrap();
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        tokio::time::sleep(BOARD_FRESH_FOR).await;
        ask.leaderboard(0, 10).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn questions_take_turns_spaced_apart() {
        let (ask, asked, most) = engine(Duration::from_millis(1));
        let ask = Arc::new(ask);
        let started = Instant::now();
        let all: Vec<_> = (0..20)
            .map(|chat| {
                let ask = Arc::clone(&ask);
                tokio::spawn(async move { ask.tracked(chat).await })
            })
            .collect();
        for one in all {
            one.await.unwrap().unwrap();
        }
        assert_eq!(asked.load(Ordering::SeqCst), 20);
        assert_eq!(most.load(Ordering::SeqCst), 1, "two questions at once");
        assert!(started.elapsed() >= QUESTION_SPACING * 19);
    }

    #[tokio::test(start_paused = true)]
    async fn a_question_that_cannot_get_its_turn_gives_up_in_time() {
        let (ask, _, _) = engine(Duration::from_secs(30));
        let ask = Arc::new(ask);
        let first = tokio::spawn({
            let ask = Arc::clone(&ask);
            async move { ask.tracked(1).await }
        });
        tokio::task::yield_now().await;
        let started = Instant::now();
        assert!(ask.tracked(2).await.is_err());
        assert!(started.elapsed() <= ENGINE_WAIT);
        assert!(first.await.unwrap().is_err(), "30 s of work is over 5 s");
    }
}
