//! One test per rule of CONTRACT.md, each named after its rule, run on a
//! single `ShardState` (the pure core) fed through `Ingest`, as the router
//! would feed it.

use engine::config::Rules;
use engine::effect::Effect;
use engine::ingest::{Ingest, Outcome};
use engine::shard::{ShardState, Status};
use engine::time::{NANOS_PER_SEC, format_rfc3339};
use engine::token::Token;

const SOL: &str = "So11111111111111111111111111111111111111112";
const JUP: &str = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
const EVM: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
/// 2026-11-25T10:00:00Z
const BASE: i64 = 1_795_600_800 * NANOS_PER_SEC;

/// Minutes after `BASE`, as RFC 3339.
fn t(minutes: i64) -> String {
    format_rfc3339(BASE + minutes * 60 * NANOS_PER_SEC)
}

fn sub(chat: i64, at: i64, expires: i64) -> String {
    format!(
        r#"{{"type":"subscribe","at":"{}","chat_id":{chat},"expires_at":"{}"}}"#,
        t(at),
        t(expires)
    )
}

fn set(chat: i64, at: i64, fields: &str) -> String {
    format!(
        r#"{{"type":"settings","at":"{}","chat_id":{chat},{fields}}}"#,
        t(at)
    )
}

fn call(token: &str, channel: i64, fdv: f64, at: i64) -> String {
    format!(
        r#"{{"type":"call","at":"{}","token":"{token}","channel_id":{channel},"fdv_usd":{fdv}}}"#,
        t(at)
    )
}

fn price(token: &str, fdv: f64, at: i64) -> String {
    format!(
        r#"{{"type":"price","at":"{}","token":"{token}","fdv_usd":{fdv}}}"#,
        t(at)
    )
}

/// A shard and its ingest, with default rules unless told otherwise.
struct Run {
    ingest: Ingest,
    shard: ShardState,
}

impl Run {
    fn new() -> Self {
        Self::with(Rules::default())
    }

    fn with(rules: Rules) -> Self {
        Run {
            ingest: Ingest::new(),
            shard: ShardState::new(rules),
        }
    }

    /// Feeds lines; returns the alerts they caused.
    fn feed(&mut self, lines: &[String]) -> Vec<Effect> {
        let mut out = Vec::new();
        for line in lines {
            match self.ingest.line(line.as_bytes()) {
                Outcome::Event(env) => self.shard.apply(&env, &mut out),
                other => panic!("test line rejected: {other:?}\n{line}"),
            }
            self.shard.maintain(64);
        }
        out
    }
}

/// (seq, chat_id, kind, threshold or caller count) per alert, for compact
/// assertions.
fn summary(alerts: &[Effect]) -> Vec<(u64, i64, &'static str, f64)> {
    alerts
        .iter()
        .map(|e| match e {
            Effect::CallAlert(a) => (a.seq, a.chat_id, "call", a.callers.len() as f64),
            Effect::MultiplierAlert(a) => (a.seq, a.chat_id, "x", a.threshold),
            Effect::Progress(p) => (p.seq, p.chat_id, "silent", p.threshold),
        })
        .collect()
}

/// Default rules but a one-hour TTL, so expiry happens within a test.
fn one_hour_ttl() -> Rules {
    Rules {
        ttl_nanos: 60 * 60 * NANOS_PER_SEC,
        ..Rules::default()
    }
}

/// A chat subscribed for a day, following everything, min_callers 2.
fn chat(id: i64) -> String {
    sub(id, 0, 24 * 60)
}

#[test]
fn call_alert_when_min_callers_reached_within_lookback() {
    let mut r = Run::new();
    let a = r.feed(&[chat(1), call(SOL, -1, 100.0, 1), call(SOL, -2, 120.0, 2)]);
    assert_eq!(summary(&a), [(3, 1, "call", 2.0)]);
    let Effect::CallAlert(c) = &a[0] else {
        panic!()
    };
    assert_eq!(c.callers, [-2, -1], "callers sorted ascending");
    assert_eq!(c.fdv_usd, 120.0, "fdv of the accepting call");
}

#[test]
fn calls_table_keeps_the_latest_call_time() {
    // Channel -1 called at minute 0 and (late-arriving) at minute -200: the
    // late, older call must not move the table back out of the lookback.
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        call(SOL, -1, 100.0, 0),
        call(SOL, -1, 100.0, -200),
        call(SOL, -2, 100.0, 30),
    ]);
    assert_eq!(summary(&a), [(4, 1, "call", 2.0)]);
}

