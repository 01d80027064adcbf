//! `migrate` against the machine's PostgreSQL, each test in a schema of its
//! own that it drops at the end (also when it fails).
//!
//! The server comes from `CALLWATCH_TEST_DATABASE_URL`, by default the local
//! one with trust authentication (`scripts/test` starts it if needed).

use callwatch_ledger::migrate::{MIGRATIONS, migrate};
use callwatch_testkit::{Schema, connect_pg, database_url, unique};
use tokio_postgres::Client;

async fn connect() -> Client {
    connect_pg(&database_url()).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at `{}`: {e} (scripts/test starts it)",
            database_url()
        )
    })
}

/// A schema name no other test (or run) uses, dropped when this is dropped.
fn new_schema(test: &str) -> Schema {
    Schema(format!("cw_test_{}", unique(test)))
}

async fn tables(client: &Client, schema: &str) -> Vec<String> {
    let mut names: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Sorted here: the server's collation may order `_` differently.
    names.sort();
    names
}

fn all_versions() -> Vec<i32> {
    MIGRATIONS.iter().map(|m| m.version).collect()
}

#[tokio::test]
async fn migrate_applies_each_migration_once() {
    let schema = new_schema("once");
    let mut client = connect().await;
    assert_eq!(
        migrate(&mut client, &schema.0).await.unwrap(),
        all_versions()
    );
    assert_eq!(
        migrate(&mut client, &schema.0).await.unwrap(),
        Vec::<i32>::new()
    );
    assert_eq!(
        tables(&client, &schema.0).await,
        [
            "activity_log",
            "alert_audit",
            "calls",
            "callwatch_migrations",
            "payment_cursor",
            "payment_quotes",
            "payments",
            "payments_announced",
            "payments_dropped",
            "subscription_reminders",
            "subscriptions",
            "unmatched_payments"
        ]
    );
}

#[tokio::test]
async fn concurrent_migrators_apply_each_migration_once() {
    let schema = new_schema("concurrent");
    let (mut a, mut b) = (connect().await, connect().await);
    let (ra, rb) = tokio::join!(migrate(&mut a, &schema.0), migrate(&mut b, &schema.0));
    let mut applied = ra.unwrap();
    applied.extend(rb.unwrap());
    assert_eq!(
        applied,
        all_versions(),
        "one migrator applied everything, the other nothing"
    );
}

#[tokio::test]
async fn schema_keeps_money_and_audit_rows_honest() {
    let schema = new_schema("constraints");
    let mut client = connect().await;
    migrate(&mut client, &schema.0).await.unwrap();
    client
        .batch_execute(&format!("SET search_path TO \"{}\"", schema.0))
        .await
        .unwrap();
    // A Solana payment must name its transaction, and a signature credits once.
    let no_signature = "INSERT INTO payments (chat_id, payment_method, plan, days) \
                        VALUES (1, 'solana', 'month', 30)";
    assert!(client.execute(no_signature, &[]).await.is_err());
    let pay = "INSERT INTO payments (chat_id, payment_method, signature, plan, days, amount_sol) \
               VALUES (1, 'solana', 'sig1', 'month', 30, 0.5)";
    client.execute(pay, &[]).await.unwrap();
    assert!(
        client.execute(pay, &[]).await.is_err(),
        "a replayed signature is refused"
    );
    // A grant names its admin.
    let anonymous_grant = "INSERT INTO payments (chat_id, payment_method, plan, days) \
                           VALUES (1, 'grant', 'month', 30)";
    assert!(client.execute(anonymous_grant, &[]).await.is_err());
    // Audit rows are idempotent on their natural key.
    let audit = "INSERT INTO alert_audit (chat_id, token, kind, threshold, alert_at, fdv_usd) \
                 VALUES (42, 'So11111111111111111111111111111111111111112', 'multiplier_alert', 10, \
                 '2026-11-25T11:00:00Z', 1562500) ON CONFLICT DO NOTHING";
    assert_eq!(client.execute(audit, &[]).await.unwrap(), 1);
    assert_eq!(client.execute(audit, &[]).await.unwrap(), 0);
}

#[tokio::test]
async fn unsafe_schema_name_is_refused_before_any_sql() {
    let mut client = connect().await;
    let err = migrate(&mut client, "x\"; DROP SCHEMA public; --")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not allowed"), "{err}");
}
