//! Crash and shutdown: every acknowledged mutation survives.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{SKU_A, Server, client, qty, read};

const WRITERS: usize = 24;

struct Load {
    acked: Vec<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts one writer per cart, each adding one unit at a time and counting
/// the adds the server acknowledged.
fn start_load(url: &str) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let http = client();
    let mut acked = Vec::new();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let count = Arc::new(AtomicU64::new(0));
        acked.push(Arc::clone(&count));
        let (http, stop) = (http.clone(), Arc::clone(&stop));
        let url = format!("{url}/api/carts/w{w}/items");
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) && count.load(Ordering::SeqCst) < 900 {
                match http.post(&url).json(&json!({"sku": SKU_A, "quantity": 1})).send().await {
                    Ok(r) if r.status() == 200 => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) if r.status() == 503 => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    // The server is gone.
                    Err(_) => return,
                }
            }
        }));
    }
    Load { acked, stop, tasks }
}

async fn wait_for_acks(load: &Load, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acked.iter().map(|a| a.load(Ordering::SeqCst)).sum::<u64>() < at_least {
        assert!(Instant::now() < deadline, "load made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stored_quantities(server: &Server) -> Vec<u64> {
    let mut out = Vec::new();
    for w in 0..WRITERS {
        // A cart that never got an acknowledged add may not exist: 0.
        out.push(read(server, &format!("w{w}")).await.map_or(0, |cart| qty(&cart)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_write_loses_no_acknowledged_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let load = start_load(&server.internal_url);
    wait_for_acks(&load, 400).await;
    server.kill();
    for t in load.tasks {
        t.await.unwrap();
    }
    let server = Server::start(dir.path(), &[]);
    let stored = stored_quantities(&server).await;
    for (w, acked) in load.acked.iter().enumerate() {
        let acked = acked.load(Ordering::SeqCst);
        // At most one request per writer was in flight at the kill; it may or
        // may not have reached the disk, but every acknowledged one did.
        assert!(
            stored[w] >= acked && stored[w] <= acked + 1,
            "cart w{w}: {acked} acknowledged, {} stored",
            stored[w]
        );
    }
}

/// A SIGTERM while the node still waits for its first majority (here: a
/// peer that never answers) is a clean shutdown, not the signal's default
/// of dying on the spot: the handlers are installed before anything starts.
#[test]
fn sigterm_during_start_up_is_a_clean_shutdown() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let peer = format!("127.0.0.1:{}:{}", silent.port(), silent.port());
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--peers", &peer]);
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_requests_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    for policy in ["always", "batch:50"] {
        let data = dir.path().join(policy.replace(':', "-"));
        let server = Server::start(&data, &["--fsync", policy]);
        let load = start_load(&server.internal_url);
        wait_for_acks(&load, 200).await;
        let status = server.terminate();
        assert!(status.success(), "{policy}: exit status {status}");
        load.stop.store(true, Ordering::SeqCst);
        for t in load.tasks {
            t.await.unwrap();
        }
        let server = Server::start(&data, &[]);
        let stored = stored_quantities(&server).await;
        for (w, acked) in load.acked.iter().enumerate() {
            let acked = acked.load(Ordering::SeqCst);
            assert!(
                stored[w] >= acked && stored[w] <= acked + 1,
                "{policy} cart w{w}: {acked} acknowledged, {} stored",
                stored[w]
            );
        }
    }
}

#[tokio::test]
async fn a_torn_tail_on_disk_is_repaired_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = Server::start(dir.path(), &[]);
        let http = client();
        for _ in 0..3 {
            let r = http
                .post(format!("{}/api/carts/t1/items", server.internal_url))
                .json(&json!({"sku": SKU_A}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        server.terminate();
    }
    // Half a record at the end, as a crash during a write leaves it.
    let log = dir.path().join("events.log");
    let len = std::fs::metadata(&log).unwrap().len();
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_within(..20);
    std::fs::write(&log, &bytes).unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(qty(&read(&server, "t1").await.unwrap()), 3);
    assert!(server.logs().iter().any(|l| l.contains("torn tail")), "the repair is logged");
    assert!(server.terminate().success());
    // The new node claimed the cart after the repair: its claim follows the
    // last whole record, where the torn bytes were.
    let after = std::fs::read(&log).unwrap();
    let len = len as usize;
    assert_eq!(after[..len], bytes[..len], "the whole records are untouched");
    assert_ne!(after.get(len..len + 20), Some(&bytes[..20]), "the torn tail was cut off");
}

/// Runs the binary with `args` in `dir`: whether it succeeded, and its
/// standard output and error.
fn run_cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-actor"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Runs the binary; it must succeed. Returns its output.
fn cli(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_cli(std::path::Path::new("."), args);
    assert!(ok, "{args:?}: {stderr}");
    stdout
}

/// Runs the binary in `dir`; it must fail. Returns what it said: standard
/// error, and standard output (where `serve`'s logger reports a fatal error).
fn cli_refused(dir: &std::path::Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_cli(dir, args);
    assert!(!ok, "{args:?} succeeded: {stdout}");
    format!("{stderr}{stdout}")
}

/// A value that would make the node useless or hang (a zero limit, deadline
/// or timeout, a URL that is not one) is refused at start, and the message
/// names the flag.
#[test]
fn flags_that_cannot_work_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let bad: &[(&str, &str)] = &[
        ("--ping-misses", "0"),
        ("--rpc-deadline", "0ms"),
        ("--max-grains", "0"),
        ("--max-connections", "0"),
        ("--max-watchers", "0"),
        ("--pg-pool-size", "0"),
        ("--lease", "0s"),
        ("--ping-interval", "0"),
        ("--idle-ttl", "0s"),
        ("--shutdown-timeout", "0s"),
        ("--header-timeout", "0s"),
        ("--klarna-timeout", "0s"),
        ("--max-grains", "-1"),
        ("--klarna-url", "not a url"),
        ("--klarna-url", "ftp://klarna.example"),
        ("--public-url", "localhost:8080"),
        ("--public-url", "http://"),
    ];
    for (flag, value) in bad {
        // A value wrongly accepted would start a server: it is killed after
        // a deadline and the test fails, rather than hanging.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cart-actor"))
            .current_dir(dir.path())
            .args(["serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0"])
            .arg(format!("{flag}={value}"))
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{flag} {value} was accepted: the server started");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut refused = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut refused).unwrap();
        assert!(!status.success(), "{flag} {value}");
        assert!(refused.contains(flag), "{flag} {value}: {refused}");
    }
    assert!(!dir.path().join("data").exists(), "nothing was started");
}

/// A backup taken under write load holds every mutation acknowledged before
/// it began; restored (here into PostgreSQL, and from there backed up and
/// restored again into a file store), it serves them, and a cookie minted
/// before the backup still names its cart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_every_mutation_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let cookie = support::new_shopper(&server).await;
    let load = start_load(&server.internal_url);
    wait_for_acks(&load, 300).await;
    let before: Vec<u64> = load.acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let backup = dir.path().join("backup");
    let (data_arg, backup_arg) = (data.display().to_string(), backup.display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        cli(&["backup", "--from", &data_arg, "--to", &backup_arg])
    })
    .await
    .unwrap();
    assert!(out.contains("backed up"), "{out}");
    wait_for_acks(&load, before.iter().sum::<u64>() + 200).await;
    load.stop.store(true, Ordering::SeqCst);
    for t in load.tasks {
        t.await.unwrap();
    }
    drop(server);

    let pg = cart_testkit::fresh_database().await;
    let restored = cli(&["restore", "--from", &backup.display().to_string(), "--to", &pg]);
    assert!(restored.contains("restored"), "{restored}");
    let again = dir.path().join("backup-of-pg");
    cli(&["backup", "--from", &pg, "--to", &again.display().to_string()]);
    let fresh = dir.path().join("fresh");
    cli(&["restore", "--from", &again.display().to_string(), "--to", &fresh.display().to_string()]);
    for store in [vec!["--store", pg.as_str()], vec![]] {
        let node_dir = if store.is_empty() { fresh.clone() } else { dir.path().join("pg-node") };
        let node = Server::start(&node_dir, &store);
        let stored = stored_quantities(&node).await;
        for (w, (acked, stored)) in before.iter().zip(&stored).enumerate() {
            assert!(
                stored >= acked,
                "{store:?}: cart w{w}: {acked} acknowledged before, {stored} restored"
            );
        }
        let cart = client()
            .get(format!("{}/cart/", node.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(cart.status(), 200, "{store:?}: the minted cookie still names its cart");
        let cart: serde_json::Value = cart.json().await.unwrap();
        assert_eq!(qty(&cart), 1, "{store:?}: {cart}");
    }
    // A backup refuses to overwrite, and a restore refuses a store that has
    // another cart-id key.
    let (data, backup) = (data.display().to_string(), backup.display().to_string());
    let refused = cli_refused(dir.path(), &["backup", "--from", &data, "--to", &backup]);
    assert!(refused.contains("not empty"), "{refused}");
    let other = dir.path().join("other");
    drop(Server::start(&other, &[]));
    let other = other.display().to_string();
    let refused = cli_refused(dir.path(), &["restore", "--from", &backup, "--to", &other]);
    assert!(refused.contains("another cart-id-key"), "{refused}");
}

/// Store mistakes that used to lose data quietly are errors: an unknown
/// `--store` scheme (it used to become a directory named `mysql:`), and a
/// `migrate` whose source does not exist (it used to copy nothing, exit 0).
#[test]
fn store_mistakes_are_errors_not_empty_stores() {
    let dir = tempfile::tempdir().unwrap();
    let refused = cli_refused(dir.path(), &["serve", "--store", "mysql://db/carts"]);
    assert!(refused.contains("unknown store"), "{refused}");
    assert!(!dir.path().join("mysql:").exists(), "no directory named after the URL");
    let refused = cli_refused(dir.path(), &["migrate", "--from", "./typo", "--to", "./copy"]);
    assert!(refused.contains("no event store at ./typo"), "{refused}");
    assert!(!dir.path().join("copy").exists(), "nothing was created");
}
