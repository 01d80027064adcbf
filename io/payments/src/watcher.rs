//! The payment watcher: reads the receiving address's transactions, oldest
//! first from where it stopped, and credits those that pay a quote.
//!
//! Signatures are listed at `confirmed`, so a payment is seen (and reported
//! [`Outcome::Pending`]) as soon as the cluster has voted on it; it is
//! fetched and credited only at `finalized`, which no fork can undo. The
//! cursor, kept in PostgreSQL, is the newest signature below which every
//! transaction has been handled: one still pending holds it back, so a
//! restart or an outage never steps over a payment. Everything a poll does
//! is idempotent (signatures are unique in every table it writes), so
//! reading a transaction twice credits it once.
//!
//! A transaction can be listed and never finalize: its block was on a fork
//! the cluster dropped, or the node pruned it from its history. Held for
//! ever, it would hold the cursor, and every payment after it, for ever.
//! So once the cluster's finalized slot is `finality_timeout_slots` past
//! its slot (the chain's own clock: no local clock is compared with chain
//! times, and a restart does not start the wait again), it is recorded in
//! `payments_dropped`, counted ([`WatcherCounters::dropped`]), logged,
//! reported as [`Outcome::Dropped`] for the admins (a pruned one may have
//! paid), and the cursor moves past it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use engine::time::{NANOS_PER_SEC, Nanos};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use super::config::lamports_to_sol;
use super::matching::{Reason, Verdict, judge, received};
use callwatch_common::backoff::Backoff;

use super::rpc::{RpcClient, SignatureInfo, SignaturesQuery, Transaction};
use super::{Ledger, PaymentError, Quote, Result, to_i64};
use callwatch_common::clock::{nanos_of, system_time};
use callwatch_ledger::server::PgServer;
use callwatch_ledger::subscriptions::{Credit, Source};

/// At most this many pages of signatures per poll; more is a
/// [`PaymentError::Backlog`] (the oldest cannot be reached, and the cursor
/// must not step over them).
const MAX_PAGES: usize = 100;

/// What the watcher did with one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A quote was paid and its plan credited: send the confirmation.
    Credited {
        chat_id: i64,
        plan: String,
        days: u32,
        /// When the subscription now ends (renewals extend).
        expires_at: Nanos,
        signature: String,
        /// What arrived (at least the quote less the tolerance).
        lamports: u64,
    },
    /// Handled before (credited, or kept as unmatched): nothing changed.
    AlreadySeen { signature: String },
    /// It brought money or named a quote, but credits nothing; kept for an
    /// admin. `chat_id` is the named quote's chat, if any.
    Unmatched {
        signature: String,
        reason: Reason,
        chat_id: Option<i64>,
        /// What arrived at the receiving address (0 if nothing did).
        lamports: u64,
    },
    /// Confirmed but not yet finalized: read again at the next poll (and
    /// reported again until it is).
    Pending { signature: String },
    /// Listed at `slot`, and still not finalized with the cluster's
    /// finalized slot at `finalized_slot`, past the finality timeout: it
    /// never will be (a dropped fork, or pruned by the node). Recorded,
    /// credited nothing, and the cursor moves past it; tell the admins.
    Dropped {
        signature: String,
        slot: u64,
        finalized_slot: u64,
    },
    /// Not a payment: nothing arrived and no quote is named.
    Ignored { signature: String },
}

impl Outcome {
    /// The transaction it is about.
    pub fn signature(&self) -> &str {
        match self {
            Outcome::Credited { signature, .. }
            | Outcome::AlreadySeen { signature }
            | Outcome::Unmatched { signature, .. }
            | Outcome::Pending { signature }
            | Outcome::Dropped { signature, .. }
            | Outcome::Ignored { signature } => signature,
        }
    }
}

/// What the watcher has done so far, readable while it runs.
#[derive(Debug, Default)]
pub struct WatcherCounters {
    /// Transactions recorded as dropped: never finalized within the
    /// finality timeout.
    pub dropped: AtomicU64,
}