#[test]
fn call_outside_lookback_does_not_count() {
    let mut r = Run::new();
    let a = r.feed(&[chat(1), call(SOL, -1, 100.0, 0), call(SOL, -2, 100.0, 61)]);
    assert!(a.is_empty(), "default lookback is 60 minutes: {a:?}");
    let a = r.feed(&[
        set(1, 62, r#""lookback_minutes":120"#),
        call(SOL, -3, 100.0, 63),
    ]);
    assert_eq!(summary(&a), [(5, 1, "call", 3.0)]);
}

#[test]
fn only_active_chats_are_checked() {
    let mut r = Run::new();
    let a = r.feed(&[
        sub(1, 0, 5),
        chat(2),
        call(SOL, -1, 100.0, 5),
        call(SOL, -2, 100.0, 6),
    ]);
    assert_eq!(
        summary(&a),
        [(4, 2, "call", 2.0)],
        "chat 1 expired at minute 5"
    );
    assert!(r.shard.record(&SOL.parse().unwrap(), 1).is_none());
}

#[test]
fn chat_without_subscription_is_inactive() {
    let mut r = Run::new();
    let a = r.feed(&[set(1, 0, r#""min_callers":1"#), call(SOL, -1, 100.0, 1)]);
    assert!(a.is_empty());
}

#[test]
fn only_followed_channels_count() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        set(1, 0, r#""follow":[-1,-3]"#),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        call(SOL, -3, 100.0, 3),
    ]);
    assert_eq!(summary(&a), [(5, 1, "call", 2.0)]);
    let Effect::CallAlert(c) = &a[0] else {
        panic!()
    };
    assert_eq!(c.callers, [-3, -1], "the unfollowed -2 is no caller");
}

#[test]
fn empty_follow_list_means_every_channel() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        set(1, 0, r#""follow":[-9]"#),
        set(1, 0, r#""follow":[]"#),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
    ]);
    assert_eq!(summary(&a), [(5, 1, "call", 2.0)]);
}

#[test]
fn settings_fields_that_are_absent_keep_their_value() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        set(1, 0, r#""min_callers":3"#),
        set(1, 0, r#""lookback_minutes":10"#),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        call(SOL, -3, 100.0, 3),
    ]);
    assert_eq!(summary(&a), [(6, 1, "call", 3.0)], "min_callers 3 survived");
}

#[test]
fn recheck_only_when_there_are_new_channels() {
    let mut r = Run::new();
    r.feed(&[
        chat(1),
        set(1, 0, r#""min_callers":3"#),
        call(SOL, -1, 100.0, 1),
    ]);
    let token: Token = SOL.parse().unwrap();
    let first = r.shard.record(&token, 1).unwrap().clone();
    assert_eq!(first.status, Status::Rejected);
    // The same channel calling again at the same time brings nothing new:
    // the record, last_check included, is left alone.
    r.feed(&[call(SOL, -1, 100.0, 1)]);
    assert_eq!(r.shard.record(&token, 1).unwrap(), &first);
    // A later call of a checked channel is new (its call time moved on).
    r.feed(&[call(SOL, -1, 100.0, 4)]);
    let rec = r.shard.record(&token, 1).unwrap();
    assert_eq!(rec.last_check, BASE + 4 * 60 * NANOS_PER_SEC);
    assert_eq!(rec.checked[..], [(-1, BASE + 4 * 60 * NANOS_PER_SEC)]);
}

#[test]
fn recheck_counts_a_call_at_the_same_second_as_the_last_check() {
    // The seed also required call_time > last_check_time and dropped this.
    let mut r = Run::new();
    let a = r.feed(&[chat(1), call(SOL, -1, 100.0, 1), call(SOL, -2, 100.0, 1)]);
    assert_eq!(summary(&a), [(3, 1, "call", 2.0)]);
}

#[test]
fn late_call_still_counts_when_within_lookback() {
    // A call that arrives after the last check but carries an earlier time.
    let mut r = Run::new();
    let a = r.feed(&[chat(1), call(SOL, -1, 100.0, 10), call(SOL, -2, 100.0, 5)]);
    assert_eq!(summary(&a), [(3, 1, "call", 2.0)]);
}

#[test]
fn rejected_upgrades_to_accepted() {
    let mut r = Run::new();
    let a = r.feed(&[chat(1), call(SOL, -1, 100.0, 1)]);
    assert!(a.is_empty());
    let token: Token = SOL.parse().unwrap();
    assert_eq!(r.shard.record(&token, 1).unwrap().status, Status::Rejected);
    let a = r.feed(&[call(SOL, -2, 100.0, 2)]);
    assert_eq!(summary(&a), [(3, 1, "call", 2.0)]);
    assert_eq!(r.shard.record(&token, 1).unwrap().status, Status::Accepted);
}

#[test]
fn accepted_is_never_downgraded_nor_alerted_twice() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        set(1, 0, r#""max_fdv_usd":1000"#),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        // A new channel at a price outside the bounds: would reject.
        call(SOL, -3, 5000.0, 3),
        call(SOL, -4, 100.0, 4),
    ]);
    assert_eq!(summary(&a), [(4, 1, "call", 2.0)]);
    let token: Token = SOL.parse().unwrap();
    let rec = r.shard.record(&token, 1).unwrap();
    assert_eq!(rec.status, Status::Accepted);
    assert_eq!(rec.checked.len(), 4, "checked still grows");
}

