//! Payments in SOL against a fake Solana JSON-RPC server: a payment is
//! credited once, whatever is replayed; what does not pay is kept for an
//! admin, who can credit it once; an RPC outage or rate limit delays a
//! credit and loses none; reminders and expiry follow a clock the test
//! controls. Each test has a PostgreSQL schema, a Redis key prefix and a
//! fake RPC of its own, and removes them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use callwatch_ledger::subscriptions::{Credit, Source};
use callwatch_payments::config::PaymentsConfig;
use callwatch_payments::expiry::{Reminder, ReminderKind};
use callwatch_payments::matching::Reason;
use callwatch_payments::unmatched::{Resolution, Resolved};
use callwatch_payments::watcher::{Outcome, Watcher};
use callwatch_payments::{Ledger, PaymentError, Quote, solana_pay_url};
use callwatch_testkit::fake_rpc::{FakeRpc, Fault, pubkey, transfer};
use callwatch_testkit::{OwnPrefix, Schema, own_schema, unique};
use engine::time::{self, NANOS_PER_SEC, Nanos};
use redis::aio::MultiplexedConnection;
use tokio_postgres::Client;

const DAY: Duration = Duration::from_secs(24 * 3600);
const MONTH: u64 = 800_000_000;
const WEEK: u64 = 250_000_000;

fn nanos(t: SystemTime) -> Nanos {
    Nanos::try_from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

fn unix_secs(t: SystemTime) -> i64 {
    nanos(t) / NANOS_PER_SEC
}

/// The test's clock starts here: now (to the second, the same for every
/// call in this process), since quotes, credits and their Redis copies
/// outlive the test by the servers' own clocks.
fn t0() -> SystemTime {
    static T0: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    })
}

struct Setup {
    rpc: FakeRpc,
    ledger: Ledger,
    pg: Client,
    redis: MultiplexedConnection,
    keys: OwnPrefix,
    schema: Schema,
    /// The receiving address.
    us: String,
    /// Who pays.
    payer: String,
}

async fn setup(test: &str) -> Setup {
    setup_with(test, |_| {}).await
}

async fn setup_with(test: &str, adjust: impl FnOnce(&mut PaymentsConfig)) -> Setup {
    let (schema, pg) = own_schema(test).await;
    let keys = OwnPrefix::new("cw-test-pay", 13);
    let rpc = FakeRpc::start().await.unwrap();
    let us = pubkey(1);
    let mut config = PaymentsConfig {
        rpc_url: rpc.url().into(),
        receiving_address: us.clone(),
        rpc_timeout_ms: 2_000,
        rpc_retries: 2,
        retry_min_ms: 10,
        retry_max_ms: 40,
        poll_interval_ms: 50,
        ..PaymentsConfig::default()
    };
    adjust(&mut config);
    let ledger = Ledger::new(config, &schema.0, &keys.prefix).unwrap();
    Setup {
        rpc,
        ledger,
        pg,
        redis: callwatch_testkit::connect_redis(13).await,
        keys,
        schema,
        us,
        payer: pubkey(2),
    }
}

impl Setup {
    fn watcher(&self) -> Watcher {
        Watcher::new(self.ledger.clone()).unwrap()
    }

    async fn quote(&self, chat_id: i64, plan: &str, now: SystemTime) -> Quote {
        self.ledger
            .create_quote(&self.pg, chat_id, plan, now)
            .await
            .unwrap()
    }

    /// Pays `quote` in full, a minute after `now`; the signature.
    fn pay(&self, quote: &Quote, now: SystemTime) -> String {
        self.rpc.add(
            transfer(&self.payer, &self.us, quote.lamports)
                .reference(&quote.reference)
                .block_time(unix_secs(now) + 60),
        )
    }

    /// Chat 42 pays a month in a transfer not finalized (the first on the
    /// chain), then chat 43 a week in one that is; their signatures.
    async fn unfinalized_then_paid(&self, now: SystemTime) -> (String, String) {
        let (a, b) = (
            self.quote(42, "month", now).await,
            self.quote(43, "week", now).await,
        );
        let unfinalized = self.rpc.add(
            transfer(&self.payer, &self.us, MONTH)
                .reference(&a.reference)
                .block_time(unix_secs(now) + 60)
                .finalized(false),
        );
        (unfinalized, self.pay(&b, now))
    }

