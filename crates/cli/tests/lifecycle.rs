//! A node's way out, as a load balancer sees it.

mod support;

use std::time::Duration;

use support::{SKU_A, Server, client};

#[tokio::test]
async fn after_sigterm_a_node_is_unready_but_serves_through_the_drain_delay() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--drain-delay", "3s"]);
    let http = client();
    let r = http
        .post(format!("{}/cart/", node.url))
        .json(&serde_json::json!({"sku": SKU_A}))
        .send()
        .await
        .unwrap();
    let cookie = format!("cartid={}", support::cart_cookie(&r).unwrap());
    node.signal(libc::SIGTERM);
    support::wait_until("readiness to go false", Duration::from_secs(2), || async {
        http.get(format!("{}/readyz", node.url)).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    // Still serving: a shopper who reached it meanwhile is not failed.
    let r = http
        .post(format!("{}/cart/", node.url))
        .header("cookie", &cookie)
        .json(&serde_json::json!({"sku": SKU_A}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "requests during the drain delay are served");
    assert_eq!(http.get(format!("{}/healthz", node.url)).send().await.unwrap().status(), 200);
    assert!(node.terminate().success(), "then it exits cleanly");
}