#[test]
fn fdv_bounds_gate_acceptance() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        chat(2),
        set(1, 0, r#""min_fdv_usd":200,"max_fdv_usd":300"#),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        call(SOL, -3, 300.0, 3),
    ]);
    // Chat 2 accepts at 100; chat 1 only once a call comes at 300 (bound
    // inclusive).
    assert_eq!(summary(&a), [(5, 2, "call", 2.0), (6, 1, "call", 3.0)]);
}

#[test]
fn tracking_starts_at_acceptance_with_that_calls_fdv() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        call(SOL, -1, 50.0, 1),
        price(SOL, 150.0, 2),
        call(SOL, -2, 100.0, 3),
        price(SOL, 199.0, 4),
        price(SOL, 200.0, 5),
    ]);
    assert_eq!(summary(&a), [(4, 1, "call", 2.0), (6, 1, "x", 2.0)]);
    let Effect::MultiplierAlert(m) = &a[1] else {
        panic!()
    };
    assert_eq!(
        (m.fdv_at_call, m.multiplier, m.fdv_usd),
        (100.0, 2.0, 200.0)
    );
}

#[test]
fn one_alert_per_jump_for_the_highest_threshold_reached() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        price(SOL, 1250.0, 3),
        price(SOL, 1300.0, 4),
        price(SOL, 400.0, 5),
        price(SOL, 2000.0, 6),
    ]);
    assert_eq!(
        summary(&a),
        [(3, 1, "call", 2.0), (4, 1, "x", 10.0), (7, 1, "x", 20.0)],
        "1x→12.5x alerts 10 only; a dip and 5x again alert nothing"
    );
}

#[test]
fn every_price_update_is_checked() {
    // The seed skipped updates within 5 s or under 2 % and could miss this.
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 1),
        price(SOL, 199.0, 1),
        price(SOL, 200.0, 1),
    ]);
    assert_eq!(summary(&a), [(3, 1, "call", 2.0), (5, 1, "x", 2.0)]);
}

#[test]
fn inactive_chat_uses_up_thresholds_silently() {
    let mut r = Run::new();
    let a = r.feed(&[
        sub(1, 0, 10),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        price(SOL, 250.0, 20),
        sub(1, 21, 24 * 60),
        price(SOL, 260.0, 22),
        price(SOL, 600.0, 23),
    ]);
    assert_eq!(
        summary(&a),
        [(3, 1, "call", 2.0), (7, 1, "x", 5.0)],
        "2x was used up while the chat was inactive"
    );
}

#[test]
fn report_silent_tells_the_state_store_what_an_inactive_chat_used_up() {
    let lines = [
        sub(1, 0, 10),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        price(SOL, 250.0, 20),
        sub(1, 21, 24 * 60),
        price(SOL, 600.0, 23),
    ];
    let quiet = Run::new().feed(&lines);
    let mut r = Run::with(Rules {
        report_silent: true,
        ..Rules::default()
    });
    let a = r.feed(&lines);
    assert_eq!(
        summary(&a),
        [(3, 1, "call", 2.0), (4, 1, "silent", 2.0), (6, 1, "x", 5.0)]
    );
    let alerts: Vec<Effect> = a.iter().filter(|e| e.is_alert()).cloned().collect();
    assert_eq!(alerts, quiet, "alerts do not depend on report_silent");
    let (Effect::CallAlert(c), Effect::Progress(p), Effect::MultiplierAlert(m)) =
        (&a[0], &a[1], &a[2])
    else {
        panic!("{a:?}")
    };
    assert_eq!(c.channel_id, -2, "the call that completed the conditions");
    assert_eq!((p.tracking_started, m.tracking_started), (c.at, c.at));
    let mut json = Vec::new();
    a[1].write_json(&mut json);
    assert!(json.is_empty(), "progress is never printed");
}