    async fn poll(&mut self, watcher: &mut Watcher, now: SystemTime) -> Vec<Outcome> {
        watcher
            .poll_once(&mut self.pg, &mut self.redis, now)
            .await
            .unwrap()
    }

    async fn count(&self, table: &str) -> i64 {
        self.pg
            .query_one(
                &format!("SELECT count(*) FROM \"{}\".{table}", self.schema.0),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// The subscription's status and expiry in PostgreSQL.
    async fn subscription(&self, chat_id: i64) -> Option<(String, Nanos)> {
        self.pg
            .query_opt(
                &format!(
                    "SELECT status, expires_at FROM \"{}\".subscriptions WHERE chat_id = $1",
                    self.schema.0
                ),
                &[&chat_id],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), nanos(r.get(1))))
    }

    async fn redis_copy(&mut self, chat_id: i64) -> Option<serde_json::Value> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(format!("{}subscription:{chat_id}", self.keys.prefix))
            .query_async(&mut self.redis)
            .await
            .unwrap();
        raw.map(|r| serde_json::from_str(&r).unwrap())
    }

    /// The events on the chats stream, oldest first.
    async fn chat_events(&mut self) -> Vec<serde_json::Value> {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(format!("{}events:chats", self.keys.prefix))
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis)
            .await
            .unwrap();
        // Events are stamped by Redis's clock, the one that stamps their
        // entries: `at` is checked against the entry's time and replaced.
        entries
            .iter()
            .map(|(id, fields)| {
                let mut event: serde_json::Value = serde_json::from_str(&fields["event"]).unwrap();
                let at = engine::time::parse_rfc3339(event["at"].as_str().unwrap()).unwrap();
                let entry_ms: i64 = id.split('-').next().unwrap().parse().unwrap();
                assert!(
                    (at / 1_000_000 - entry_ms).abs() <= 1_000,
                    "{event} in {id}"
                );
                event["at"] = "the entry's time".into();
                event
            })
            .collect()
    }
}

