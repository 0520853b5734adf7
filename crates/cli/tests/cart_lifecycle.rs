//! Cart and log lifecycle against real server processes: erasure by id
//! (on any node of a cluster), compaction on request leaving an erased
//! cart nowhere on disk, expiry of idle carts, and snapshots surviving a
//! restart.

mod support;

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use support::{SKU_A, Server, client, read, wait_until};

async fn add(server: &Server, cart: &str, quantity: u32) -> reqwest::StatusCode {
    client()
        .post(format!("{}/api/carts/{cart}/items", server.internal_url))
        .json(&json!({"sku": SKU_A, "quantity": quantity}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn erase(server: &Server, cart: &str) -> reqwest::StatusCode {
    let url = format!("{}/api/carts/{cart}", server.internal_url);
    client().request(Method::DELETE, url).send().await.unwrap().status()
}

async fn compact(server: &Server) -> serde_json::Value {
    let url = format!("{}/api/admin/compact", server.internal_url);
    let r = client().post(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Files under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for f in std::fs::read_dir(dir).unwrap().flatten() {
        let bytes = std::fs::read(f.path()).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(f.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[tokio::test]
async fn an_erased_cart_answers_404_and_after_compaction_is_nowhere_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--snapshot-every", "3"]);
    let gone = "erase-me-7f3a";
    for _ in 0..5 {
        assert_eq!(add(&server, gone, 1).await, 200);
    }
    assert_eq!(add(&server, "kept-cart", 2).await, 200);
    // A clean stop checkpoints the index, which then names the cart too.
    assert!(server.terminate().success());
    let held = files_holding(dir.path(), gone.as_bytes());
    assert!(held.iter().any(|f| f.ends_with(".checkpoint")), "{held:?}");
    let server = Server::start(dir.path(), &["--snapshot-every", "3"]);
    assert_eq!(erase(&server, gone).await, 204);
    assert!(read(&server, gone).await.is_none(), "gone at once");
    assert_eq!(erase(&server, gone).await, 404, "erasing twice finds nothing");
    assert_eq!(erase(&server, &"x".repeat(300)).await, 400, "a bad id is refused");
    let done = compact(&server).await;
    assert_eq!(done["carts"], 1, "{done}");
    assert_eq!(files_holding(dir.path(), gone.as_bytes()), Vec::<String>::new());
    assert_eq!(read(&server, "kept-cart").await.map(|c| support::qty(&c)), Some(2));
    // The compacted store opens after a restart, with the kept cart whole,
    // and its new checkpoint does not name the erased cart either.
    assert!(server.terminate().success());
    assert_eq!(files_holding(dir.path(), gone.as_bytes()), Vec::<String>::new());
    let server = Server::start(dir.path(), &[]);
    assert_eq!(read(&server, "kept-cart").await.map(|c| support::qty(&c)), Some(2));
    assert!(read(&server, gone).await.is_none());
    assert_eq!(add(&server, "kept-cart", 1).await, 200);
    assert_eq!(read(&server, "kept-cart").await.map(|c| support::qty(&c)), Some(3));
}

#[tokio::test]
async fn idle_carts_expire_and_active_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--expire-after", "2s", "--keep-completed", "1h", "--expiry-sweep-every", "200ms"],
    );
    assert_eq!(add(&server, "idle-cart", 1).await, 200);
    let took = wait_until("the idle cart to expire", Duration::from_secs(15), || async {
        // Another cart kept busy meanwhile must not expire.
        add(&server, "busy-cart", 1).await == reqwest::StatusCode::OK
            && read(&server, "idle-cart").await.is_none()
    })
    .await;
    assert!(took >= Duration::from_millis(1500), "not before it was idle: {took:?}");
    assert!(read(&server, "busy-cart").await.is_some());
    let metrics = support::metrics(&server).await;
    assert!(metrics.contains("cart_erased_total{reason=\"expired\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_of_a_cluster_erases_a_cart_on_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let ca = cart_testkit::certs::TestCa::new("lifecycle cluster");
    let a = Server::start_tls(dir.path(), &ca, &[]);
    let b = Server::start_tls(dir.path(), &ca, &["--peers", &a.node]);
    let c = Server::start_tls(dir.path(), &ca, &["--peers", &b.node]);
    let nodes = [a, b, c];
    for node in &nodes {
        wait_until("three members", Duration::from_secs(20), || async {
            support::member_hosts(node).await.len() == 3
        })
        .await;
    }
    let carts: Vec<String> = (0..6).map(|i| format!("shared-{i}")).collect();
    for (i, cart) in carts.iter().enumerate() {
        assert_eq!(add(&nodes[i % 3], cart, 1).await, 200);
    }
    // Each cart erased through a node picked regardless of its owner.
    for (i, cart) in carts.iter().enumerate() {
        assert_eq!(erase(&nodes[(i + 1) % 3], cart).await, 204, "{cart}");
    }
    for node in &nodes {
        for cart in &carts {
            assert!(read(node, cart).await.is_none(), "{cart} is gone everywhere");
        }
    }
}