#[test]
fn tracked_entry_expires_after_ttl() {
    let mut r = Run::with(one_hour_ttl());
    let a = r.feed(&[
        chat(1),
        call(SOL, -1, 100.0, 0),
        call(SOL, -2, 100.0, 0),
        price(SOL, 250.0, 59),
        price(SOL, 600.0, 60),
    ]);
    assert_eq!(summary(&a), [(3, 1, "call", 2.0), (4, 1, "x", 2.0)]);
    assert!(r.shard.tracked().is_empty(), "the entry is gone");
}

#[test]
fn expired_processed_record_counts_as_absent() {
    let mut r = Run::with(one_hour_ttl());
    let a = r.feed(&[
        chat(1),
        set(1, 0, r#""lookback_minutes":600"#),
        call(SOL, -1, 100.0, 0),
        call(SOL, -2, 100.0, 1),
        // Accepted at minute 1; the record expires at minute 61. Then a new
        // channel's call finds no record: a fresh check, a second alert,
        // and tracking restarts from this call's fdv.
        call(SOL, -3, 400.0, 61),
        price(SOL, 800.0, 62),
    ]);
    assert_eq!(
        summary(&a),
        [(4, 1, "call", 2.0), (5, 1, "call", 3.0), (6, 1, "x", 2.0)]
    );
    let tracked = r.shard.tracked();
    assert_eq!(tracked.len(), 1);
    assert_eq!(tracked[0].fdv_at_call, 400.0);
}

#[test]
fn restart_of_live_tracking_replaces_the_entry() {
    // Out-of-order input can expire a record while its tracking lives on:
    // the re-accepting call must replace the entry, never add a second.
    let mut r = Run::with(one_hour_ttl());
    let a = r.feed(&[
        chat(1),
        set(1, 0, r#""lookback_minutes":600"#),
        call(SOL, -1, 100.0, 30),
        call(SOL, -2, 100.0, 30), // accepted, tracking starts at 30
        call(SOL, -3, 100.0, 5),  // late call: last_check moves back to 5
        call(SOL, -4, 100.0, 70), // record expired (5 + 60 <= 70), re-accept
        price(SOL, 1000.0, 71),
    ]);
    assert_eq!(
        summary(&a),
        [(4, 1, "call", 2.0), (6, 1, "call", 4.0), (7, 1, "x", 10.0)],
        "one multiplier alert, from one entry"
    );
    assert_eq!(r.shard.tracked().len(), 1);
}

#[test]
fn alerts_are_sorted_by_chat_within_an_event() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(30),
        chat(10),
        chat(20),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
    ]);
    let chats: Vec<i64> = a.iter().map(Effect::chat_id).collect();
    assert_eq!(chats, [10, 20, 30]);
}

#[test]
fn evm_tokens_print_lowercase() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        call(EVM, -1, 100.0, 1),
        call(&EVM.to_uppercase().replace("0X", "0x"), -2, 100.0, 2),
    ]);
    let mut out = Vec::new();
    a[0].write_json(&mut out);
    let line = String::from_utf8(out).unwrap();
    assert!(line.contains(&EVM.to_lowercase()), "{line}");
}

#[test]
fn tokens_are_tracked_independently() {
    let mut r = Run::new();
    let a = r.feed(&[
        chat(1),
        call(SOL, -1, 100.0, 1),
        call(JUP, -2, 100.0, 2),
        call(JUP, -1, 100.0, 3),
        price(SOL, 1000.0, 4),
    ]);
    assert_eq!(summary(&a), [(4, 1, "call", 2.0)], "SOL never accepted");
}