fn credited(
    chat_id: i64,
    plan: &str,
    days: u32,
    expires: SystemTime,
    sig: &str,
    lamports: u64,
) -> Outcome {
    Outcome::Credited {
        chat_id,
        plan: plan.to_owned(),
        days,
        expires_at: nanos(expires),
        signature: sig.to_owned(),
        lamports,
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::format_rfc3339(nanos(t))
}

#[tokio::test]
async fn a_correct_payment_is_credited_once_and_a_replay_credits_nothing() {
    let mut s = setup("pay_once").await;
    let quote = s.quote(42, "month", t0()).await;
    assert_eq!(quote.lamports, MONTH);
    assert_eq!(quote.receiving_address, s.us);
    assert_eq!(bs58::decode(&quote.reference).into_vec().unwrap().len(), 32);
    assert_eq!(quote.expires_at, nanos(t0() + Duration::from_secs(1_800)));
    assert_eq!(
        solana_pay_url(&quote),
        format!(
            "solana:{}?amount=0.8&reference={}&label=callwatch",
            s.us, quote.reference
        )
    );
    let sig = s.pay(&quote, t0());
    let now = t0() + Duration::from_secs(120);
    let mut watcher = s.watcher();

    let outcomes = s.poll(&mut watcher, now).await;
    let expires = now + 30 * DAY;
    assert_eq!(outcomes, [credited(42, "month", 30, expires, &sig, MONTH)]);
    assert_eq!(
        s.subscription(42).await,
        Some(("active".to_owned(), nanos(expires)))
    );
    let row =
        s.pg.query_one(
            &format!(
                "SELECT chat_id, payment_method, signature, reference, plan, days, \
                 amount_sol::text FROM \"{}\".payments",
                s.schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    let payment: (i64, String, String, String, String, i32, String) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    );
    assert_eq!(
        payment,
        (
            42,
            "solana".to_owned(),
            sig.clone(),
            quote.reference.clone(),
            "month".to_owned(),
            30,
            "0.800000000".to_owned()
        )
    );
    assert_eq!(
        s.redis_copy(42).await,
        Some(serde_json::json!({
            "plan": "month", "expires_at": rfc3339(expires), "status": "active"
        }))
    );
    assert_eq!(
        s.chat_events().await,
        [serde_json::json!({
            "type": "subscribe", "at": "the entry's time", "chat_id": 42,
            "expires_at": rfc3339(expires), "plan": "month"
        })]
    );

    // The next poll reads from the cursor, past it.
    assert_eq!(s.poll(&mut watcher, now + DAY).await, []);
    assert_eq!(s.rpc.calls("getTransaction"), 1);
    // A restarted watcher with its cursor lost reads it again, and
    // credits nothing.
    s.pg.execute(
        &format!("DELETE FROM \"{}\".payment_cursor", s.schema.0),
        &[],
    )
    .await
    .unwrap();
    let mut restarted = s.watcher();
    assert_eq!(
        s.poll(&mut restarted, now + DAY).await,
        [Outcome::AlreadySeen {
            signature: sig.clone()
        }]
    );
    assert_eq!(s.count("payments").await, 1);
    assert_eq!(
        s.subscription(42).await,
        Some(("active".to_owned(), nanos(expires)))
    );
    assert_eq!(s.chat_events().await.len(), 1, "no second subscribe event");
    // Crediting the same signature directly changes nothing either.
    let replay = Credit {
        chat_id: 43,
        plan: "month".to_owned(),
        days: 30,
        source: Source::Solana {
            signature: sig,
            reference: None,
        },
        amount_sol: None,
        amount_usd: None,
    };
    let again = s
        .ledger
        .subscriptions()
        .credit(&mut s.pg, &mut s.redis, &replay, now)
        .await
        .unwrap();
    assert_eq!(
        again,
        callwatch_ledger::subscriptions::Credited::AlreadyCredited
    );
    assert_eq!(s.subscription(43).await, None);
}

#[tokio::test]
async fn what_does_not_pay_is_kept_with_its_reason_and_credits_nothing() {
    let mut s = setup("pay_unmatched").await;
    let now = t0();
    let block = unix_secs(now) + 60;
    let (short, elsewhere, expired, failed, fee_short) = (
        s.quote(1, "month", now).await,
        s.quote(2, "month", now).await,
        s.quote(3, "week", now).await,
        s.quote(4, "week", now).await,
        s.quote(5, "week", now).await,
    );
    let sigs = [
        // 10,000 lamports short: more than the 5,000 tolerance.
        s.rpc.add(
            transfer(&s.payer, &s.us, MONTH - 10_000)
                .reference(&short.reference)
                .block_time(block),
        ),
        // Paid to someone else; it only names us.
        s.rpc.add(
            transfer(&s.payer, &pubkey(3), MONTH)
                .reference(&elsewhere.reference)
                .account(&s.us)
                .block_time(block),
        ),
        // A reference no quote has.
        s.rpc.add(
            transfer(&s.payer, &s.us, MONTH)
                .reference(&pubkey(9))
                .block_time(block),
        ),
        // Paid after the quote expired.
        s.rpc.add(
            transfer(&s.payer, &s.us, WEEK)
                .reference(&expired.reference)
                .block_time(unix_secs(now) + 1_801),
        ),
        s.rpc.add(
            transfer(&s.payer, &s.us, WEEK)
                .reference(&failed.reference)
                .block_time(block)
                .failed(),
        ),
        // We pay someone: not a payment.
        s.rpc
            .add(transfer(&s.us, &s.payer, 1_000).block_time(block)),
        // The fee short of the quote: within the tolerance, credited.
        s.rpc.add(
            transfer(&s.payer, &s.us, WEEK - 5_000)
                .reference(&fee_short.reference)
                .block_time(block),
        ),
    ];
    let mut watcher = s.watcher();
    let later = now + Duration::from_secs(3_600);
    let outcomes = s.poll(&mut watcher, later).await;
    let unmatched = |i: usize, reason, chat_id, lamports| Outcome::Unmatched {
        signature: sigs[i].clone(),
        reason,
        chat_id,
        lamports,
    };
    assert_eq!(
        outcomes,
        [
            unmatched(
                0,
                Reason::Underpaid {
                    got: MONTH - 10_000,
                    want: MONTH
                },
                Some(1),
                MONTH - 10_000
            ),
            unmatched(1, Reason::WrongRecipient, Some(2), 0),
            unmatched(2, Reason::UnknownReference, None, MONTH),
            unmatched(3, Reason::QuoteExpired, Some(3), WEEK),
            unmatched(4, Reason::Failed, Some(4), 0),
            Outcome::Ignored {
                signature: sigs[5].clone()
            },
            credited(5, "week", 7, later + 7 * DAY, &sigs[6], WEEK - 5_000),
        ]
    );
    for chat in 1..=4 {
        assert_eq!(s.subscription(chat).await, None, "chat {chat}");
    }
    assert_eq!(s.count("payments").await, 1);
    let kept = s.ledger.list_unmatched(&s.pg).await.unwrap();
    let kept: Vec<(String, Reason, i64, Option<i64>)> = kept
        .into_iter()
        .map(|u| (u.signature, u.reason, u.received_lamports, u.chat_id))
        .collect();
    let mut expected = vec![
        (
            sigs[0].clone(),
            Reason::Underpaid {
                got: MONTH - 10_000,
                want: MONTH,
            },
            (MONTH - 10_000) as i64,
            Some(1),
        ),
        (sigs[1].clone(), Reason::WrongRecipient, 0, Some(2)),
        (
            sigs[2].clone(),
            Reason::UnknownReference,
            MONTH as i64,
            None,
        ),
        (sigs[3].clone(), Reason::QuoteExpired, WEEK as i64, Some(3)),
        (sigs[4].clone(), Reason::Failed, 0, Some(4)),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let mut kept = kept;
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(kept, expected);
    // Read again from scratch: each is known, none is kept twice.
    s.pg.execute(
        &format!("DELETE FROM \"{}\".payment_cursor", s.schema.0),
        &[],
    )
    .await
    .unwrap();
    let again = s.poll(&mut s.watcher(), later).await;
    let seen = again
        .iter()
        .filter(|o| matches!(o, Outcome::AlreadySeen { .. }))
        .count();
    assert_eq!(seen, 6, "{again:?}");
    assert_eq!(s.count("unmatched_payments").await, 5);
    assert_eq!(s.count("payments").await, 1);
}

#[tokio::test]
async fn a_payment_not_yet_finalized_is_pending_holds_the_cursor_then_is_credited() {
    let mut s = setup("pay_pending").await;
    let now = t0();
    let (sig_a, sig_b) = s.unfinalized_then_paid(now).await;
    let mut watcher = s.watcher();
    let first = now + Duration::from_secs(90);
    assert_eq!(
        s.poll(&mut watcher, first).await,
        [
            Outcome::Pending {
                signature: sig_a.clone()
            },
            credited(43, "week", 7, first + 7 * DAY, &sig_b, WEEK),
        ]
    );
    assert_eq!(s.subscription(42).await, None);
    assert_eq!(
        s.count("payment_cursor").await,
        0,
        "the cursor does not pass the pending one"
    );
    // Still pending: still reported, nothing credited.
    assert_eq!(
        s.poll(&mut watcher, first).await,
        [
            Outcome::Pending {
                signature: sig_a.clone()
            },
            Outcome::AlreadySeen {
                signature: sig_b.clone()
            },
        ]
    );
    s.rpc.finalize(&sig_a);
    let second = now + Duration::from_secs(120);
    assert_eq!(
        s.poll(&mut watcher, second).await,
        [
            credited(42, "month", 30, second + 30 * DAY, &sig_a, MONTH),
            Outcome::AlreadySeen {
                signature: sig_b.clone()
            },
        ]
    );
    assert_eq!(s.poll(&mut watcher, second).await, []);
    assert_eq!(s.count("payments").await, 2);
}

/// Regression: a transaction listed but never finalized (its fork dropped,
/// or pruned by the node) was pending for ever, and held the cursor, and
/// every payment after it, with it.
#[tokio::test]
async fn a_payment_that_never_finalizes_is_dropped_after_the_timeout_and_the_cursor_moves_on() {
    let mut s = setup_with("pay_dropped", |c| c.finality_timeout_slots = 100).await;
    let now = t0();
    let (never, sig_b) = s.unfinalized_then_paid(now).await;
    let mut watcher = s.watcher();
    // The cluster finalizes 99 slots past it: still pending, holding the
    // cursor.
    s.rpc.advance_slots(98);
    let pending = Outcome::Pending {
        signature: never.clone(),
    };
    let first = s.poll(&mut watcher, now).await;
    assert_eq!(
        first,
        [
            pending,
            credited(43, "week", 7, now + 7 * DAY, &sig_b, WEEK)
        ]
    );
    assert_eq!(s.count("payment_cursor").await, 0);
    // 100 slots past it: dropped, recorded, counted; the cursor moves on.
    s.rpc.advance_slots(1);
    let slot = 300_000_000;
    let second = s.poll(&mut watcher, now).await;
    let dropped = Outcome::Dropped {
        signature: never.clone(),
        slot,
        finalized_slot: slot + 100,
    };
    let seen_b = Outcome::AlreadySeen {
        signature: sig_b.clone(),
    };
    assert_eq!(second, [dropped, seen_b]);
    assert_eq!(s.count("payments_dropped").await, 1);
    assert_eq!(watcher.counters().dropped.load(Ordering::Relaxed), 1);
    let cursor: String =
        s.pg.query_one(
            &format!("SELECT signature FROM \"{}\".payment_cursor", s.schema.0),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cursor, sig_b, "the cursor is past both");
    assert_eq!(s.poll(&mut watcher, now).await, []);
    // Payments after it are credited as they come; nothing was for chat 42.
    let c = s.quote(44, "week", now).await;
    let sig_c = s.pay(&c, now);
    assert_eq!(
        s.poll(&mut watcher, now).await,
        [credited(44, "week", 7, now + 7 * DAY, &sig_c, WEEK)]
    );
    assert_eq!(s.subscription(42).await, None);
}

#[tokio::test]
async fn rpc_down_then_up_credits_the_payment_made_during_the_outage() {
    let mut s = setup("pay_outage").await;
    let now = t0();
    let quote = s.quote(42, "month", now).await;
    s.rpc.down().await;
    let sig = s.pay(&quote, now);
    let mut watcher = s.watcher();
    let err = watcher
        .poll_once(&mut s.pg, &mut s.redis, now)
        .await
        .unwrap_err();
    let PaymentError::Rpc(rpc) = &err else {
        panic!("{err}")
    };
    assert!(rpc.is_retryable(), "{rpc}");
    assert_eq!(s.rpc.requests(), 0, "refused, never received");
    assert_eq!(s.subscription(42).await, None);

    s.rpc.up().await.unwrap();
    // Seen late, after the quote expired: it landed in time, so it counts.
    let late = now + DAY;
    assert_eq!(
        s.poll(&mut watcher, late).await,
        [credited(42, "month", 30, late + 30 * DAY, &sig, MONTH)]
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let mut s = setup("pay_429").await;
    let now = t0();
    let quote = s.quote(42, "week", now).await;
    let sig = s.pay(&quote, now);
    s.rpc.fail_next(
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
        1,
    );
    s.rpc.fail_next(Fault::ServerError(503), 1);
    let mut watcher = s.watcher();
    assert_eq!(
        s.poll(&mut watcher, now).await,
        [credited(42, "week", 7, now + 7 * DAY, &sig, WEEK)]
    );
    assert_eq!(
        s.rpc.calls("getSignaturesForAddress"),
        3,
        "429, 503, then ok"
    );
    assert_eq!(s.rpc.calls("getTransaction"), 1);

    // More failures than retries: the poll fails, and the next one works.
    let next = s.quote(42, "week", now).await;
    let sig2 = s.pay(&next, now);
    s.rpc.fail_next(
        Fault::TooManyRequests {
            retry_after_secs: None,
        },
        3,
    );
    let err = watcher
        .poll_once(&mut s.pg, &mut s.redis, now)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PaymentError::Rpc(e) if e.is_retryable()),
        "{err}"
    );
    assert_eq!(
        s.poll(&mut watcher, now).await,
        [credited(42, "week", 7, now + 14 * DAY, &sig2, WEEK)],
        "a renewal before expiry extends from the expiry"
    );
}

#[tokio::test]
async fn the_running_watcher_rides_out_an_outage_and_hands_over_the_credit() {
    let s = setup("pay_run").await;
    let now = SystemTime::now();
    let quote = s.quote(42, "month", now).await;
    s.rpc.down().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let watcher = s.watcher();
    let redis = callwatch_testkit::connect_redis(13).await;
    let running = tokio::spawn(async move {
        watcher
            .run(
                &callwatch_testkit::database_url().parse().unwrap(),
                redis,
                tx,
                stop,
            )
            .await
    });
    let sig = s.pay(&quote, now);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "nothing while the RPC is down");
    s.rpc.up().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("credited within 10 s of the RPC coming back")
        .expect("the watcher is running");
    let Outcome::Credited {
        chat_id,
        signature,
        lamports,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!((chat_id, signature, lamports), (42, sig, MONTH));
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops when told")
        .unwrap()
        .unwrap();
    assert_eq!(s.count("payments").await, 1);
}

#[tokio::test]
async fn signatures_are_read_in_pages_oldest_first() {
    let mut s = setup_with("pay_pages", |c| c.signatures_per_page = 2).await;
    let now = t0();
    let mut expected = Vec::new();
    for chat in 1..=5 {
        let quote = s.quote(chat, "week", now).await;
        let sig = s.pay(&quote, now);
        expected.push(credited(chat, "week", 7, now + 7 * DAY, &sig, WEEK));
    }
    let mut watcher = s.watcher();
    assert_eq!(s.poll(&mut watcher, now).await, expected);
    assert_eq!(s.rpc.calls("getSignaturesForAddress"), 3, "2 + 2 + 1");
}

#[tokio::test]
async fn an_unmatched_payment_resolved_by_an_admin_credits_once_and_names_the_admin() {
    let mut s = setup("pay_resolve").await;
    let now = t0();
    let quote = s.quote(42, "month", now).await;
    let sig = s.rpc.add(
        transfer(&s.payer, &s.us, MONTH / 2)
            .reference(&quote.reference)
            .block_time(unix_secs(now) + 60),
    );
    let mut watcher = s.watcher();
    let outcomes = s.poll(&mut watcher, now).await;
    assert!(
        matches!(
            &outcomes[..],
            [Outcome::Unmatched {
                reason: Reason::Underpaid { .. },
                ..
            }]
        ),
        "{outcomes:?}"
    );
    let resolution = Resolution {
        signature: &sig,
        chat_id: 42,
        plan: "month",
        admin_chat_id: 7,
    };
    let when = now + Duration::from_secs(3_600);
    let resolved = s
        .ledger
        .resolve_unmatched(&mut s.pg, &mut s.redis, &resolution, when)
        .await
        .unwrap();
    assert_eq!(
        resolved,
        Resolved::Credited {
            expires_at: nanos(when + 30 * DAY),
            announced: true,
        }
    );
    let row =
        s.pg.query_one(
            &format!(
                "SELECT resolved_by, resolved_chat_id, resolved_at FROM \"{}\".unmatched_payments",
                s.schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    let marked: (i64, i64, SystemTime) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(marked, (7, 42, when));
    let paid =
        s.pg.query_one(
            &format!(
                "SELECT chat_id, signature, amount_sol::text FROM \"{}\".payments",
                s.schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    let paid: (i64, String, String) = (paid.get(0), paid.get(1), paid.get(2));
    assert_eq!(paid, (42, sig.clone(), "0.400000000".to_owned()));
    assert_eq!(s.ledger.list_unmatched(&s.pg).await.unwrap(), []);
    assert_eq!(s.chat_events().await.len(), 1);
    assert_eq!(s.redis_copy(42).await.unwrap()["status"], "active");

    // Another admin, another chat: nothing more.
    let again = s
        .ledger
        .resolve_unmatched(
            &mut s.pg,
            &mut s.redis,
            &Resolution {
                chat_id: 43,
                admin_chat_id: 8,
                ..resolution
            },
            when,
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        Resolved::AlreadyResolved {
            resolved_by: 7,
            chat_id: 42
        }
    );
    assert_eq!(s.count("payments").await, 1);
    assert_eq!(s.subscription(43).await, None);
    let missing = s
        .ledger
        .resolve_unmatched(
            &mut s.pg,
            &mut s.redis,
            &Resolution {
                signature: "nope",
                ..resolution
            },
            when,
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, PaymentError::NotFound(_)), "{missing}");
}

async fn grant(s: &mut Setup, chat_id: i64, days: u32, now: SystemTime) -> SystemTime {
    let credit = Credit {
        chat_id,
        plan: "grant".to_owned(),
        days,
        source: Source::Grant {
            granted_by: 1,
            grant_id: unique("grant"),
        },
        amount_sol: None,
        amount_usd: None,
    };
    s.ledger
        .subscriptions()
        .credit(&mut s.pg, &mut s.redis, &credit, now)
        .await
        .unwrap();
    let (_, expires) = s.subscription(chat_id).await.unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(expires).unwrap())
}

async fn due(s: &Setup, now: SystemTime) -> Vec<Reminder> {
    s.ledger.due_reminders(&s.pg, now).await.unwrap()
}

async fn expire(s: &mut Setup, now: SystemTime) -> Vec<i64> {
    s.ledger
        .expire_due(&mut s.pg, &mut s.redis, now)
        .await
        .unwrap()
}

#[tokio::test]
async fn reminders_come_3_days_and_1_day_before_expiry_each_once() {
    let mut s = setup("pay_remind").await;
    let expires = grant(&mut s, 42, 30, t0()).await;
    assert_eq!(expires, t0() + 30 * DAY);
    let reminder = |chat_id, expires: SystemTime, kind| Reminder {
        chat_id,
        expires_at: nanos(expires),
        kind,
    };
    let second = Duration::from_secs(1);
    assert_eq!(due(&s, expires - 3 * DAY - second).await, []);
    assert_eq!(
        due(&s, expires - 3 * DAY).await,
        [reminder(42, expires, ReminderKind::ThreeDays)]
    );
    assert_eq!(due(&s, expires - 2 * DAY).await, [], "once");
    assert_eq!(
        due(&s, expires - DAY).await,
        [reminder(42, expires, ReminderKind::OneDay)]
    );
    assert_eq!(due(&s, expires - DAY + second).await, []);
    // Renewed: the new expiry gets reminders of its own.
    let renewed = grant(&mut s, 42, 7, expires - DAY).await;
    assert_eq!(renewed, expires + 7 * DAY);
    assert_eq!(due(&s, renewed - 4 * DAY).await, []);
    assert_eq!(
        due(&s, renewed - 3 * DAY).await,
        [reminder(42, renewed, ReminderKind::ThreeDays)]
    );
    assert_eq!(
        due(&s, renewed - DAY).await,
        [reminder(42, renewed, ReminderKind::OneDay)]
    );
    assert_eq!(due(&s, renewed - DAY).await, []);
    // A day left when first asked: only the 1-day reminder.
    let short = grant(&mut s, 43, 1, renewed).await;
    assert_eq!(
        due(&s, renewed).await,
        [reminder(43, short, ReminderKind::OneDay)]
    );
    assert_eq!(due(&s, renewed).await, []);
    assert_eq!(s.count("subscription_reminders").await, 5);
}

#[tokio::test]
async fn lapsed_subscriptions_are_marked_expired_in_postgres_and_redis() {
    let mut s = setup("pay_expire").await;
    let ends = grant(&mut s, 42, 1, t0()).await;
    grant(&mut s, 43, 30, t0()).await;
    let second = Duration::from_secs(1);
    assert_eq!(expire(&mut s, ends - second).await, Vec::<i64>::new());
    assert_eq!(expire(&mut s, ends).await, [42]);
    assert_eq!(expire(&mut s, ends + second).await, Vec::<i64>::new());
    assert_eq!(
        s.subscription(42).await,
        Some(("expired".to_owned(), nanos(ends)))
    );
    assert_eq!(s.subscription(43).await.unwrap().0, "active");
    assert_eq!(
        s.redis_copy(42).await,
        Some(serde_json::json!({
            "plan": "grant", "expires_at": rfc3339(ends), "status": "expired"
        }))
    );
    assert_eq!(s.redis_copy(43).await.unwrap()["status"], "active");
    assert_eq!(
        s.ledger.due_reminders(&s.pg, ends - DAY).await.unwrap(),
        [],
        "no reminders for a lapsed subscription"
    );
    // A lapsed chat that pays renews from now.
    let quote = s.quote(42, "week", ends + DAY).await;
    let sig = s.pay(&quote, ends + DAY);
    let now = ends + DAY + Duration::from_secs(120);
    let mut watcher = s.watcher();
    assert_eq!(
        s.poll(&mut watcher, now).await,
        [credited(42, "week", 7, now + 7 * DAY, &sig, WEEK)]
    );
    assert_eq!(s.subscription(42).await.unwrap().0, "active");
}
