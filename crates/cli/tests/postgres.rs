//! Real `cart-actor` processes on a real PostgreSQL server: failover, rolling
//! restarts, database outages and migration from the file store.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::load::{Tally, member_count, start_writers};
use support::{SKU_A, SKU_B, Server, client, qty, read, wait_until};

fn pg_node(dir: &std::path::Path, url: &str, peers: Option<&str>) -> Server {
    let mut args = vec!["--store", url];
    if let Some(p) = peers {
        args.extend(["--peers", p]);
    }
    Server::start(dir, &args)
}

/// Every cart's events after its snapshot have the sequence numbers
/// `snapshot+1..=head` exactly once: a snapshot deletes the events it
/// covers, so the log of a cart starts where its snapshot ends.
async fn assert_no_forks(url: &str) {
    let (db, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows = db
        .query(
            "SELECT e.cart_id, count(*), max(e.seq), min(e.seq), \
             COALESCE((SELECT s.version FROM cart_snapshots s WHERE s.cart_id = e.cart_id), 0) \
             FROM cart_events e GROUP BY e.cart_id",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let (cart, count, max, min, snapshot): (String, i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        assert_eq!(
            (min, max),
            (snapshot + 1, snapshot + count),
            "cart {cart}: sequence numbers after snapshot {snapshot} are not contiguous"
        );
    }
    let heads = db
        .query(
            "SELECT h.cart_id FROM cart_heads h \
             LEFT JOIN (SELECT cart_id, max(seq) m FROM cart_events GROUP BY cart_id) e ON e.cart_id = h.cart_id \
             LEFT JOIN cart_snapshots s ON s.cart_id = h.cart_id \
             WHERE h.version <> GREATEST(COALESCE(e.m, 0), COALESCE(s.version, 0))",
            &[],
        )
        .await
        .unwrap();
    assert!(heads.is_empty(), "every head's version is its last sequence number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_the_owner_on_postgres_loses_nothing_and_never_forks() {
    let url = cart_testkit::fresh_database().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = pg_node(dirs[0].path(), &url, None);
    let b = pg_node(dirs[1].path(), &url, Some(&a.node));
    let c = pg_node(dirs[2].path(), &url, Some(&b.node));
    wait_until("convergence", Duration::from_secs(15), || async {
        member_count(&a).await == 3 && member_count(&b).await == 3 && member_count(&c).await == 3
    })
    .await;
    let urls = Arc::new(Mutex::new(vec![a.internal_url.clone(), b.internal_url.clone()]));
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Tally::default())));
    let writers = start_writers(24, urls, Arc::clone(&stop), Arc::clone(&tally));
    wait_until("load", Duration::from_secs(20), || async {
        tally.lock().unwrap().acked.values().sum::<u64>() > 300
    })
    .await;
    c.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let t = std::mem::take(&mut *tally.lock().unwrap());
    // C's carts are served again once its lease has surely run out.
    wait_until("every cart to be served again", Duration::from_secs(10), || async {
        for cart in t.acked.keys() {
            if read(&a, cart).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    for (cart, acked) in &t.acked {
        let stored = qty(&read(&a, cart).await.unwrap());
        let uncertain = t.uncertain.get(cart).copied().unwrap_or(0);
        assert!(
            stored >= *acked && stored <= acked + uncertain,
            "{cart}: {acked} acked, {uncertain} uncertain, {stored} stored"
        );
    }
    assert_no_forks(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_under_load_fails_no_request() {
    let url = cart_testkit::fresh_database().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = vec![pg_node(dirs[0].path(), &url, None)];
    nodes.push(pg_node(dirs[1].path(), &url, Some(&nodes[0].node)));
    nodes.push(pg_node(dirs[2].path(), &url, Some(&nodes[1].node)));
    let refs: Vec<&Server> = nodes.iter().collect();
    wait_until("convergence", Duration::from_secs(15), || async {
        for n in &refs {
            if member_count(n).await != 3 {
                return false;
            }
        }
        true
    })
    .await;
    let urls =
        Arc::new(Mutex::new(nodes.iter().map(|n| n.internal_url.clone()).collect::<Vec<_>>()));
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Tally::default())));
    let writers = start_writers(16, Arc::clone(&urls), Arc::clone(&stop), Arc::clone(&tally));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, dir) in dirs.iter().enumerate() {
        // The load balancer stops sending to the node (its readiness is about
        // to go false), then it is terminated and started again.
        let old = nodes.remove(i);
        urls.lock().unwrap().retain(|u| *u != old.internal_url);
        let peer = nodes[0].node.clone();
        let status = tokio::task::spawn_blocking(move || old.terminate()).await.unwrap();
        assert!(status.success());
        let fresh = pg_node(dir.path(), &url, Some(&peer));
        wait_until("the restarted node to be ready", Duration::from_secs(15), || async {
            client()
                .get(format!("{}/readyz", fresh.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
                && member_count(&fresh).await == 3
        })
        .await;
        urls.lock().unwrap().push(fresh.internal_url.clone());
        nodes.insert(i, fresh);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let mut t = std::mem::take(&mut *tally.lock().unwrap());
    if !t.uncertain.is_empty() {
        for n in &nodes {
            for l in n
                .logs()
                .iter()
                .filter(|l| {
                    l.contains("retrying") || l.contains("refused") || l.contains("membership")
                })
                .take(12)
            {
                eprintln!("{} {}", n.node, &l[..l.len().min(330)]);
            }
        }
    }
    assert!(
        t.uncertain.is_empty(),
        "failed requests during the roll: {:?}: {:?}",
        t.uncertain,
        &t.errors[..t.errors.len().min(5)]
    );
    t.latencies_us.sort_unstable();
    let p =
        |q: f64| t.latencies_us[((t.latencies_us.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    eprintln!(
        "rolling restart: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        t.latencies_us.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    for (cart, acked) in &t.acked {
        assert_eq!(qty(&read(&nodes[0], cart).await.unwrap()), *acked, "{cart}");
    }
    assert_no_forks(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_503_quickly_and_recovers_by_itself() {
    let mut db = tokio::task::spawn_blocking(cart_testkit::PgServer::start).await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = pg_node(dir.path(), &db.url, None);
    let http = client();
    let add = |cart: &str| {
        http.post(format!("{}/api/carts/{cart}/items", node.internal_url))
            .json(&json!({"sku": SKU_B}))
            .send()
    };
    for cart in ["o1", "o2"] {
        assert_eq!(add(cart).await.unwrap().status(), 200);
    }
    db = tokio::task::spawn_blocking(move || {
        db.stop();
        db
    })
    .await
    .unwrap();
    let started = Instant::now();
    let r = add("o1").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    wait_until("readiness to go false", Duration::from_secs(10), || async {
        http.get(format!("{}/readyz", node.url)).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    db = tokio::task::spawn_blocking(move || {
        db.resume().unwrap();
        db
    })
    .await
    .unwrap();
    wait_until("readiness to come back", Duration::from_secs(15), || async {
        http.get(format!("{}/readyz", node.url)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let recovered = AtomicUsize::new(0);
    wait_until("writes to work again", Duration::from_secs(10), || async {
        let ok = add("o2").await.is_ok_and(|r| r.status() == 200);
        if ok {
            recovered.fetch_add(1, Ordering::SeqCst);
        }
        ok
    })
    .await;
    let o1 = read(&node, "o1").await.unwrap();
    assert_eq!(qty(&o1), 1, "the refused write was not applied; the acknowledged one is there");
    assert_eq!(qty(&read(&node, "o2").await.unwrap()), 2);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_copies_the_file_store_to_postgres_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let mut before = Vec::new();
    {
        let file_node = Server::start(dir.path(), &[]);
        for i in 0..20 {
            let cart = format!("mig-{i}");
            for sku in [SKU_A, SKU_B] {
                let r = client()
                    .post(format!("{}/api/carts/{cart}/items", file_node.internal_url))
                    .header("idempotency-key", format!("k-{i}-{sku}"))
                    .json(&json!({"sku": sku}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            before.push((cart.clone(), read(&file_node, &cart).await.unwrap()));
        }
        assert!(file_node.terminate().success());
    }
    let url = cart_testkit::fresh_database().await;
    let migrate = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-actor"))
            .args(["migrate", "--from", dir.path().to_str().unwrap(), "--to", &url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = migrate();
    assert!(first.contains("20 carts") && first.contains("40 events copied"), "{first}");
    let second = migrate();
    assert!(second.contains("0 events copied, 40 already present"), "{second}");
    let pg = pg_node(tempfile::tempdir().unwrap().path(), &url, None);
    for (cart, json) in &before {
        assert_eq!(&read(&pg, cart).await.unwrap(), json, "{cart}");
    }
    // Idempotency keys came along.
    let retry = client()
        .post(format!("{}/api/carts/mig-0/items", pg.internal_url))
        .header("idempotency-key", format!("k-0-{SKU_A}"))
        .json(&json!({"sku": SKU_A}))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(qty(&read(&pg, "mig-0").await.unwrap()), 2, "the retried add was not applied again");
    assert_no_forks(&url).await;
}
