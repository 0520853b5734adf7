//! Three real `cart-actor` processes on one shared data directory, talking
//! mutual TLS with certificates from a CA made for each test.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cart_cluster::proto::cart::cart_actor_client::CartActorClient;
use cart_cluster::proto::cart::{MutationBatch, MutationRequest, MutationType, StateRequest};
use cart_cluster::proto::control::control_plane_client::ControlPlaneClient;
use cart_cluster::proto::control::{Empty, OwnerChangeRequest};
use cart_testkit::certs::TestCa;
use prost::Message;
use serde_json::{Value, json};
use support::{SKU_A, SKU_B, Server, client, qty, read, wait_until};

/// Starts three nodes in turn, each knowing only the previous one.
fn start_three(dir: &std::path::Path) -> Vec<Server> {
    let ca = TestCa::new("test cluster");
    let a = Server::start_tls(dir, &ca, &[]);
    let b = Server::start_tls(dir, &ca, &["--peers", &a.node]);
    let c = Server::start_tls(dir, &ca, &["--peers", &b.node]);
    vec![a, b, c]
}

/// Three nodes (see [`start_three`]) once they agree on the member list.
async fn three_converged(dir: &std::path::Path) -> Vec<Server> {
    let nodes = start_three(dir);
    let refs: Vec<&Server> = nodes.iter().collect();
    wait_until("the views to converge", Duration::from_secs(15), || converged(&refs)).await;
    nodes
}

use support::member_hosts as members;

async fn converged(nodes: &[&Server]) -> bool {
    let mut expected: Vec<String> = nodes.iter().map(|n| n.node.clone()).collect();
    expected.sort();
    for n in nodes {
        if members(n).await != expected {
            return false;
        }
    }
    true
}

async fn cart_ids(server: &Server) -> Vec<String> {
    let mut c = ControlPlaneClient::new(server.channel());
    c.get_cart_ids(Empty {}).await.unwrap().into_inner().cart_ids
}

