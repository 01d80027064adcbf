//! The dashboard's signing key against the machine's Redis (database 11, a
//! prefix of the test's own): made once at first start and read back by
//! every later start, the settings' own winning, and a key in Redis that
//! callwatch did not make refused rather than used.

use callwatch_common::secret::Secret;
use callwatch_dashboard::DashboardConfig;
use callwatch_dashboard::key::{KeyError, Origin, signing_key};
use callwatch_streams::connection::{RedisTimeouts, managed_connection};
use callwatch_testkit::servers::{OwnPrefix, redis_url};

const REDIS_DB: u8 = 11;

#[tokio::test]
async fn a_key_is_made_once_and_every_later_start_reads_it() {
    let keys = OwnPrefix::new("cw-test-dashkey", REDIS_DB);
    let mut con = managed_connection(&redis_url(REDIS_DB), &RedisTimeouts::default()).unwrap();
    let config = DashboardConfig::default();
    let (made, origin) = signing_key(&config, &mut con, &keys.prefix).await.unwrap();
    assert_eq!((made.len(), origin), (64, Origin::Made));
    for _ in 0..3 {
        let (again, origin) = signing_key(&config, &mut con, &keys.prefix).await.unwrap();
        assert_eq!((&again, origin), (&made, Origin::Kept));
    }
    let stored: String = redis::cmd("GET")
        .arg(format!("{}dashboard:key", keys.prefix))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stored.as_bytes(), made.as_slice());

    // Two starts at once agree on one key.
    let other = OwnPrefix::new("cw-test-dashkey", REDIS_DB);
    let (mut a, mut b) = (con.clone(), con.clone());
    let (first, second) = tokio::join!(
        signing_key(&config, &mut a, &other.prefix),
        signing_key(&config, &mut b, &other.prefix)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.0, second.0);
    assert_ne!(first.1, second.1, "one made it, the other read it");
}

#[tokio::test]
async fn the_settings_key_wins_and_a_foreign_one_is_refused() {
    let keys = OwnPrefix::new("cw-test-dashkey", REDIS_DB);
    let mut con = managed_connection(&redis_url(REDIS_DB), &RedisTimeouts::default()).unwrap();
    let configured = DashboardConfig {
        secret: Secret::new("s".repeat(40)),
        ..DashboardConfig::default()
    };
    let (key, origin) = signing_key(&configured, &mut con, &keys.prefix)
        .await
        .unwrap();
    assert_eq!(
        (key, origin),
        ("s".repeat(40).into_bytes(), Origin::Settings)
    );
    let () = redis::cmd("SET")
        .arg(format!("{}dashboard:key", keys.prefix))
        .arg("short")
        .query_async(&mut con)
        .await
        .unwrap();
    let refused = signing_key(&DashboardConfig::default(), &mut con, &keys.prefix).await;
    assert!(matches!(refused, Err(KeyError::Damaged(_))), "{refused:?}");
}
