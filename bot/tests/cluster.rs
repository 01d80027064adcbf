//! `callwatch serve` on a Redis Cluster of the test's own (three masters
//! with a replica each, `OwnCluster`): the same market gives the same
//! alerts as on the machine's single Redis, with one process and with two
//! owning half the partitions each; a master killed mid-stream is
//! replaced by its replica without losing an alert; and a connection made
//! after the node in `redis.url` died still reaches the cluster.

mod common;

use std::time::{Duration, Instant};

use callwatch_ingest::stream::{Publisher, input_drained, publish};
use callwatch_streams::Conn;
use callwatch_streams::connection::{RedisEndpoint, RedisTimeouts};
use callwatch_testkit::fake_bot::FakeBotApi;
use callwatch_testkit::{OwnCluster, OwnRedis};
use common::*;

/// A connection to the test's cluster.
fn cluster_con(cluster: &OwnCluster) -> Conn {
    RedisEndpoint::cluster(cluster.url())
        .managed(&RedisTimeouts {
            response: Duration::from_secs(30),
            ..RedisTimeouts::default()
        })
        .unwrap()
}

/// The config at `path`, moved to the cluster at `url`.
fn onto_cluster(path: &std::path::Path, url: &str) {
    onto(path, url, true);
}

/// The config at `path`, moved to the Redis at `url`, a cluster or not.
fn onto(path: &std::path::Path, url: &str, cluster: bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let moved = text.replace(
        &format!("url = \"{}\"", redis_url()),
        &format!("url = \"{url}\"\ncluster = {cluster}"),
    );
    assert_ne!(text, moved, "the config names the machine's Redis");
    std::fs::write(path, moved).unwrap();
}

/// Senders fast enough that a few hundred alerts to 30 chats do not wait
/// on the per-chat limit.
fn fast_telegram(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap().replace(
        "[telegram]\n",
        "[telegram]\nper_chat_per_sec = 100.0\nglobal_per_sec = 400.0\n",
    );
    std::fs::write(path, text).unwrap();
}

