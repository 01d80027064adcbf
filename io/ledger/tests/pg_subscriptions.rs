//! Credits of plans: PostgreSQL first, then the Redis copy; a signature
//! or a grant id credits once; renewals extend from the current expiry; a failed copy is
//! reported and repaired from PostgreSQL. Each test has a schema of its own
//! and a Redis key prefix of its own, and removes both.

use std::time::{Duration, SystemTime};

use callwatch_ledger::subscriptions::{Credit, CreditError, Credited, Source, SubscriptionStore};
use callwatch_testkit::{own_schema, unique};
use engine::time::{self, NANOS_PER_SEC};

/// chat_id, payment_method, signature, granted_by, amount_sol.
type PaymentRow = (i64, String, Option<String>, Option<i64>, Option<String>);

const DAY: i64 = 24 * 3600 * NANOS_PER_SEC;

/// Now, to the second (RFC 3339 copies keep no more).
fn now_in_whole_seconds() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn nanos(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

fn paid(chat_id: i64, signature: &str, days: u32) -> Credit {
    Credit {
        chat_id,
        plan: format!("{days}d"),
        days,
        source: Source::Solana {
            signature: signature.to_owned(),
            reference: Some("ref-1".to_owned()),
        },
        amount_sol: Some("0.5".to_owned()),
        amount_usd: Some("101.25".to_owned()),
    }
}

async fn redis() -> redis::aio::MultiplexedConnection {
    callwatch_testkit::connect_redis(12).await
}

async fn copy(con: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<serde_json::Value> {
    let raw: Option<String> = redis::cmd("GET").arg(key).query_async(con).await.unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

#[tokio::test]
async fn a_signature_credits_once_and_renewals_extend() {
    let (schema, mut pg) = own_schema("subs_once").await;
    let prefix = format!("{}:", unique("cw-test-subs"));
    let store = SubscriptionStore::new(&schema.0, &prefix);
    let mut con = redis().await;
    // Dated from the wall clock: the Redis copy lives a year from when it
    // is written, by the server's clock, so fixed dates would age out.
    let now = now_in_whole_seconds();
    let later = |d: i64| now + Duration::from_nanos(u64::try_from(d).unwrap());
    let rfc = |t: SystemTime| time::format_rfc3339(nanos(t));

    let first = store
        .credit(&mut pg, &mut con, &paid(7, "sig-a", 30), now)
        .await
        .unwrap();
    let Credited::New { expires_at, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!(expires_at, nanos(later(30 * DAY)), "30 days from now");
    // The same transaction again, even later: nothing changes.
    let again = store
        .credit(&mut pg, &mut con, &paid(7, "sig-a", 30), later(DAY))
        .await
        .unwrap();
    assert_eq!(again, Credited::AlreadyCredited);
    // A renewal before expiry extends from the expiry.
    let renewed = store
        .credit(
            &mut pg,
            &mut con,
            &paid(7, "sig-b", 7),
            later(5 * DAY + DAY / 2),
        )
        .await
        .unwrap();
    let Credited::New { expires_at, .. } = renewed else {
        panic!("{renewed:?}")
    };
    assert_eq!(expires_at, nanos(later(37 * DAY)));
    // A grant is a payment row too, with who granted it.
    let grant = granted(8, 1, "8:100");
    store.credit(&mut pg, &mut con, &grant, now).await.unwrap();

    let rows = pg
        .query(
            &format!(
                "SELECT chat_id, payment_method, signature, granted_by, amount_sol::text \
                 FROM \"{}\".payments ORDER BY id",
                schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<PaymentRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                7,
                "solana".into(),
                Some("sig-a".into()),
                None,
                Some("0.500000000".into())
            ),
            (
                7,
                "solana".into(),
                Some("sig-b".into()),
                None,
                Some("0.500000000".into())
            ),
            (8, "grant".into(), None, Some(5), None),
        ]
    );
    let copy7 = copy(&mut con, &format!("{prefix}subscription:7"))
        .await
        .unwrap();
    assert_eq!(
        copy7,
        serde_json::json!({"plan": "7d", "expires_at": rfc(later(37 * DAY)), "status": "active"})
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}subscription:7"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(ttl > 364 * 24 * 3600, "the seed's one-year TTL: {ttl}");
    assert_eq!(
        store.read_copy(&mut con, 7).await.unwrap(),
        Some(("7d".to_owned(), nanos(later(37 * DAY))))
    );
    assert_eq!(store.read_copy(&mut con, 6).await.unwrap(), None);
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}subscription:6"))
        .arg("{\"plan\":\"x\"}")
        .query_async(&mut con)
        .await
        .unwrap();
    let bad = store.read_copy(&mut con, 6).await.unwrap_err().to_string();
    assert!(bad.contains("subscription:6 is unreadable"), "{bad}");
    assert_eq!(
        store.expires_at(&pg, 7).await.unwrap(),
        Some(nanos(later(37 * DAY)))
    );
    // A lapsed subscription renews from now.
    let lapsed = store
        .credit(&mut pg, &mut con, &paid(7, "sig-c", 1), later(96 * DAY))
        .await
        .unwrap();
    let Credited::New { expires_at, .. } = lapsed else {
        panic!()
    };
    assert_eq!(expires_at, nanos(later(97 * DAY)));
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}subscription:7"))
        .arg(format!("{prefix}subscription:8"))
        .arg(format!("{prefix}subscription:6"))
        .query_async(&mut con)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_redis_copy_is_reported_and_repaired_from_postgres() {
    let (schema, mut pg) = own_schema("subs_copy").await;
    let prefix = format!("{}:", unique("cw-test-subs"));
    let store = SubscriptionStore::new(&schema.0, &prefix);
    // Nothing listens on port 1: the copy fails after the commit.
    let mut down = callwatch_testkit::unreachable_redis();
    let err = store
        .credit(&mut pg, &mut down, &paid(9, "sig-z", 30), SystemTime::now())
        .await
        .unwrap_err();
    let CreditError::RedisCopy { credited, .. } = err else {
        panic!("{err}")
    };
    assert!(matches!(credited, Credited::New { .. }), "{credited:?}");
    assert!(
        store.expires_at(&pg, 9).await.unwrap().is_some(),
        "committed in PostgreSQL all the same"
    );
    let mut con = redis().await;
    let key = format!("{prefix}subscription:9");
    assert_eq!(copy(&mut con, &key).await, None);
    assert_eq!(store.sync_redis(&pg, &mut con).await.unwrap(), 1);
    assert_eq!(copy(&mut con, &key).await.unwrap()["status"], "active");
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
}

/// An admin's grant of `days` to `chat_id`, made by the command `grant_id`.
fn granted(chat_id: i64, days: u32, grant_id: &str) -> Credit {
    Credit {
        chat_id,
        plan: "grant".to_owned(),
        days,
        source: Source::Grant {
            granted_by: 5,
            grant_id: grant_id.to_owned(),
        },
        amount_sol: None,
        amount_usd: None,
    }
}

#[tokio::test]
async fn a_grant_id_credits_once_and_its_record_is_found_again() {
    let (schema, mut pg) = own_schema("subs_grant_id").await;
    let prefix = format!("{}:", unique("cw-test-subs"));
    let store = SubscriptionStore::new(&schema.0, &prefix);
    let mut con = redis().await;
    let now = now_in_whole_seconds();

    let first = store
        .credit(&mut pg, &mut con, &granted(11, 30, "5:77"), now)
        .await
        .unwrap();
    assert!(matches!(first, Credited::New { .. }), "{first:?}");
    // The same command handled again: nothing more.
    let again = store
        .credit(&mut pg, &mut con, &granted(11, 30, "5:77"), now)
        .await
        .unwrap();
    assert_eq!(again, Credited::AlreadyCredited);
    // Another command, the same words: a grant of its own.
    let other = store
        .credit(&mut pg, &mut con, &granted(11, 30, "5:78"), now)
        .await
        .unwrap();
    assert!(matches!(other, Credited::New { .. }), "{other:?}");
    assert_eq!(
        store.expires_at(&pg, 11).await.unwrap(),
        Some(nanos(now) + 60 * DAY),
        "two grants, not three"
    );
    assert_eq!(
        store.recorded_grant(&pg, "5:77").await.unwrap(),
        Some(callwatch_ledger::subscriptions::RecordedGrant {
            chat_id: 11,
            days: 30,
            granted_by: Some(5),
        })
    );
    assert_eq!(store.recorded_grant(&pg, "5:79").await.unwrap(), None);

    // The copy, lost, is written again from the record.
    let key = format!("{prefix}subscription:11");
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        store.copy_from_record(&pg, &mut con, 11).await.unwrap(),
        Some(("grant".to_owned(), nanos(now) + 60 * DAY))
    );
    assert_eq!(copy(&mut con, &key).await.unwrap()["status"], "active");
    assert_eq!(
        store.copy_from_record(&pg, &mut con, 12).await.unwrap(),
        None
    );
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    drop(schema);
}