#[test]
fn expired_state_is_swept_and_the_token_freed() {
    let mut r = Run::with(one_hour_ttl());
    r.feed(&[chat(1), call(SOL, -1, 100.0, 0), call(SOL, -2, 100.0, 0)]);
    assert_eq!(r.shard.token_count(), 1);
    // Eight days later the calls are beyond any lookback and everything
    // else has expired: the sweep frees the token.
    r.feed(&[sub(2, 8 * 24 * 60, 9 * 24 * 60)]);
    assert_eq!(r.shard.token_count(), 0);
    assert_eq!(r.shard.stats().tracked, 0);
    assert_eq!(r.shard.stats().records, 0);
    // And the token starts afresh when called again.
    let a = r.feed(&[
        sub(1, 8 * 24 * 60, 9 * 24 * 60),
        call(SOL, -1, 100.0, 8 * 24 * 60 + 1),
        call(SOL, -2, 100.0, 8 * 24 * 60 + 2),
    ]);
    assert_eq!(summary(&a), [(7, 1, "call", 2.0), (7, 2, "call", 2.0)]);
}

#[test]
fn custom_thresholds_apply() {
    let rules = Rules {
        thresholds: vec![1.5, 3.0],
        ..Rules::default()
    };
    let mut r = Run::with(rules);
    let a = r.feed(&[
        chat(1),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        price(SOL, 160.0, 3),
        price(SOL, 310.0, 4),
        price(SOL, 9999.0, 5),
    ]);
    assert_eq!(
        summary(&a),
        [(3, 1, "call", 2.0), (4, 1, "x", 1.5), (5, 1, "x", 3.0)]
    );
}

#[test]
fn restored_entries_alert_like_started_ones_and_restart_in_place() {
    use engine::shard::Restore;
    let mut r = Run::new();
    r.feed(&[chat(1)]);
    let token: Token = SOL.parse().unwrap();
    r.shard.restore(&Restore {
        token,
        chat_id: 1,
        fdv_at_call: 100.0,
        started: BASE,
        last_threshold: Some(2.0),
    });
    // 2x was already alerted before the restart: 3x alerts nothing, 6x
    // alerts 5.
    let a = r.feed(&[price(SOL, 300.0, 1), price(SOL, 600.0, 2)]);
    assert_eq!(summary(&a), [(3, 1, "x", 5.0)]);
    // The chat accepts the token again (no processed record was restored):
    // the restored entry is replaced, not joined by a second one.
    let a = r.feed(&[call(SOL, -1, 1000.0, 3), call(SOL, -2, 1000.0, 4)]);
    assert_eq!(summary(&a), [(5, 1, "call", 2.0)]);
    assert_eq!(r.shard.tracked().len(), 1);
    let a = r.feed(&[price(SOL, 2500.0, 5)]);
    assert_eq!(
        summary(&a),
        [(6, 1, "x", 2.0)],
        "one alert, from the new entry"
    );
}

/// SCAN hands a key over twice when Redis shrinks its table mid-scan, so
/// a rebuild may restore a pair twice, perhaps once before and once after
/// a raise of its threshold: the end of the rebuild leaves one entry, the
/// one furthest along, and a crossing alerts once.
#[test]
fn a_pair_restored_twice_is_tracked_once_after_the_rebuild() {
    use engine::shard::Restore;
    let mut r = Run::new();
    r.feed(&[chat(1), chat(2)]);
    let token: Token = SOL.parse().unwrap();
    let entry = |chat_id, last_threshold| Restore {
        token,
        chat_id,
        fdv_at_call: 100.0,
        started: BASE,
        last_threshold,
    };
    r.shard.restore(&entry(1, None));
    r.shard.restore(&entry(2, None));
    r.shard.restore(&entry(1, Some(2.0)));
    r.shard.restore(&entry(2, None));
    assert_eq!(r.shard.tracked().len(), 4);
    r.shard.shrink_to_fit();
    assert_eq!(r.shard.tracked().len(), 2);
    assert_eq!(r.shard.stats().tracked, 2);
    let a = r.feed(&[price(SOL, 250.0, 1)]);
    assert_eq!(summary(&a), [(3, 2, "x", 2.0)], "chat 1 had 2x already");
    let a = r.feed(&[price(SOL, 600.0, 2)]);
    assert_eq!(summary(&a), [(4, 1, "x", 5.0), (4, 2, "x", 5.0)]);
}