async fn wait_drained(
    con: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
    partitions: u32,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !input_drained(con, prefix, partitions).await {
        assert!(
            Instant::now() < deadline,
            "{what}: the events were not all read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The messages the fake received, as (chat, text).
fn sent(fake: &FakeBotApi) -> Vec<(i64, String)> {
    fake.received()
        .into_iter()
        .map(|r| (r.chat_id, r.text))
        .collect()
}

/// Each expected message arrived, and nothing else.
fn assert_each_once(fake: &FakeBotApi, expected: &[(i64, String)]) {
    let mut got = sent(fake);
    let mut want = expected.to_vec();
    got.sort();
    want.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "messages sent against alerts decided"
    );
    assert!(got == want, "the alerts sent are the alerts decided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_one_and_two_processes_alert_as_on_one_server() {
    let lines = market_lines(20_000, 300, 30);
    let expected = expected_messages(&lines);
    assert!(
        expected.len() > 100,
        "the market alerts: {}",
        expected.len()
    );
    let cluster = OwnCluster::start("cluster-e2e");
    let mut ccon = cluster_con(&cluster);
    let mut scon = connect().await;

    // The reference: one process on the machine's single Redis.
    let single = Scratch::new("clsingle");
    publish(&mut scon, &single.prefix, 4, &lines).await.unwrap();
    let reference = spawn_serve(&config(
        &single.prefix,
        &single.schema,
        4,
        &[],
        "solo",
        None,
    ));

    // One process on the cluster, sending to Telegram.
    let one = Scratch::new("clone");
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    Publisher::for_cluster(&one.prefix, 4)
        .unwrap()
        .publish(&mut ccon, &lines)
        .await
        .unwrap();
    let path = config(&one.prefix, &one.schema, 4, &[], "solo", Some(&fake.url()));
    onto_cluster(&path, &cluster.url());
    fast_telegram(&path);
    let on_cluster = spawn_serve(&path);

    // Two processes on the cluster, half the partitions each.
    let two = Scratch::new("cltwo");
    Publisher::for_cluster(&two.prefix, 4)
        .unwrap()
        .publish(&mut ccon, &lines)
        .await
        .unwrap();
    let mut halves = Vec::new();
    for (name, owned) in [("a", [0, 1]), ("b", [2, 3])] {
        let path = config(&two.prefix, &two.schema, 4, &owned, name, None);
        onto_cluster(&path, &cluster.url());
        halves.push(spawn_serve(&path));
    }

    wait_drained(&mut scon, &single.prefix, 4, "one server").await;
    wait_drained(&mut ccon, &one.prefix, 4, "cluster, one process").await;
    wait_drained(&mut ccon, &two.prefix, 4, "cluster, two processes").await;
    wait_sent(&mut ccon, &one.prefix, &fake, expected.len(), None).await;
    for child in [reference, on_cluster].into_iter().chain(halves) {
        let exit = stop(child).await;
        assert!(exit.success(), "{exit:?}");
    }
    let reference = audit_rows(&single.schema).await;
    assert!(
        reference.len() > 100,
        "the market alerted: {}",
        reference.len()
    );
    let (one_rows, two_rows) = (audit_rows(&one.schema).await, audit_rows(&two.schema).await);
    assert_eq!(
        reference.len(),
        one_rows.len(),
        "one process on the cluster"
    );
    assert!(
        reference == one_rows,
        "one process on the cluster alerts as on one server"
    );
    assert_eq!(
        reference.len(),
        two_rows.len(),
        "two processes on the cluster"
    );
    assert!(
        reference == two_rows,
        "two processes on the cluster alert as one"
    );
    assert_each_once(&fake, &expected);
    drop(cluster);
}

/// A master killed mid-stream: its replica takes over (after the node
/// timeout, 1 s here), serve rides out the failover with retries, and
/// every alert still arrives. The master killed is the one holding the
/// outbox, which the keeper writes and the sender reads all the time, and
/// serve's `redis.url` names it: connections made after its death must
/// start from the nodes serve learnt of while it lived.
/// Replication is asynchronous, so what that master took in its last
/// moment may be lost (ARCHITECTURE.md "Redis Cluster"); the kill comes
/// while serve works through a backlog, and no alert may go missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_is_replaced_and_no_alert_is_lost() {
    let lines = market_lines(12_000, 150, 20);
    let expected = expected_messages(&lines);
    assert!(expected.len() > 50, "the market alerts: {}", expected.len());
    let mut cluster = OwnCluster::start("cluster-failover");
    let mut con = cluster_con(&cluster);
    // The test's own connection may start at the node killed, too.
    con.learn_nodes().await.unwrap();
    let scratch = Scratch::new("clfail");
    let prefix = scratch.prefix.clone();
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let path = config(&prefix, &scratch.schema, 4, &[], "solo", Some(&fake.url()));
    let victim = cluster.master_of(&format!("{prefix}callwatch:outbox"));
    onto_cluster(&path, &format!("redis://127.0.0.1:{victim}/0"));
    fast_telegram(&path);
    let mut publisher = Publisher::for_cluster(&prefix, 4).unwrap();
    let half = lines.len() / 2;
    publisher.publish(&mut con, &lines[..half]).await.unwrap();
    let serve = spawn_serve(&path);
    wait_drained(&mut con, &prefix, 4, "the first half").await;
    let sent_before = fake.count();
    assert!(sent_before > 0 && sent_before < expected.len());

    publisher.publish(&mut con, &lines[half..]).await.unwrap();
    let masters_before = cluster.masters();
    cluster.kill_and_fail_over(victim);
    let masters_after = cluster.masters();
    assert!(
        !masters_after.contains(&victim),
        "the killed master is gone"
    );
    assert_eq!(
        masters_after.len(),
        masters_before.len(),
        "a replica took its place"
    );

    wait_drained(&mut con, &prefix, 4, "after the failover").await;
    wait_sent(&mut con, &prefix, &fake, expected.len(), None).await;
    let exit = stop(serve).await;
    assert!(exit.success(), "{exit:?}");

    let mut got = sent(&fake);
    for w in &expected {
        let i = got.iter().position(|g| g == w);
        assert!(i.is_some(), "an alert lost in the failover: {w:?}");
        got.swap_remove(i.unwrap());
    }
    for extra in &got {
        assert!(
            expected.contains(extra),
            "a message that is no alert: {extra:?}"
        );
    }
    eprintln!(
        "failover: {} alerts, {} sent again after it",
        expected.len(),
        got.len()
    );
}

/// Runs `lines` through serve in two halves, stopped between and started
/// again with its snapshots removed, so the second start rebuilds from
/// Redis; returns the messages sent, sorted.
async fn halves_with_a_rebuild(
    con: &mut impl redis::aio::ConnectionLike,
    url: &str,
    cluster: bool,
    kind: &str,
    lines: &[Vec<u8>],
) -> Vec<(i64, String)> {
    let scratch = Scratch::new(kind);
    let prefix = scratch.prefix.clone();
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let path = config(&prefix, &scratch.schema, 4, &[], "solo", Some(&fake.url()));
    onto(&path, url, cluster);
    let mut publisher = if cluster {
        Publisher::for_cluster(&prefix, 4).unwrap()
    } else {
        Publisher::new(&prefix, 4).unwrap()
    };
    fast_telegram(&path);
    let half = lines.len() / 2;
    publisher.publish(con, &lines[..half]).await.unwrap();
    let first = spawn_serve(&path);
    wait_drained(con, &prefix, 4, "the first half").await;
    wait_sent(con, &prefix, &fake, 0, None).await;
    let exit = stop(first).await;
    assert!(exit.success(), "{exit:?}");
    assert!(fake.count() > 0, "alerts before the restart");
    std::fs::remove_dir_all(snapshot_dir(&prefix, "solo")).unwrap();

    publisher.publish(con, &lines[half..]).await.unwrap();
    let second = spawn_serve(&path);
    wait_drained(con, &prefix, 4, "the second half").await;
    wait_sent(con, &prefix, &fake, 0, None).await;
    let exit = stop(second).await;
    assert!(exit.success(), "{exit:?}");
    let mut got = sent(&fake);
    got.sort();
    got
}

/// A start without a snapshot on a cluster rebuilds from every master: a
/// market run in two halves with a rebuild between sends the same
/// messages on the cluster as on the single server (a rebuild that read
/// one node only would send calls again and miss multiples).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_without_a_snapshot_rebuilds_from_every_master() {
    let lines = market_lines(12_000, 150, 20);
    let cluster = OwnCluster::start("cluster-rebuild");
    let mut ccon = cluster_con(&cluster);
    // A server of its own: the comparison must not wait on other tests.
    let server = OwnRedis::start("cluster-rebuild-single");
    let mut scon = RedisEndpoint::new(server.url())
        .managed(&RedisTimeouts::default())
        .unwrap();
    let single = halves_with_a_rebuild(&mut scon, &server.url(), false, "rbsingle", &lines).await;
    let on_cluster =
        halves_with_a_rebuild(&mut ccon, &cluster.url(), true, "rbcluster", &lines).await;
    assert!(single.len() > 100, "the market alerts: {}", single.len());
    assert_eq!(
        single.len(),
        on_cluster.len(),
        "messages on one server and on the cluster"
    );
    assert!(
        single == on_cluster,
        "the same messages after a rebuild from the cluster"
    );
}

/// A connection made after the node `redis.url` names has died (its
/// replica promoted) starts from the nodes the process learnt of while it
/// lived: the ingest reader makes one after a `MOVED`, and a connection
/// knowing only the dead node would find nothing to start from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_after_the_url_node_died_starts_from_the_others() {
    let mut cluster = OwnCluster::start("cluster-seeds");
    let endpoint = RedisEndpoint::cluster(cluster.url());
    let timeouts = RedisTimeouts {
        response: Duration::from_secs(5),
        ..RedisTimeouts::default()
    };
    let mut first = endpoint.managed(&timeouts).unwrap();
    first.learn_nodes().await.unwrap();
    let named = cluster.url();
    let port: u16 = named
        .trim_end_matches("/0")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(
        cluster.masters().contains(&port),
        "the node in the URL ({port}) is a master at the start"
    );
    // A replica that has not finished its first sync is not promoted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // On the real clock: redis-cli under the clock-ahead run's
        // libfaketime can hang.
        let out = callwatch_testkit::server_command("redis-cli")
            .args(["-p", &port.to_string(), "info", "replication"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("state=online") {
            break;
        }
        assert!(Instant::now() < deadline, "{port}'s replica never synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill_and_fail_over(port);
    let mut later = endpoint.managed(&timeouts).unwrap();
    let key = "cw-test-seeds:{a}";
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query_async(&mut later)
        .await
        .expect("a new connection reaches the cluster without the dead node");
    let v: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut later)
        .await
        .unwrap();
    assert_eq!(v, "v");
}
