//! A node's way out, as a load balancer sees it.

mod support;

use std::time::Duration;

use support::{SKU_A, Server, client};

#[tokio::test]
async fn after_sigterm_a_node_is_unready_but_serves_through_the_drain_delay() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--drain-delay", "3s"]);
    let http = client();
    let cookie = support::new_shopper(&node).await;
    let metrics = support::metrics(&node).await;
    for family in ["cart_startup_duration_seconds", "cart_log_bytes", "cart_log_carts"] {
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(family).and_then(|v| v.trim().parse::<f64>().ok()));
        assert!(value.is_some_and(|v| v > 0.0), "{family} reported: {value:?}");
    }
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every node of a 3-node cluster (file store, mTLS) is restarted in turn,
/// back to back, each new process on its old address: no request fails.
/// The test plays the load balancer: a node leaves its list before SIGTERM
/// and rejoins it once ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_back_to_back_rolling_restart_on_the_same_addresses_fails_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use support::load::{Tally, member_count, start_writers};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca = cart_testkit::certs::TestCa::new("rolling");
    let ports: Vec<(String, String)> = (0..3)
        .map(|_| (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())))
        .collect();
    let start = |i: usize, peer: Option<&str>| {
        let mut args = vec!["--grpc-addr", &ports[i].0, "--control-addr", &ports[i].1];
        if let Some(p) = peer {
            args.extend(["--peers", p]);
        }
        Server::start_tls(&data, &ca, &args)
    };
    let mut nodes = vec![start(0, None)];
    let first = nodes[0].node.clone();
    nodes.push(start(1, Some(&first)));
    nodes.push(start(2, Some(&first)));
    let converged = |nodes: Vec<String>| async move {
        for url in nodes {
            let r = client().get(format!("{url}/api/cluster")).send().await;
            let Ok(r) = r else { return false };
            let Ok(v) = r.json::<serde_json::Value>().await else { return false };
            if v["members"].as_array().map_or(0, Vec::len) != 3 {
                return false;
            }
        }
        true
    };
    let internal =
        |nodes: &[Server]| nodes.iter().map(|n| n.internal_url.clone()).collect::<Vec<_>>();
    support::wait_until("convergence", Duration::from_secs(15), || converged(internal(&nodes)))
        .await;

    let urls = Arc::new(Mutex::new(internal(&nodes)));
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Tally::default())));
    let writers = start_writers(12, Arc::clone(&urls), Arc::clone(&stop), Arc::clone(&tally));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let old = nodes.remove(i);
        urls.lock().unwrap().retain(|u| *u != old.internal_url);
        let status = tokio::task::spawn_blocking(move || old.terminate()).await.unwrap();
        assert!(status.success());
        let peer = nodes[0].node.clone();
        let fresh = start(i, Some(&peer));
        assert_eq!(
            fresh.node,
            format!("{}", ports[i].0.clone() + ":" + ports[i].1.rsplit(':').next().unwrap()),
            "the same address"
        );
        nodes.insert(i, fresh);
        support::wait_until("the restarted node to rejoin", Duration::from_secs(15), || async {
            converged(internal(&nodes)).await && member_count(&nodes[i]).await == 3
        })
        .await;
        urls.lock().unwrap().push(nodes[i].internal_url.clone());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let t = std::mem::take(&mut *tally.lock().unwrap());
    assert!(
        t.uncertain.is_empty(),
        "failed requests during the roll: {:?}",
        &t.errors[..t.errors.len().min(5)]
    );
    assert!(t.acked.values().sum::<u64>() > 100, "the load ran");
    for (cart, acked) in &t.acked {
        assert_eq!(support::qty(&support::read(&nodes[0], cart).await.unwrap()), *acked, "{cart}");
    }
}
