//! TLS to PostgreSQL by the connection string's `sslmode`, against
//! clusters of the test's own (`pg_createcluster`): one serving TLS with a
//! certificate signed by a CA made here, one without TLS. Every mode is
//! shown doing what `callwatch_ledger::server` says it does, and every
//! refusal names its reason.

use std::path::Path;

use callwatch_ledger::migrate::pg_detail;
use callwatch_ledger::server::PgServer;
use callwatch_testkit::{OwnPostgres, TestPki};

/// Whether the connection `url` describes is encrypted, by the server's
/// own account (`pg_stat_ssl`).
async fn encrypted(url: &str) -> Result<bool, String> {
    let server = PgServer::parse(url).map_err(|e| e.to_string())?;
    let (client, connection) = server.connect().await.map_err(|e| pg_detail(&e))?;
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| pg_detail(&e))?;
    drop(client);
    let _ = driver.await;
    Ok(row.get(0))
}

fn refused(result: Result<bool, String>, url: &str) -> String {
    match result {
        Ok(ssl) => panic!("{url} connected (ssl: {ssl}), and should have been refused"),
        Err(e) => e,
    }
}

/// A `postgres://` URL's query value for `path`, percent-encoded.
fn encoded(path: &Path) -> String {
    path.display().to_string().replace('/', "%2F")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_against_a_server_with_a_certificate_of_the_tests_own() {
    let pki = TestPki::make("pg_tls");
    let cluster = tokio::task::block_in_place(|| OwnPostgres::create_tls("cw_tls", &pki));
    let base = cluster.url();
    let (ca, other_ca) = (pki.ca.display(), pki.other_ca.display());

    // The default (prefer) connects in the clear, as callwatch always has.
    assert_eq!(encrypted(&base).await, Ok(false));
    assert_eq!(
        encrypted(&format!("{base} sslmode=disable")).await,
        Ok(false)
    );
    // require: encrypted, the certificate (not in any public root) unchecked.
    assert_eq!(
        encrypted(&format!("{base} sslmode=require")).await,
        Ok(true)
    );

    let full = format!("{base} sslmode=verify-full sslrootcert={ca}");
    assert_eq!(
        encrypted(&full).await,
        Ok(true),
        "verify-full, the right CA"
    );
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        encoded(&pki.ca)
    );
    assert_eq!(encrypted(&url).await, Ok(true), "the URL form");

    let wrong_ca = format!("{base} sslmode=verify-full sslrootcert={other_ca}");
    let e = refused(encrypted(&wrong_ca).await, &wrong_ca);
    assert!(
        e.contains("TLS handshake") && e.contains("UnknownIssuer"),
        "{e}"
    );
    let public_roots = format!("{base} sslmode=verify-full");
    let e = refused(encrypted(&public_roots).await, &public_roots);
    assert!(e.contains("UnknownIssuer"), "{e}");

    // The same server by a name its certificate does not carry.
    let other_host = format!(
        "host=not-the-server.example hostaddr=127.0.0.1 port={} dbname=postgres user=postgres \
         sslrootcert={ca}",
        cluster.port
    );
    let wrong_host = format!("{other_host} sslmode=verify-full");
    let e = refused(encrypted(&wrong_host).await, &wrong_host);
    assert!(
        e.contains("TLS handshake") && e.contains("not valid for name"),
        "{e}"
    );
    // verify-ca checks the chain only, so the name does not matter…
    let ca_only = format!("{other_host} sslmode=verify-ca");
    assert_eq!(
        encrypted(&ca_only).await,
        Ok(true),
        "verify-ca, another name"
    );
    // …but the chain does, and so it does for require with a root (libpq).
    let ca_wrong = format!("{base} sslmode=verify-ca sslrootcert={other_ca}");
    assert!(refused(encrypted(&ca_wrong).await, &ca_wrong).contains("UnknownIssuer"));
    let require_root = format!("{base} sslmode=require sslrootcert={other_ca}");
    assert!(refused(encrypted(&require_root).await, &require_root).contains("UnknownIssuer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_insisting_on_tls_against_a_server_without_it_fails_clearly() {
    let cluster = tokio::task::spawn_blocking(|| OwnPostgres::create("cw_plain"))
        .await
        .unwrap();
    assert_eq!(encrypted(&cluster.url()).await, Ok(false), "prefer");
    for mode in ["require", "verify-full"] {
        let url = format!("{} sslmode={mode}", cluster.url());
        let e = refused(encrypted(&url).await, &url);
        assert!(e.contains("server does not support TLS"), "{mode}: {e}");
    }
}