#[test]
fn restored_processed_records_keep_their_decisions() {
    use engine::shard::{Restore, RestoreRecord};
    let mut r = Run::new();
    r.feed(&[chat(1)]);
    let token: Token = SOL.parse().unwrap();
    // Accepted before the restart, with its tracking: the same callers do
    // not alert again, and the entry stays current.
    r.shard.restore_record(&RestoreRecord {
        token,
        chat_id: 1,
        status: Status::Accepted,
        last_check: BASE,
        checked: vec![(-2, BASE), (-1, BASE)],
    });
    r.shard.restore(&Restore {
        token,
        chat_id: 1,
        fdv_at_call: 100.0,
        started: BASE,
        last_threshold: None,
    });
    let a = r.feed(&[call(SOL, -1, 150.0, 1), call(SOL, -3, 150.0, 2)]);
    assert_eq!(summary(&a), [], "accepted is never alerted twice");
    let a = r.feed(&[price(SOL, 200.0, 3)]);
    assert_eq!(summary(&a), [(4, 1, "x", 2.0)]);
    assert_eq!(r.shard.record(&token, 1).unwrap().status, Status::Accepted);

    // Rejected before the restart with channel -1 checked: a repeat of
    // -1's call finds nothing new, so the record is not checked again.
    let jup: Token = JUP.parse().unwrap();
    r.shard.restore_record(&RestoreRecord {
        token: jup,
        chat_id: 1,
        status: Status::Rejected,
        last_check: BASE + 4 * 60 * NANOS_PER_SEC,
        checked: vec![(-1, BASE + 4 * 60 * NANOS_PER_SEC)],
    });
    let before = r.shard.record(&jup, 1).unwrap().last_check;
    r.feed(&[call(JUP, -1, 50.0, 4)]);
    assert_eq!(r.shard.record(&jup, 1).unwrap().last_check, before);
    let a = r.feed(&[call(JUP, -2, 50.0, 5)]);
    assert_eq!(
        summary(&a),
        [(6, 1, "call", 2.0)],
        "a new channel upgrades it"
    );
}

#[test]
fn restored_calls_count_toward_min_callers() {
    use engine::shard::RestoreCall;
    let mut r = Run::new();
    r.feed(&[chat(1)]);
    let token: Token = SOL.parse().unwrap();
    // Channel -1 called 10 minutes in, before a restart.
    r.shard.restore_call(&RestoreCall {
        token,
        channel_id: -1,
        at: BASE + 10 * 60 * NANOS_PER_SEC,
        fdv_at_call: 90.0,
        peak_fdv: 120.0,
    });
    let a = r.feed(&[call(SOL, -2, 100.0, 20)]);
    assert_eq!(summary(&a), [(2, 1, "call", 2.0)]);
    // A call restored from longer ago than the lookback does not count.
    let jup: Token = JUP.parse().unwrap();
    r.shard.restore_call(&RestoreCall {
        token: jup,
        channel_id: -1,
        at: BASE,
        fdv_at_call: f64::NAN,
        peak_fdv: f64::NAN,
    });
    let a = r.feed(&[call(JUP, -2, 100.0, 90)]);
    assert_eq!(summary(&a), []);
}

#[test]
fn a_chats_tracked_entries_with_their_current_multiple() {
    let mut r = Run::new();
    r.feed(&[
        chat(1),
        chat(2),
        call(SOL, -1, 100.0, 1),
        call(SOL, -2, 100.0, 2),
        call(JUP, -1, 50.0, 3),
        call(JUP, -2, 50.0, 4),
        price(SOL, 250.0, 5),
    ]);
    let mut held = r.shard.tracked_by(1);
    held.sort_by(|a, b| a.tracked.fdv_at_call.total_cmp(&b.tracked.fdv_at_call));
    let summary: Vec<(String, f64, Option<f64>)> = held
        .iter()
        .map(|h| {
            (
                h.tracked.token.to_string(),
                h.multiple(),
                h.tracked.last_threshold,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (JUP.to_owned(), 1.0, None),
            (SOL.to_owned(), 2.5, Some(2.0)),
        ]
    );
    assert_eq!(
        r.shard.tracked_by(2).len(),
        2,
        "chat 2 follows everyone too"
    );
    assert!(
        r.shard.tracked_by(3).is_empty(),
        "an unknown chat holds nothing"
    );
}

#[test]
fn current_fdv_is_that_of_the_latest_call_or_price() {
    let mut r = Run::new();
    let token: Token = SOL.parse().unwrap();
    r.feed(&[chat(1), call(SOL, -1, 100.0, 1)]);
    assert_eq!(r.shard.fdv_usd(&token), Some(100.0));
    r.feed(&[price(SOL, 150.0, 2)]);
    assert_eq!(r.shard.fdv_usd(&token), Some(150.0));
    // In input order, whatever the times say.
    r.feed(&[call(SOL, -2, 120.0, 0)]);
    assert_eq!(r.shard.fdv_usd(&token), Some(120.0));
}
