//! TLS and passwords to PostgreSQL against a real server that serves TLS
//! only (certificates made by the test) and requires a SCRAM password.

use std::time::Duration;

use cart_store::{EventStore, Fence, NewEvent, PgStore, PgStoreOptions};
use cart_testkit::certs::TestCa;
use cart_testkit::{PgServer, PgSetup};

const PASSWORD: &str = "pg-secret-Password-7";

struct Db {
    server: PgServer,
    ca_file: std::path::PathBuf,
    other_ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, other_ca_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    let (server, ca) = tokio::task::spawn_blocking(|| {
        let ca = TestCa::new("database CA");
        let server = PgServer::start_with(PgSetup {
            tls: Some(&ca),
            password: Some(PASSWORD),
            ..PgSetup::default()
        })
        .expect("a TLS PostgreSQL");
        (server, ca.pem())
    })
    .await
    .unwrap();
    std::fs::write(&ca_file, ca).unwrap();
    std::fs::write(&other_ca_file, TestCa::new("another CA").pem()).unwrap();
    Db { server, ca_file, other_ca_file, _dir: dir }
}

async fn open(url: String, password: Option<&str>) -> Result<PgStore, String> {
    let mut options = PgStoreOptions::new(url);
    options.password = password.map(str::to_owned);
    options.timeout = Duration::from_secs(5);
    PgStore::open(options).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_password_are_used_as_the_url_and_options_say() {
    let db = db().await;
    let port = db.server.port;
    let ca = db.ca_file.display().to_string();
    let full = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );

    let store = open(full.clone(), Some(PASSWORD)).await.expect("verify-full with the right CA");
    let event = NewEvent { kind: 2, timestamp_ms: 1, payload: vec![1, 2, 3], idempotency: None };
    store.append("tls-cart", 0, Fence::Claim("n1".into()), vec![event]).await.unwrap();
    assert_eq!(store.load("tls-cart").await.unwrap().events.len(), 1);
    drop(store);

    // The IP address is in the certificate too.
    let by_ip = format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    open(by_ip, Some(PASSWORD)).await.expect("verify-full by IP");
    // The password may also be in the URL.
    let in_url =
        format!("postgres://postgres:{PASSWORD}@localhost:{port}/postgres?sslmode=require");
    open(in_url, None).await.expect("require, password in the URL");

    let refusals = [
        (format!("postgres://postgres@localhost:{port}/postgres"), Some(PASSWORD), "plaintext"),
        (
            format!(
                "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
                db.other_ca_file.display()
            ),
            Some(PASSWORD),
            "a server certificate from another CA",
        ),
        (full.clone(), Some("wrong-password"), "a wrong password"),
        (full.clone(), None, "no password"),
    ];
    for (url, password, what) in refusals {
        let error = open(url, password).await.err().unwrap_or_else(|| panic!("{what} must fail"));
        assert!(!error.contains(PASSWORD), "{what}: the error shows no secret: {error}");
    }
    let debug = format!("{:?}", PgStoreOptions::new(format!("postgres://u:{PASSWORD}@h/db")));
    assert!(!debug.contains(PASSWORD), "{debug}");
}
