//! A real network partition: three nodes in network namespaces of their
//! own, joined by a bridge, sharing one data directory (as nodes on a
//! shared volume). One node is cut off from the other two with static ARP
//! entries that point them at nowhere, while the test (in the root
//! namespace) still reaches every node. Needs root (`ip netns`).

mod support;

use std::process::Command;
use std::time::Duration;

use cart_testkit::certs::TestCa;
use serde_json::{Value, json};
use support::{SKU_A, Server, client, wait_until};

/// The namespaces, veth pairs and bridge of one test; removed on drop.
struct Net {
    tag: String,
    nodes: usize,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    fn new(nodes: usize) -> Net {
        remove_stale();
        let tag = format!("{:x}", std::process::id() % 0xfffff);
        let net = Net { tag, nodes };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["addr", "add", "10.77.0.254/24", "dev", &br]);
        ip(&["link", "set", &br, "up"]);
        for i in 1..=nodes {
            let (ns, host_end, ns_end) = (net.ns(i), net.veth(i, 'h'), net.veth(i, 'n'));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end]);
            ip(&["link", "set", &host_end, "master", &br, "up"]);
            ip(&["link", "set", &ns_end, "netns", &ns]);
            let addr = format!("{}/24", net.addr(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &ns_end]);
            ip(&["-n", &ns, "link", "set", &ns_end, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn bridge(&self) -> String {
        format!("cbr{}", self.tag)
    }
    fn ns(&self, i: usize) -> String {
        format!("cart-{}-{i}", self.tag)
    }
    fn veth(&self, i: usize, end: char) -> String {
        format!("c{}{i}{end}", self.tag)
    }
    fn addr(&self, i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// Cuts node `i` off from every other node (both directions); the root
    /// namespace still reaches it.
    fn isolate(&self, i: usize) {
        for j in (1..=self.nodes).filter(|j| *j != i) {
            for (from, to) in [(i, j), (j, i)] {
                let dev = self.veth(from, 'n');
                ip(&[
                    "-n",
                    &self.ns(from),
                    "neigh",
                    "replace",
                    &self.addr(to),
                    "lladdr",
                    "02:00:00:00:00:99",
                    "nud",
                    "permanent",
                    "dev",
                    &dev,
                ]);
            }
        }
    }
}

/// Removes what an earlier run killed mid-test left (same subnet, so it
/// would shadow this run's bridge): namespaces `cart-*`, bridges `cbr*`.
fn remove_stale() {
    let list = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in list(&["netns", "list"]).lines() {
        if let Some(ns) = line.split_whitespace().next().filter(|n| n.starts_with("cart-")) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
    for line in list(&["-o", "link", "show", "type", "bridge"]).lines() {
        if let Some(name) = line.split(':').nth(1).map(str::trim).filter(|n| n.starts_with("cbr")) {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).status();
            let _ = Command::new("ip").args(["link", "del", &self.veth(i, 'h')]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge()]).status();
    }
}

async fn members(node: &Server) -> usize {
    let Ok(r) = client().get(format!("{}/api/cluster", node.internal_url)).send().await else {
        return 0;
    };
    r.json::<Value>().await.ok().and_then(|v| v["members"].as_array().map(Vec::len)).unwrap_or(0)
}

async fn version(node: &Server, cart: &str) -> Option<u64> {
    let r = client().get(format!("{}/api/carts/{cart}", node.internal_url)).send().await.ok()?;
    r.json::<Value>().await.ok()?["version"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_others_never_answers_from_stale_memory() {
    let net = Net::new(3);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca = TestCa::new("partition");
    let mut nodes: Vec<Server> = Vec::new();
    for i in 1..=3 {
        let peers = nodes.first().map(|n| n.node.clone());
        let mut extra = vec![];
        if let Some(p) = &peers {
            extra = vec!["--peers", p.as_str()];
        }
        nodes.push(Server::start_tls_at(Some(&net.ns(i)), &net.addr(i), &data, &ca, &extra));
    }
    wait_until("the views to converge", Duration::from_secs(20), || async {
        for n in &nodes {
            if members(n).await != 3 {
                return false;
            }
        }
        true
    })
    .await;
    // A cart active on node 3, read there once so its grain holds it.
    let mut cart = None;
    for i in 0..60 {
        let id = format!("p-{i}");
        let r = client()
            .post(format!("{}/api/carts/{id}/items", nodes[2].internal_url))
            .json(&json!({"sku": SKU_A}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ids: Value = client()
            .get(format!("{}/api/cluster", nodes[2].internal_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ids["localGrains"].as_u64().unwrap_or(0) > 0 && version(&nodes[2], &id).await == Some(1)
        {
            cart = Some(id);
            break;
        }
    }
    let cart = cart.expect("a cart on node 3");

    net.isolate(3);
    wait_until("the majority to drop node 3", Duration::from_secs(10), || async {
        members(&nodes[0]).await == 2 && members(&nodes[1]).await == 2
    })
    .await;
    // The majority takes the cart over and writes to it.
    let mut written = 1;
    for _ in 0..3 {
        let r = client()
            .post(format!("{}/api/carts/{cart}/items", nodes[0].internal_url))
            .json(&json!({"sku": SKU_A}))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            written += 1;
        }
    }
    assert!(written >= 2, "the majority serves the cart");
    let latest = version(&nodes[0], &cart).await.unwrap();
    // Node 3, cut off, must not answer from the grain it kept.
    let seen = version(&nodes[2], &cart).await;
    assert!(
        seen.is_none() || seen == Some(latest),
        "node 3 answered version {seen:?} while the cart is at {latest}"
    );
    drop(nodes);
}