/// Reads one receiving address and credits what pays.
#[derive(Debug)]
pub struct Watcher {
    ledger: Ledger,
    rpc: RpcClient,
    counters: Arc<WatcherCounters>,
}

impl Watcher {
    /// A watcher of the ledger's receiving address, through its RPC.
    pub fn new(ledger: Ledger) -> Result<Watcher> {
        let config = ledger.config();
        let rpc = RpcClient::new(
            config.rpc_url.expose(),
            config.rpc_timeout(),
            config.rpc_retries,
            (config.retry_min(), config.retry_max()),
        )?;
        Ok(Watcher {
            ledger,
            rpc,
            counters: Arc::default(),
        })
    }

    /// Counts into `counters` (the service's, for `/metrics`).
    pub fn with_counters(mut self, counters: Arc<WatcherCounters>) -> Watcher {
        self.counters = counters;
        self
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<WatcherCounters> {
        Arc::clone(&self.counters)
    }

    /// One pass: every transaction since the cursor, oldest first, each
    /// judged and handled; the cursor moved past those fully handled. An
    /// error (RPC down after its retries, PostgreSQL, Redis) ends the pass
    /// early; what was handled stays handled, and the next pass reads on.
    pub async fn poll_once(
        &mut self,
        pg: &mut Client,
        redis: &mut impl redis::aio::ConnectionLike,
        now: SystemTime,
    ) -> Result<Vec<Outcome>> {
        let cursor = self.cursor(pg).await?;
        let floor = match cursor {
            Some(_) => None,
            None => Some(self.floor(pg, now).await?),
        };
        let signatures = self.signatures_since(cursor.as_deref(), floor).await?;
        let known = self.known(pg, &signatures).await?;
        let mut outcomes = Vec::with_capacity(signatures.len());
        // The newest of the oldest-first run of handled signatures.
        let mut handled: Option<&SignatureInfo> = None;
        let mut held_back = false;
        // Asked once per poll, and only if a transaction is not finalized.
        let mut finalized_slot = None;
        for info in &signatures {
            let outcome = if known.contains(info.signature.as_str()) {
                Ok(Outcome::AlreadySeen {
                    signature: info.signature.clone(),
                })
            } else {
                self.handle(pg, redis, info, &mut finalized_slot, now).await
            };
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    // Only to save re-reading: a failure here loses nothing.
                    if let Err(save) = self.save_cursor(pg, handled, now).await {
                        tracing::debug!(error = %save, "payment watcher: cursor not saved");
                    }
                    return Err(e);
                }
            };
            held_back |= matches!(outcome, Outcome::Pending { .. });
            if !held_back {
                handled = Some(info);
            }
            outcomes.push(outcome);
        }
        self.save_cursor(pg, handled, now).await?;
        Ok(outcomes)
    }

    /// Polls every `poll_interval_ms` until `stop` turns true (or its
    /// sender is dropped), handing every outcome to `outcomes` (the
    /// confirmations are the `Credited` ones). Failures are logged and
    /// retried with doubling waits up to `retry_max_ms`; PostgreSQL is
    /// connected (again) as needed. Returns early only when `outcomes` is
    /// closed.
    pub async fn run<R>(
        mut self,
        postgres: &PgServer,
        mut redis: R,
        outcomes: mpsc::Sender<Outcome>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()>
    where
        R: redis::aio::ConnectionLike + Send,
    {
        let config = self.ledger.config();
        let (poll, connect_timeout) = (config.poll_interval(), config.rpc_timeout());
        let mut backoff = Backoff::new(config.retry_min(), config.retry_max());
        let mut pg: Option<Client> = None;
        tracing::info!(
            address = %self.ledger.config().receiving_address,
            "payment watcher started"
        );
        loop {
            if pg.as_ref().is_some_and(Client::is_closed) {
                pg = None;
            }
            let polled = match pg.as_mut() {
                Some(client) => self.poll_once(client, &mut redis, SystemTime::now()).await,
                None => match connect(postgres, connect_timeout).await {
                    Ok(client) => {
                        pg = Some(client);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            let wait = match polled {
                Ok(found) => {
                    backoff.reset();
                    for outcome in found {
                        if outcomes.send(outcome).await.is_err() {
                            tracing::info!("payment watcher stopped: nobody takes outcomes");
                            return Ok(());
                        }
                    }
                    poll
                }
                Err(e) => {
                    if matches!(e, PaymentError::Postgres(_) | PaymentError::PgConnect(_)) {
                        pg = None;
                    }
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, ?wait, "payment watcher: poll failed, will retry");
                    wait
                }
            };
            if stopped_within(wait, &mut stop).await {
                tracing::info!("payment watcher stopped");
                return Ok(());
            }
        }
    }

    async fn cursor(&self, pg: &Client) -> Result<Option<String>> {
        let row = pg
            .query_opt(
                &format!(
                    "SELECT signature FROM {} WHERE address = $1",
                    self.ledger.table("payment_cursor")
                ),
                &[&self.ledger.config().receiving_address],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// With no cursor yet, how far back to read: to the oldest quote, or
    /// one quote's validity, whichever is earlier. Nothing older can pay a
    /// quote.
    async fn floor(&self, pg: &Client, now: SystemTime) -> Result<Nanos> {
        let window = now - self.ledger.config().quote_valid();
        let row = pg
            .query_one(
                &format!(
                    "SELECT LEAST(min(created_at), $1) FROM {}",
                    self.ledger.table("payment_quotes")
                ),
                &[&window],
            )
            .await?;
        Ok(nanos_of(row.get(0)))
    }

    /// The signatures newer than `cursor` (or, without one, not older than
    /// `floor`), oldest first.
    async fn signatures_since(
        &self,
        cursor: Option<&str>,
        floor: Option<Nanos>,
    ) -> Result<Vec<SignatureInfo>> {
        let per_page = self.ledger.config().signatures_per_page;
        let address = &self.ledger.config().receiving_address;
        let mut found: Vec<SignatureInfo> = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self
                .rpc
                .signatures_for_address(
                    address,
                    &SignaturesQuery {
                        limit: per_page,
                        before: found.last().map(|s| s.signature.as_str()),
                        until: cursor,
                        commitment: "confirmed",
                    },
                )
                .await?;
            let full = page.len() >= per_page;
            let before_floor = |s: &SignatureInfo| {
                floor
                    .zip(s.block_time)
                    .is_some_and(|(floor, t)| t.saturating_mul(NANOS_PER_SEC) < floor)
            };
            let reached_floor = page.iter().any(before_floor);
            found.extend(page.into_iter().take_while(|s| !before_floor(s)));
            if !full || reached_floor {
                found.reverse();
                return Ok(found);
            }
        }
        Err(PaymentError::Backlog(MAX_PAGES * per_page))
    }

    /// Which of `signatures` were handled before.
    async fn known(&self, pg: &Client, signatures: &[SignatureInfo]) -> Result<HashSet<String>> {
        if signatures.is_empty() {
            return Ok(HashSet::new());
        }
        let names: Vec<&str> = signatures.iter().map(|s| s.signature.as_str()).collect();
        let rows = pg
            .query(
                &format!(
                    "SELECT signature FROM {} WHERE signature = ANY($1) \
                     UNION ALL SELECT signature FROM {} WHERE signature = ANY($1) \
                     UNION ALL SELECT signature FROM {} WHERE signature = ANY($1)",
                    self.ledger.table("payments_announced"),
                    self.ledger.table("unmatched_payments"),
                    self.ledger.table("payments_dropped")
                ),
                &[&names],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Fetches, judges and handles one new transaction. `finalized_slot`
    /// is the cluster's, asked once per poll when first needed.
    async fn handle(
        &self,
        pg: &mut Client,
        redis: &mut impl redis::aio::ConnectionLike,
        info: &SignatureInfo,
        finalized_slot: &mut Option<u64>,
        now: SystemTime,
    ) -> Result<Outcome> {
        let signature = info.signature.clone();
        let Some(tx) = self.rpc.finalized_transaction(&signature).await? else {
            return self.not_finalized(pg, info, finalized_slot, now).await;
        };
        let quote = self.named_quote(pg, &tx).await?;
        let config = self.ledger.config();
        let verdict = judge(
            &tx,
            quote.as_ref(),
            &config.receiving_address,
            config.tolerance_lamports,
            nanos_of(now),
        );
        match verdict {
            Verdict::Pays { received } => {
                let quote = quote.expect("only a named quote is paid");
                self.credit(pg, redis, quote, signature, received, now)
                    .await
            }
            Verdict::Unmatched(reason) => {
                self.keep_unmatched(pg, &tx, quote.as_ref(), &signature, reason, now)
                    .await?;
                let got = received(&tx, &config.receiving_address).unwrap_or(0);
                Ok(Outcome::Unmatched {
                    signature,
                    reason,
                    chat_id: quote.map(|q| q.chat_id),
                    lamports: got.max(0).unsigned_abs(),
                })
            }
            Verdict::NotAPayment => Ok(Outcome::Ignored { signature }),
        }
    }

    /// A listed transaction that `getTransaction` does not have at
    /// `finalized`: pending, until the cluster's finalized slot is
    /// `finality_timeout_slots` past its slot; then dropped: recorded,
    /// counted and logged.
    async fn not_finalized(
        &self,
        pg: &Client,
        info: &SignatureInfo,
        finalized_slot: &mut Option<u64>,
        now: SystemTime,
    ) -> Result<Outcome> {
        let signature = info.signature.clone();
        let finalized = match *finalized_slot {
            Some(slot) => slot,
            None => *finalized_slot.insert(self.rpc.finalized_slot().await?),
        };
        let timeout = self.ledger.config().finality_timeout_slots;
        if finalized.saturating_sub(info.slot) < timeout {
            return Ok(Outcome::Pending { signature });
        }
        let block_time = info
            .block_time
            .map(|t| system_time(t.saturating_mul(NANOS_PER_SEC)));
        let slots = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        let recorded = pg
            .execute(
                &format!(
                    "INSERT INTO {} (signature, slot, finalized_slot, block_time, dropped_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (signature) DO NOTHING",
                    self.ledger.table("payments_dropped")
                ),
                &[
                    &signature,
                    &slots(info.slot),
                    &slots(finalized),
                    &block_time,
                    &now,
                ],
            )
            .await?;
        if recorded > 0 {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                %signature,
                slot = info.slot,
                finalized_slot = finalized,
                timeout_slots = timeout,
                "payment never finalized: recorded as dropped; the watcher reads on past it"
            );
        }
        Ok(Outcome::Dropped {
            signature,
            slot: info.slot,
            finalized_slot: finalized,
        })
    }

    /// The quote whose reference is among `tx`'s accounts, if any.
    async fn named_quote(&self, pg: &Client, tx: &Transaction) -> Result<Option<Quote>> {
        let keys: Vec<&str> = tx.account_keys().collect();
        let row = pg
            .query_opt(
                &format!(
                    "SELECT reference, chat_id, plan, days, lamports, receiving_address, \
                     created_at, expires_at FROM {} WHERE reference = ANY($1) \
                     ORDER BY created_at LIMIT 1",
                    self.ledger.table("payment_quotes")
                ),
                &[&keys],
            )
            .await?;
        Ok(row.map(|r| Quote {
            reference: r.get(0),
            chat_id: r.get(1),
            plan: r.get(2),
            days: r.get::<_, i32>(3).unsigned_abs(),
            lamports: r.get::<_, i64>(4).unsigned_abs(),
            receiving_address: r.get(5),
            created_at: nanos_of(r.get(6)),
            expires_at: nanos_of(r.get(7)),
        }))
    }

    /// Credits `quote`'s plan for the transaction `signature`, announces
    /// it, and records that it was announced.
    async fn credit(
        &self,
        pg: &mut Client,
        redis: &mut impl redis::aio::ConnectionLike,
        quote: Quote,
        signature: String,
        lamports: u64,
        now: SystemTime,
    ) -> Result<Outcome> {
        let credit = Credit {
            chat_id: quote.chat_id,
            plan: quote.plan,
            days: quote.days,
            source: Source::Solana {
                signature: signature.clone(),
                reference: Some(quote.reference),
            },
            amount_sol: Some(lamports_to_sol(lamports)),
            amount_usd: None,
        };
        let expires_at = self
            .ledger
            .credit_and_announce(pg, redis, &credit, now)
            .await?;
        pg.execute(
            &format!(
                "INSERT INTO {} (signature, announced_at) VALUES ($1, $2) \
                 ON CONFLICT (signature) DO NOTHING",
                self.ledger.table("payments_announced")
            ),
            &[&signature, &now],
        )
        .await?;
        tracing::info!(
            chat_id = credit.chat_id,
            plan = %credit.plan,
            %signature,
            lamports,
            "payment credited"
        );
        Ok(Outcome::Credited {
            chat_id: credit.chat_id,
            plan: credit.plan,
            days: credit.days,
            expires_at,
            signature,
            lamports,
        })
    }

    async fn keep_unmatched(
        &self,
        pg: &Client,
        tx: &Transaction,
        quote: Option<&Quote>,
        signature: &str,
        reason: Reason,
        now: SystemTime,
    ) -> Result<()> {
        let got = received(tx, &self.ledger.config().receiving_address).unwrap_or(0);
        let wanted = quote.map(|q| to_i64(q.lamports)).transpose()?;
        let block_time = tx
            .block_time
            .map(|t| system_time(t.saturating_mul(NANOS_PER_SEC)));
        pg.execute(
            &format!(
                "INSERT INTO {} (signature, reason, received, reference, chat_id, wanted, \
                 block_time, seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (signature) DO NOTHING",
                self.ledger.table("unmatched_payments")
            ),
            &[
                &signature,
                &reason.code(),
                &got,
                &quote.map(|q| q.reference.as_str()),
                &quote.map(|q| q.chat_id),
                &wanted,
                &block_time,
                &now,
            ],
        )
        .await?;
        tracing::warn!(%signature, %reason, "payment matched nothing; kept for an admin");
        Ok(())
    }

    async fn save_cursor(
        &self,
        pg: &Client,
        handled: Option<&SignatureInfo>,
        now: SystemTime,
    ) -> Result<()> {
        let Some(info) = handled else {
            return Ok(());
        };
        let slot = i64::try_from(info.slot).unwrap_or(i64::MAX);
        pg.execute(
            &format!(
                "INSERT INTO {} (address, signature, slot, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (address) DO UPDATE SET signature = EXCLUDED.signature, \
                 slot = EXCLUDED.slot, updated_at = EXCLUDED.updated_at",
                self.ledger.table("payment_cursor")
            ),
            &[
                &self.ledger.config().receiving_address,
                &info.signature,
                &slot,
                &now,
            ],
        )
        .await?;
        Ok(())
    }
}

async fn connect(postgres: &PgServer, limit: Duration) -> Result<Client> {
    let (client, connection) = tokio::time::timeout(limit, postgres.connect())
        .await
        .map_err(|_| PaymentError::PgConnect(format!("no connection within {limit:?}")))??;
    // The connection's own error reaches us through the client's calls.
    tokio::spawn(connection);
    Ok(client)
}

/// Waits `wait`, or less if stop is signalled; true if it was (a dropped
/// sender counts as a stop).
async fn stopped_within(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::time::timeout(wait, stop.wait_for(|&stopped| stopped))
        .await
        .is_ok()
}
