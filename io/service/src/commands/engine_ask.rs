//! Commands' questions to the engine, bounded. Each question is a scan of
//! a shard's state, made on the shard's thread between two batches of
//! events, so the questions take turns: one at a time, at least
//! [`QUESTION_SPACING`] apart. A shard then meets at most one question
//! per batch and spends at most one scan in twenty of each second on
//! them, however many chats ask. A leaderboard, the same for every chat,
//! is computed at most once per [`BOARD_FRESH_FOR`] for each window and
//! shared by `/top` and the dashboard, which filter and cut the same
//! ranking: their numbers agree.

use std::collections::HashMap;
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
/// Leaderboards kept, one per window: the callers ask for a few fixed
/// windows (`/top`'s week, the dashboard's periods); past this many the
/// oldest is dropped.
const BOARDS_KEPT: usize = 8;

/// A leaderboard computed, and when: every channel, ranked.
#[derive(Debug)]
struct Board {
    at: Instant,
    rows: Vec<ChannelScore>,
}

impl Board {
    /// The first `limit` rows of channels with at least `min_calls` calls:
    /// the rows a board computed with that filter would have, as the
    /// ranking does not depend on which channels are in it.
    fn rows(&self, min_calls: u32, limit: usize) -> Vec<ChannelScore> {
        self.rows
            .iter()
            .filter(|s| s.calls >= min_calls)
            .take(limit)
            .copied()
            .collect()
    }
}

/// The commands' side of the engine's question channel.
#[derive(Debug)]
pub struct EngineAsk {
    queries: mpsc::Sender<EngineQuery>,
    /// When the last question was answered; held while one is asked.
    turn: Mutex<Option<Instant>>,
    /// By window, in nanoseconds.
    boards: Mutex<HashMap<Nanos, Board>>,
}

impl EngineAsk {
    pub fn new(queries: mpsc::Sender<EngineQuery>) -> EngineAsk {
        EngineAsk {
            queries,
            turn: Mutex::new(None),
            boards: Mutex::new(HashMap::new()),
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

    /// The channels ranked by their calls over the `window` that ends at
    /// `end`, those with fewer than `min_calls` left out, the first
    /// `limit`: from the board of that window computed less than
    /// [`BOARD_FRESH_FOR`] ago if there is one (its window then ends up to
    /// that much earlier).
    pub async fn leaderboard(
        &self,
        end: Nanos,
        window: Nanos,
        min_calls: u32,
        limit: usize,
    ) -> Result<Vec<ChannelScore>, BackendError> {
        let mut boards = self.boards.lock().await;
        if let Some(b) = boards.get(&window)
            && b.at.elapsed() < BOARD_FRESH_FOR
        {
            return Ok(b.rows(min_calls, limit));
        }
        let since = end.saturating_sub(window);
        let outcomes = self
            .ask(|reply| EngineQuery::Outcomes { since, reply })
            .await?;
        let board = Board {
            at: Instant::now(),
            rows: board::leaderboard(outcomes, usize::MAX),
        };
        let rows = board.rows(min_calls, limit);
        if boards.len() >= BOARDS_KEPT
            && !boards.contains_key(&window)
            && let Some(oldest) = boards.iter().min_by_key(|(_, b)| b.at).map(|(w, _)| *w)
        {
            boards.remove(&oldest);
        }
        boards.insert(window, board);
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
        engine_with(work, Vec::new())
    }

    /// The same, answering questions for outcomes with `outcomes`.
    fn engine_with(
        work: Duration,
        outcomes: Vec<engine::shard::CallOutcome>,
    ) -> (EngineAsk, Arc<AtomicUsize>, Arc<AtomicUsize>) {
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
                    EngineQuery::Outcomes { reply, .. } => drop(reply.send(outcomes.clone())),
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
            ask.leaderboard(WEEK, WEEK, 1, 10).await.unwrap();
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        tokio::time::sleep(BOARD_FRESH_FOR).await;
        ask.leaderboard(WEEK, WEEK, 1, 10).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    const WEEK: Nanos = 7 * 24 * 3600 * engine::time::NANOS_PER_SEC;

    #[tokio::test(start_paused = true)]
    async fn each_window_has_its_board_and_the_filter_comes_before_the_cut() {
        let outcome = |channel_id, multiple| engine::shard::CallOutcome {
            token: "So11111111111111111111111111111111111111112"
                .parse()
                .unwrap(),
            channel_id,
            at: 0,
            fdv_at_call: 1.0,
            peak_fdv: multiple,
        };
        // -1 is first on one call; -2 and -3 have two calls each.
        let (ask, asked, _) = engine_with(
            Duration::from_millis(1),
            vec![
                outcome(-1, 9.0),
                outcome(-2, 3.0),
                outcome(-2, 1.0),
                outcome(-3, 1.0),
                outcome(-3, 1.5),
            ],
        );
        let ids = |rows: Vec<ChannelScore>| rows.iter().map(|r| r.channel_id).collect::<Vec<_>>();
        assert_eq!(
            ids(ask.leaderboard(WEEK, WEEK, 1, 2).await.unwrap()),
            [-1, -2]
        );
        assert_eq!(
            ids(ask.leaderboard(WEEK, WEEK, 2, 2).await.unwrap()),
            [-2, -3]
        );
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one board for both");
        ask.leaderboard(WEEK, WEEK / 7, 1, 2).await.unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "another window, another board"
        );
        for w in 1..=2 * BOARDS_KEPT as i64 {
            ask.leaderboard(WEEK, w, 1, 1).await.unwrap();
        }
        assert!(ask.boards.lock().await.len() <= BOARDS_KEPT);
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
