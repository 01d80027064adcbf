//! TLS to Redis (`rediss://`) against a `redis-server` of the test's own
//! that speaks only TLS, with a CA and a server certificate made here: the
//! right CA connects and a write reads back; another CA, a host the
//! certificate does not name, and a plain server are each refused with an
//! error that says so.

use std::time::Duration;

use callwatch_streams::connection::{RedisConfig, RedisEndpoint, RedisTimeouts};
use callwatch_testkit::{OwnRedis, TestPki};

fn config(url: String, ca_file: &std::path::Path) -> RedisConfig {
    RedisConfig {
        url: url.into(),
        ca_file: ca_file.display().to_string(),
        ..RedisConfig::default()
    }
}

/// The error of one connection attempt, as text.
async fn refused(endpoint: &RedisEndpoint) -> String {
    let client = endpoint.client().expect("a client");
    let limits = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    match client
        .get_multiplexed_async_connection_with_config(&limits)
        .await
    {
        Ok(_) => panic!("connected to {:?}, which should be refused", endpoint.url),
        Err(e) => endpoint.explain(e).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_servers_ca_round_trips_a_write() {
    let pki = TestPki::make("redis_tls_ok");
    let server = OwnRedis::start_tls("redis_tls_ok", &pki);
    let config = config(server.url(), &pki.ca);
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let mut con = config.connect().expect("a managed connection");
    let () = redis::cmd("SET")
        .arg("callwatch:tls")
        .arg("through TLS")
        .query_async(&mut con)
        .await
        .expect("SET over TLS");
    let back: String = redis::cmd("GET")
        .arg("callwatch:tls")
        .query_async(&mut con)
        .await
        .expect("GET over TLS");
    assert_eq!(back, "through TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_refuses_a_server_another_ca_signed_or_for_another_host() {
    let pki = TestPki::make("redis_tls_refused");
    let server = OwnRedis::start_tls("redis_tls_refused", &pki);
    let wrong_ca = refused(&config(server.url(), &pki.other_ca).endpoint()).await;
    assert!(
        wrong_ca.contains("invalid peer certificate") && wrong_ca.contains("UnknownIssuer"),
        "{wrong_ca}"
    );
    // 127.0.0.2 reaches the same server; its certificate names 127.0.0.1.
    let wrong_host = refused(&config(server.url_at("127.0.0.2"), &pki.ca).endpoint()).await;
    assert!(
        wrong_host.contains("invalid peer certificate")
            && wrong_host.contains("not valid for name"),
        "{wrong_host}"
    );
    // Without a CA file, the public roots: the test CA is not among them.
    let public_roots = refused(&RedisEndpoint::new(server.url())).await;
    assert!(public_roots.contains("UnknownIssuer"), "{public_roots}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_against_a_plain_server_fails_clearly() {
    let pki = TestPki::make("redis_tls_plain");
    let plain = OwnRedis::start("redis_tls_plain");
    let url = format!("rediss://127.0.0.1:{}/0", plain.port);
    let error = refused(&config(url, &pki.ca).endpoint()).await;
    assert!(
        error.contains("no answer to the TLS handshake")
            && error.contains("does the server speak TLS on that port?"),
        "{error}"
    );
}

#[test]
fn a_ca_file_needs_rediss_and_must_be_readable() {
    let pki = TestPki::make("redis_tls_config");
    let plain = config("redis://127.0.0.1:6379/0".to_owned(), &pki.ca);
    assert_eq!(
        plain.problems(),
        ["redis.ca_file is set but redis.url is not a rediss:// (TLS) URL"]
    );
    let missing = config(
        "rediss://127.0.0.1:6380/0".to_owned(),
        &pki.dir().join("nowhere.pem"),
    );
    let problems = missing.problems().join("\n");
    assert!(
        problems.contains("cannot read redis.ca_file") && problems.contains("nowhere.pem"),
        "{problems}"
    );
    let timeouts = RedisTimeouts::default();
    assert!(missing.endpoint().managed(&timeouts).is_err());
}