/// A counter or histogram count from a node's `/metrics` (0 when absent).
async fn metric(server: &Server, name: &str) -> f64 {
    let text = support::metrics(server).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn add(server: &Server, cart: &str, sku: &str) -> reqwest::Response {
    client()
        .post(format!("{}/api/carts/{cart}/items", server.internal_url))
        .json(&json!({"sku": sku, "quantity": 1}))
        .send()
        .await
        .unwrap()
}

/// Adds one `sku` under Idempotency-Key `key`, retrying (with the same key)
/// until it is acknowledged: applied exactly once, however often it was
/// refused on the way.
async fn add_until_acked(server: &Server, cart: &str, sku: &str, key: &str) {
    wait_until("the add to be acknowledged", Duration::from_secs(10), || async {
        client()
            .post(format!("{}/api/carts/{cart}/items", server.internal_url))
            .header("Idempotency-Key", key)
            .json(&json!({"sku": sku, "quantity": 1}))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staggered_start_converges_and_any_node_serves_any_cart() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_three(dir.path());
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    let all = [a, b, c];
    wait_until("the views to converge", Duration::from_secs(15), || converged(&all)).await;
    for n in [a, b, c] {
        let r = client().get(format!("{}/readyz", n.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    // HTTP through A, read through B and C.
    for cart in ["alpha", "beta", "gamma", "delta"] {
        assert_eq!(add(a, cart, SKU_A).await.status(), 200);
        assert_eq!(add(b, cart, SKU_B).await.status(), 200);
        let via_a = read(a, cart).await.unwrap();
        assert_eq!(read(b, cart).await.unwrap(), via_a);
        assert_eq!(read(c, cart).await.unwrap(), via_a);
        assert_eq!(qty(&via_a), 2);
    }

    // gRPC: a client built from the plan's proto mutates through C and reads
    // through A.
    let mut grpc = CartActorClient::new(c.channel());
    let reply = grpc.mutate(add_sku("alpha", SKU_A, 2)).await.unwrap().into_inner();
    assert_eq!(reply.status_code, 200, "{}", String::from_utf8_lossy(&reply.payload));
    let cart: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(qty(&cart), 4);
    let mut grpc_a = CartActorClient::new(a.channel());
    let state = grpc_a
        .get_state(StateRequest { cart_id: "alpha".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.status_code, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&state.payload).unwrap(),
        read(b, "alpha").await.unwrap()
    );
    let missing = grpc_a
        .get_state(StateRequest { cart_id: "nope".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(missing.status_code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_cart_is_ever_active_on_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_converged(dir.path()).await;
    for i in 0..150 {
        let via = &nodes[i % 3];
        assert_eq!(add(via, &format!("cart-{i}"), SKU_A).await.status(), 200);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_node = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let ids = cart_ids(node).await;
        per_node.push(ids.len());
        for id in ids {
            if let Some(other) = seen.insert(id.clone(), n) {
                panic!("cart {id} is active on node {other} and node {n}");
            }
        }
    }
    assert_eq!(seen.len(), 150, "every cart is active somewhere");
    assert!(per_node.iter().all(|&n| n > 20), "carts are spread over all nodes: {per_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirm_owner_refuses_strangers_and_stale_views() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_converged(dir.path()).await;
    // Find a cart active on A.
    let mut on_a = None;
    for i in 0..60 {
        let cart = format!("h-{i}");
        assert_eq!(add(&nodes[0], &cart, SKU_A).await.status(), 200);
        if cart_ids(&nodes[0]).await.contains(&cart) {
            on_a = Some(cart);
            break;
        }
    }
    let cart = on_a.expect("some cart lands on A");
    let mut control = ControlPlaneClient::new(nodes[0].channel());

    // Refused: the asking host is not a member of A's view. A keeps the cart.
    let ack = control
        .confirm_owner(OwnerChangeRequest {
            cart_id: cart.clone(),
            new_host: "10.255.255.1:9:9".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.accepted);
    assert!(ack.message.contains("not a member"), "{}", ack.message);
    assert!(cart_ids(&nodes[0]).await.contains(&cart));

    // Refused too: a member asks, but by A's own view the cart is A's (the
    // asker's view is behind). A keeps it. (Handing over a cart the holder
    // no longer owns is tested in `cluster/tests/in_process.rs`.)
    let ack = control
        .confirm_owner(OwnerChangeRequest {
            cart_id: cart.clone(),
            new_host: nodes[1].node.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.accepted);
    assert!(ack.message.contains("owns"), "{}", ack.message);
    assert!(cart_ids(&nodes[0]).await.contains(&cart));
    assert_eq!(qty(&read(&nodes[2], &cart).await.unwrap()), 1);
}

/// Carts active on `node`, out of those created.
async fn owned_by(node: &Server) -> Vec<String> {
    cart_ids(node).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_a_node_and_its_carts_are_served_again_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_converged(dir.path()).await;
    let mut acked: HashMap<String, u64> = HashMap::new();
    for i in 0..90 {
        let cart = format!("k-{i}");
        for _ in 0..2 {
            assert_eq!(add(&nodes[i % 2], &cart, SKU_A).await.status(), 200);
            *acked.entry(cart.clone()).or_default() += 1;
        }
    }
    let victims = owned_by(&nodes[2]).await;
    assert!(!victims.is_empty());
    let killed = nodes.remove(2);
    let killed_node = killed.node.clone();
    let killed_at = Instant::now();
    killed.kill();
    let (a, b) = (&nodes[0], &nodes[1]);
    let recovered = wait_until(
        "the killed node's carts to be served again",
        Duration::from_secs(10),
        || async {
            for cart in &victims {
                match read(a, cart).await {
                    Some(v) if qty(&v) == acked[cart] => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
    eprintln!(
        "failover: {} carts served again {:?} after SIGKILL",
        victims.len(),
        killed_at.elapsed()
    );
    assert!(recovered < Duration::from_secs(5), "took {recovered:?}");
    for (cart, n) in &acked {
        assert_eq!(qty(&read(b, cart).await.unwrap()), *n, "cart {cart}");
    }
    // The failover is logged in summary, counts by previous holder, at most
    // one line per ping round: not a line per cart.
    let taken = || {
        let lines: Vec<Value> =
            nodes.iter().flat_map(|n| support::log_lines(&n.logs(), "took over carts")).collect();
        let carts: u64 = lines.iter().map(|l| l["carts"].as_u64().unwrap_or(0)).sum();
        (lines, carts)
    };
    wait_until("the takeovers to be summarised", Duration::from_secs(5), || async {
        taken().1 >= victims.len() as u64
    })
    .await;
    let (lines, carts) = taken();
    assert_eq!(carts, victims.len() as u64, "{lines:?}");
    assert!(lines.len() < victims.len(), "{} summary lines for {carts} carts", lines.len());
    assert!(lines.iter().all(|l| l["from"].as_str().is_some_and(|f| f.contains(&killed_node))));
    for node in &nodes {
        let logs = node.logs();
        support::assert_json_lines(&logs);
        assert!(!logs.iter().any(|l| l.contains("taking over a cart")), "a line per cart");
        for failed in support::log_lines(&logs, "request failed") {
            assert!(failed["cart"].as_str().is_some_and(|c| !c.is_empty()), "{failed}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_a_node_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_converged(dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Load enters through A and B only; C owns a third of the carts.
    for w in 0..12 {
        let url = nodes[w % 2].internal_url.clone();
        let (stop, failures) = (Arc::clone(&stop), Arc::clone(&failures));
        tasks.push(tokio::spawn(async move {
            let http = client();
            // A new cart every 900 adds keeps every line under the 999 limit
            // however fast the machine is.
            let mut acked: HashMap<String, u64> = HashMap::new();
            let mut ok = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let cart = format!("t-{w}-{}", ok / 900);
                let r = http
                    .post(format!("{url}/api/carts/{cart}/items"))
                    .json(&json!({"sku": SKU_A}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        ok += 1;
                        *acked.entry(cart).or_default() += 1;
                    }
                    Ok(r) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                        eprintln!("failed: {} {}", r.status(), r.text().await.unwrap_or_default());
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                        eprintln!("failed: {e}");
                    }
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = nodes.remove(2);
    let status = tokio::task::spawn_blocking(move || c.terminate()).await.unwrap();
    assert!(status.success(), "exit status {status}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = HashMap::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request failed");
    assert!(acked.len() >= 12);
    for (cart, ok) in acked {
        assert_eq!(qty(&read(&nodes[0], &cart).await.unwrap()), ok, "cart {cart}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_node_is_evicted_and_answers_from_the_store_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_converged(dir.path()).await;
    let (a, c) = (&nodes[0], &nodes[2]);
    // A cart owned (and active) on C.
    let mut cart = None;
    for i in 0..60 {
        let id = format!("s-{i}");
        assert_eq!(add(c, &id, SKU_A).await.status(), 200);
        if cart_ids(c).await.contains(&id) {
            cart = Some(id);
            break;
        }
    }
    let cart = cart.expect("some cart lands on C");
    c.signal(libc::SIGSTOP);
    let b = &nodes[1];
    let evicted = wait_until("C to be evicted", Duration::from_secs(10), || async {
        !members(a).await.contains(&c.node) && !members(b).await.contains(&c.node)
    })
    .await;
    eprintln!("SIGSTOPped node evicted after {evicted:?}");
    // The cart moves (once C's lease is surely over): the survivors take it
    // over and write to it.
    for n in 0..3 {
        add_until_acked(a, &cart, SKU_B, &format!("after-stop-{n}")).await;
    }
    c.signal(libc::SIGCONT);
    // C may still believe it owns the cart, but its lease ran out while it
    // stood still: it refuses until a round renews it, and then answers
    // from the store, never from its old grain.
    let resumed = wait_until("C to answer again", Duration::from_secs(10), || async {
        match read(c, &cart).await {
            Some(v) => {
                assert_eq!(qty(&v), 4, "no stale read from the resumed node: {v}");
                true
            }
            None => false,
        }
    })
    .await;
    eprintln!("the resumed node answered again after {resumed:?}");
    // A write through C applies to the current cart (or is fenced), never
    // forking the log.
    let through_c = add(c, &cart, SKU_A).await;
    let applied_via_c = u64::from(through_c.status() == 200);
    eprintln!("write through the resumed node: {}", through_c.status());
    let lapses = metric(c, "cart_lease_grants_after_lapse_total").await;
    assert!(
        lapses >= 2.0,
        "C's lease was granted at start and again after its pause: {}",
        support::metrics(c)
            .await
            .lines()
            .filter(|l| l.contains("fenced") || l.contains("passivations") || l.contains("lease"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let final_cart = read(a, &cart).await.unwrap();
    assert_eq!(qty(&final_cart), 1 + 3 + applied_via_c, "{final_cart}");
    // Every event of the cart has a distinct, contiguous sequence number.
    let versions: HashSet<u64> = [read(a, &cart).await, read(c, &cart).await]
        .into_iter()
        .flatten()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions.len(), 1, "all nodes agree on the version");
}

fn add_sku(cart: &str, sku: &str, quantity: i32) -> MutationRequest {
    let payload =
        cart_domain::proto::AddRequest { sku: sku.into(), quantity, country: None, store_id: None };
    MutationRequest {
        cart_id: cart.into(),
        r#type: MutationType::MutationAddRequest as i32,
        payload: payload.encode_to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutate_batch_answers_every_request_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_converged(dir.path()).await;
    let unknown_type = MutationRequest { r#type: 99, ..add_sku("batch-1", SKU_A, 1) };
    let missing_line = MutationRequest {
        cart_id: "batch-2".into(),
        r#type: MutationType::MutationChangeQuantity as i32,
        payload: cart_domain::proto::ChangeQuantity { id: 42, quantity: 2 }.encode_to_vec(),
        ..Default::default()
    };
    let requests = vec![
        add_sku("batch-1", SKU_A, 2),
        unknown_type,
        add_sku("batch-2", SKU_B, 1),
        missing_line,
        add_sku("batch-1", SKU_A, 1),
    ];
    let mut grpc = CartActorClient::new(nodes[0].channel());
    let replies = grpc.mutate_batch(MutationBatch { requests }).await.unwrap().into_inner().replies;
    let statuses: Vec<i32> = replies.iter().map(|r| r.status_code).collect();
    assert_eq!(statuses, vec![200, 400, 200, 404, 200]);
    assert_eq!(qty(&read(&nodes[2], "batch-1").await.unwrap()), 3, "both adds applied once");
    assert_eq!(qty(&read(&nodes[1], "batch-2").await.unwrap()), 1);
    // An oversized batch is refused whole, with nothing applied.
    let requests = vec![add_sku("batch-3", SKU_A, 1); cart_cluster::batch::MAX_BATCH + 1];
    let refused = grpc.mutate_batch(MutationBatch { requests }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(read(&nodes[0], "batch-3").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_forwarded_mutations_travel_in_batches_and_all_apply() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_converged(dir.path()).await;
    let entry = Arc::new(nodes[0].internal_url.clone());
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut round = 0;
    // Bursts of concurrent adds through A until B or C has received a batch
    // (the first burst nearly always does it).
    wait_until("a batch to reach an owner", Duration::from_secs(30), || {
        round += 1;
        let carts: Vec<String> = (0..40).map(|i| format!("burst-{}", i % 20)).collect();
        for cart in &carts {
            *sent.entry(cart.clone()).or_default() += 1;
        }
        let entry = Arc::clone(&entry);
        let (b, c) = (&nodes[1], &nodes[2]);
        async move {
            let calls: Vec<_> = carts
                .into_iter()
                .map(|cart| {
                    let entry = Arc::clone(&entry);
                    tokio::spawn(async move {
                        client()
                            .post(format!("{entry}/api/carts/{cart}/items"))
                            .json(&json!({"sku": SKU_A, "quantity": 1}))
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                    })
                })
                .collect();
            let mut statuses = Vec::new();
            for call in calls {
                statuses.push(call.await.unwrap());
            }
            assert!(statuses.iter().all(|s| matches!(s, Ok(200))), "round {round}: {statuses:?}");
            metric(b, "cart_grpc_mutate_batch_size_count").await
                + metric(c, "cart_grpc_mutate_batch_size_count").await
                > 0.0
        }
    })
    .await;
    for (cart, adds) in &sent {
        assert_eq!(qty(&read(&nodes[1], cart).await.unwrap()), *adds, "{cart}");
    }
    // The entry node timed every call it forwarded, and none went unanswered.
    let forwarded = metric(&nodes[0], "cart_forward_duration_seconds_count{call=\"mutate\"}").await;
    assert!(forwarded > 0.0, "forwarded mutations are timed");
    for reason in ["refused", "failed"] {
        let series = format!("cart_forward_errors_total{{call=\"mutate\",reason=\"{reason}\"}}");
        assert_eq!(metric(&nodes[0], &series).await, 0.0, "{series}");
    }
}

/// Two nodes given separate data directories (the natural StatefulSet
/// mistake) would each think they own carts the other holds, and lose
/// them on failover: they refuse to form a cluster, and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_with_separate_stores_refuse_to_form_a_cluster() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = TestCa::new("cluster");
    let a = Server::start_tls(one.path(), &ca, &[]);
    let b = Server::start_tls(two.path(), &ca, &["--peers", &a.node]);
    wait_until("B to report the foreign store", Duration::from_secs(10), || async {
        b.logs().iter().any(|l| l.contains("uses another event store"))
    })
    .await;
    wait_until("A to report it too", Duration::from_secs(10), || async {
        a.logs().iter().any(|l| l.contains("uses another event store"))
    })
    .await;
    assert_eq!(members(&a).await, vec![a.node.clone()]);
    assert_eq!(members(&b).await, vec![b.node.clone()]);
}
