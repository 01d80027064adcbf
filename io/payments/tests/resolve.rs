//! Admins resolving one unmatched payment at once: the claim and the credit
//! are one transaction, so exactly one of them credits it, to the chat it
//! named, and every other is told who did. Each test has a PostgreSQL
//! schema and a Redis key prefix of its own, and removes them.

use std::sync::Arc;
use std::time::SystemTime;

use callwatch_payments::Ledger;
use callwatch_payments::config::PaymentsConfig;
use callwatch_payments::unmatched::{Resolution, Resolved};
use callwatch_testkit::fake_rpc::pubkey;
use callwatch_testkit::{OwnPrefix, connect_pg, connect_redis, database_url, own_schema};
use tokio::sync::Barrier;

/// Admins racing on each payment.
const RACERS: i64 = 8;

/// `RACERS` admins resolve `signature` at once, each to a chat of its own
/// (`chat0 + admin`); what each was told, by admin.
async fn race(ledger: &Ledger, signature: &str, chat0: i64) -> Vec<(i64, Resolved)> {
    let start = Arc::new(Barrier::new(RACERS as usize));
    let mut racers = Vec::new();
    for admin in 0..RACERS {
        let (ledger, start, signature) = (ledger.clone(), Arc::clone(&start), signature.to_owned());
        racers.push(tokio::spawn(async move {
            let mut pg = connect_pg(&database_url()).await.unwrap();
            let mut redis = connect_redis(13).await;
            let resolution = Resolution {
                signature: &signature,
                chat_id: chat0 + admin,
                plan: "month",
                admin_chat_id: admin,
            };
            start.wait().await;
            let resolved = ledger
                .resolve_unmatched(&mut pg, &mut redis, &resolution, SystemTime::now())
                .await;
            (
                admin,
                resolved.unwrap_or_else(|e| panic!("admin {admin}: {e}")),
            )
        }));
    }
    let mut told = Vec::new();
    for racer in racers {
        told.push(racer.await.unwrap());
    }
    told
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_resolving_one_payment_at_once_credit_it_once_to_the_chat_that_claimed_it() {
    let (schema, pg) = own_schema("resolve_race").await;
    let keys = OwnPrefix::new("cw-test-resolve", 13);
    let config = PaymentsConfig {
        rpc_url: "http://127.0.0.1:1".into(),
        receiving_address: pubkey(1),
        ..PaymentsConfig::default()
    };
    let ledger = Ledger::new(config, &schema.0, &keys.prefix).unwrap();
    let table = |name: &str| format!("\"{}\".{name}", schema.0);
    // Several rounds, so that an interleaving that breaks it has its chances.
    for round in 0..4_i64 {
        let signature = format!("{}{round}", "5".repeat(80));
        pg.execute(
            &format!(
                "INSERT INTO {} (signature, reason, received, seen_at) \
                 VALUES ($1, 'unknown_reference', 800000000, now())",
                table("unmatched_payments")
            ),
            &[&signature],
        )
        .await
        .unwrap();
        let chat0 = 1_000 * (round + 1);
        let told = race(&ledger, &signature, chat0).await;

        let winners: Vec<i64> = told
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r,
                    Resolved::Credited {
                        announced: true,
                        ..
                    }
                )
            })
            .map(|(admin, _)| *admin)
            .collect();
        let [winner] = winners[..] else {
            panic!("round {round}: not one credit: {told:?}")
        };
        for (admin, resolved) in &told {
            if *admin != winner {
                assert_eq!(
                    *resolved,
                    Resolved::AlreadyResolved {
                        resolved_by: winner,
                        chat_id: chat0 + winner
                    },
                    "round {round}, admin {admin}"
                );
            }
        }
        let paid: Vec<i64> = pg
            .query(
                &format!(
                    "SELECT chat_id FROM {} WHERE signature = $1",
                    table("payments")
                ),
                &[&signature],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            paid,
            [chat0 + winner],
            "round {round}: one credit, to the winner"
        );
        let claim = pg
            .query_one(
                &format!(
                    "SELECT resolved_by, resolved_chat_id FROM {} WHERE signature = $1",
                    table("unmatched_payments")
                ),
                &[&signature],
            )
            .await
            .unwrap();
        let claim: (i64, i64) = (claim.get(0), claim.get(1));
        assert_eq!(claim, (winner, chat0 + winner), "round {round}");
        let subscribed: i64 = pg
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE chat_id BETWEEN $1 AND $2",
                    table("subscriptions")
                ),
                &[&chat0, &(chat0 + RACERS)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(subscribed, 1, "round {round}: only the winner's chat");
    }
    drop(keys);
    drop(schema);
}
