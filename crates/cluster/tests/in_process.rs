//! The router's retry rules and the ownership handover, on nodes in one
//! process (see `support/mod.rs`): which node serves a request, what is
//! retried where, and what a client is told when no retry can help.

mod support;

use std::time::Duration;

use cart_domain::CartCommand;
use cart_domain::proto::ChangeQuantity;
use cart_grain::{Carts, ErrorKind, GrainError, MutateRequest};
use cart_store::EventStore;
use support::{Harness, add, eventually, json, lone_runtime};

const ALL: &[usize] = &[0, 1, 2];

fn kind(result: Result<cart_grain::CartState, GrainError>) -> (ErrorKind, String) {
    let e = result.expect_err("the request should fail");
    (e.kind(), e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_entering_any_node_are_served_by_the_one_owner() {
    let h = Harness::start(3).await;
    h.join(ALL);
    let cart = h.cart_owned_by(1, None, ALL);
    for node in &h.nodes {
        node.cluster.carts().mutate(&cart, add(1)).await.unwrap();
    }
    let states: Vec<serde_json::Value> = {
        let mut out = Vec::new();
        for node in &h.nodes {
            out.push(json(&node.cluster.carts().get(&cart).await.unwrap()));
        }
        out
    };
    assert!(states.iter().all(|s| *s == states[0]), "every node answers the same: {states:?}");
    assert_eq!(states[0]["version"], 3);
    assert_eq!(states[0]["items"][0]["qty"], 3);
    assert!(h.resident(1, &cart));
    assert!(!h.resident(0, &cart) && !h.resident(2, &cart), "only the owner activates the cart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_reads_the_same_through_the_owner_and_through_another_node() {
    let h = Harness::start(2).await;
    h.join(&[0, 1]);
    let cart = h.cart_owned_by(1, None, &[0, 1]);
    let unknown = [
        kind(h.nodes[0].cluster.carts().get(&cart).await),
        kind(h.nodes[1].cluster.carts().get(&cart).await),
    ];
    assert_eq!(unknown[0], unknown[1]);
    assert_eq!(unknown[0].0, ErrorKind::NotFound);

    h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    let bad = || MutateRequest {
        mutations: vec![CartCommand::ChangeQuantity(ChangeQuantity { id: 999, quantity: 2 })],
        ..Default::default()
    };
    let refused = [
        kind(h.nodes[0].cluster.carts().mutate(&cart, bad()).await),
        kind(h.nodes[1].cluster.carts().mutate(&cart, bad()).await),
    ];
    assert_eq!(refused[0], refused[1], "the entry node must not change the answer");
    assert_eq!(refused[0].0.http_status(), 404, "{refused:?}");

    let stale = || MutateRequest { if_match: Some(7), ..add(1) };
    let precondition = [
        kind(h.nodes[0].cluster.carts().mutate(&cart, stale()).await),
        kind(h.nodes[1].cluster.carts().mutate(&cart, stale()).await),
    ];
    assert_eq!(precondition[0], precondition[1]);
    assert_eq!(precondition[0].0, ErrorKind::PreconditionFailed);
}

/// A partitioned writer outside the view claims the cart; the owner's next
/// append is fenced, and the entry node retries it on the same owner, which
/// reloads and applies it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_write_is_retried_in_place_and_applied_once() {
    let h = Harness::start(2).await;
    h.join(&[0, 1]);
    let cart = h.cart_owned_by(1, None, &[0, 1]);
    h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    assert!(h.resident(1, &cart));

    // Nobody listens at its address, and it has been silent for longer
    // than a lease.
    let intruder = lone_runtime(h.dir.path(), "127.0.0.1:1:1", h.clock.clone());
    h.outlast_leases();
    for entry in [0, 1] {
        // The intruder's own grain is fenced by the owner's last claim the
        // second time round; like any writer, it reloads and retries once.
        if let Err(e) = intruder.mutate(&cart, add(10)).await {
            assert_eq!(e.kind(), ErrorKind::Fenced);
            intruder.mutate(&cart, add(10)).await.unwrap();
        }
        let state = h.nodes[entry].cluster.carts().mutate(&cart, add(1)).await.unwrap();
        let state = json(&state);
        // Entered through the other node (remote path) and then through the
        // owner (local path): both retry the fenced write once, in place.
        assert_eq!(state["version"], if entry == 0 { 3 } else { 5 });
        assert_eq!(state["items"][0]["qty"], if entry == 0 { 12 } else { 23 });
        assert!(h.resident(1, &cart), "the owner serves the retry");
        assert!(!h.resident(0, &cart));
    }
    let log = h.nodes[1].grains.get(&cart).await.unwrap();
    assert_eq!(log.version(), 5, "nothing was applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_owner_sends_the_request_to_the_next_node() {
    let h = Harness::start(3).await;
    h.join(ALL);
    let cart = h.cart_owned_by(1, Some(2), ALL);
    // Node 1 is shutting down; node 0 has not heard of it yet.
    h.nodes[1].cluster.membership().close();
    h.nodes[1].grains.begin_shutdown();
    let state = h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    assert_eq!(json(&state)["version"], 1);
    assert!(h.resident(2, &cart), "the next node in rendezvous order serves it");
    assert!(!h.resident(1, &cart));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_refuses_connections_is_skipped() {
    let mut h = Harness::start(3).await;
    h.join(ALL);
    let cart = h.cart_owned_by(1, Some(2), ALL);
    h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    h.nodes[1].stop_serving().await;
    h.nodes[1].grains.flush().await.unwrap();
    h.outlast_leases();
    let state = h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    let state = json(&state);
    assert_eq!(state["version"], 2, "the next node continues the cart's log");
    assert_eq!(state["items"][0]["qty"], 2);
    assert!(h.resident(2, &cart));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_next_node_cannot_serve_either_the_client_is_told_unavailable() {
    let h = Harness::start(3).await;
    h.join(ALL);
    let cart = h.cart_owned_by(1, Some(2), ALL);
    for i in [1, 2] {
        h.nodes[i].cluster.membership().close();
        h.nodes[i].grains.begin_shutdown();
    }
    let (kind, message) = kind(h.nodes[0].cluster.carts().mutate(&cart, add(1)).await);
    assert_eq!(kind, ErrorKind::Unavailable, "{message}");
    assert_eq!(kind.http_status(), 503);
    let store = support::store(h.dir.path());
    assert!(store.load(cart.as_str()).await.unwrap().events.is_empty(), "nothing was applied");
}

/// A node joins and the cart's placement moves to it: its first request
/// asks the previous owner (ConfirmOwner) to flush and passivate, and
/// carries the cart's state over. No view loop runs, so the previous owner
/// passivates because it was asked, not because its view changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_takes_the_cart_over_from_the_previous_one() {
    let mut h = Harness::start(2).await;
    h.join(&[0, 1]);
    h.add_node().await;
    let cart = h.cart_owned_by(2, Some(1), ALL);
    assert_eq!(h.owner_among(&cart, &[0, 1], &[]), 1);
    h.nodes[0].cluster.carts().mutate(&cart, add(2)).await.unwrap();
    assert!(h.resident(1, &cart));

    h.join(ALL);
    let state = h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    let state = json(&state);
    assert_eq!(state["version"], 2);
    assert_eq!(state["items"][0]["qty"], 3, "the state moved with the cart");
    assert!(h.resident(2, &cart));
    assert!(!h.resident(1, &cart), "the previous owner passivated when asked");
}

/// The same move driven by the nodes' own loops: discovery offers the new
/// node, pings admit it, and the previous owner's view loop passivates the
/// idle cart it no longer owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_found_by_discovery_joins_and_the_previous_owner_lets_go() {
    let mut h = Harness::start(2).await;
    h.converge().await;
    let within = Duration::from_secs(10);
    h.add_node().await;
    let cart = h.cart_owned_by(2, Some(1), ALL);
    h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    assert!(h.resident(1, &cart));

    h.start_loops(2);
    eventually("all three see each other", within, || {
        h.nodes.iter().all(|n| n.cluster.membership().view().len() == 3)
    })
    .await;
    eventually("the previous owner passivates the moved cart", within, || !h.resident(1, &cart))
        .await;
    let state = h.nodes[0].cluster.carts().get(&cart).await.unwrap();
    assert_eq!(json(&state)["version"], 1);
    assert!(h.resident(2, &cart));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negotiate_listing_thousands_of_hosts_is_refused() {
    use cart_cluster::proto::control::NegotiateRequest;
    use cart_cluster::proto::control::control_plane_client::ControlPlaneClient;
    let h = Harness::start(1).await;
    let mut control = ControlPlaneClient::connect(h.nodes[0].addr.grpc_uri()).await.unwrap();
    let flood: Vec<String> = (0..3000).map(|i| format!("10.9.{}.{}:1", i / 250, i % 250)).collect();
    let refused = control.negotiate(NegotiateRequest { known_hosts: flood }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(h.nodes[0].cluster.membership().ping_targets().is_empty(), "nothing was learned");
    let fits: Vec<String> = (0..200).map(|i| format!("10.8.0.{i}:1")).collect();
    control.negotiate(NegotiateRequest { known_hosts: fits }).await.unwrap();
    assert_eq!(h.nodes[0].cluster.membership().ping_targets().len(), 200);
}

/// Misses are counted by the ping loop alone: discovery rounds (here many
/// per ping interval) ping only hosts that have not joined yet, so they
/// cannot evict a member early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_ping_loop_counts_a_members_misses() {
    let mut h = Harness::start(0).await;
    h.ping_interval = Duration::from_secs(3600);
    h.add_node().await;
    h.add_node().await;
    h.converge().await;
    let within = Duration::from_secs(10);
    h.nodes[1].stop_serving().await;
    let rounds = h.discovery.1.load(std::sync::atomic::Ordering::SeqCst);
    eventually("ten more discovery rounds", within, || {
        h.discovery.1.load(std::sync::atomic::Ordering::SeqCst) >= rounds + 10
    })
    .await;
    assert!(
        h.nodes[0].cluster.membership().is_member(&h.nodes[1].addr),
        "discovery rounds must not count a member's misses"
    );
}

/// A forwarded mutation held up (a partition, a paused sender) past its
/// sender's deadline is refused when it finally arrives, never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_mutation_arriving_after_its_sender_gave_up_is_not_applied() {
    use cart_cluster::mapping;
    use cart_cluster::proto::cart::cart_actor_client::CartActorClient;
    use cart_grain::{Clock, ResolvedRequest};
    let h = Harness::start(1).await;
    let cart = cart_grain::CartId::parse("late-1").unwrap();
    let resolved: ResolvedRequest = h.nodes[0].grains.resolve(&cart, add(1)).await.unwrap();
    let now = h.clock.now_ms() as i64;
    let mut client = CartActorClient::connect(h.nodes[0].addr.grpc_uri()).await.unwrap();

    let late = mapping::encode_forwarded(&cart, &resolved, now + 400);
    h.clock.advance(10_000);
    let reply = client.mutate(late).await.unwrap().into_inner();
    assert_eq!(reply.error_kind, ErrorKind::Unavailable.code(), "{reply:?}");
    assert!(h.nodes[0].grains.get(&cart).await.is_err(), "nothing was applied");

    let now = h.clock.now_ms() as i64;
    let in_time = mapping::encode_forwarded(&cart, &resolved, now + 400);
    let reply = client.mutate(in_time).await.unwrap().into_inner();
    assert_eq!(reply.status_code, 200, "{reply:?}");
    assert_eq!(h.nodes[0].grains.get(&cart).await.unwrap().version(), 1);
}

/// A node that said Closing and comes back as a new process on the same
/// address (a rolling restart) rejoins as soon as it answers, not after the
/// quarantine (the clock here never moves, so the quarantine never ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_at_once_and_the_one_that_left_stays_out() {
    let mut h = Harness::start(2).await;
    h.converge().await;
    let within = Duration::from_secs(10);
    h.nodes[1].cluster.leave().await;
    let gone = h.nodes[1].addr.clone();
    assert!(!h.nodes[0].cluster.membership().is_member(&gone), "Closing removes it at once");
    // Still the same process, closing: discovery offers it, it stays out.
    let rounds = h.discovery.1.load(std::sync::atomic::Ordering::SeqCst);
    eventually("a few discovery rounds", within, || {
        h.discovery.1.load(std::sync::atomic::Ordering::SeqCst) >= rounds + 4
    })
    .await;
    assert!(!h.nodes[0].cluster.membership().is_member(&gone));

    h.restart(1).await;
    h.start_loops(1);
    eventually("the restarted node is a member again", within, || {
        h.nodes[0].cluster.membership().is_member(&gone)
            && h.nodes[1].cluster.membership().view().len() == 2
    })
    .await;
    let cart = h.cart_owned_by(1, None, &[0, 1]);
    let state = h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    assert_eq!(json(&state)["version"], 1);
    assert!(h.resident(1, &cart), "and serves its carts");
}

/// A node that reaches no majority of its cluster (here: the others stop
/// answering it) may have lost its carts to them: once its lease has run
/// out it serves nothing, reads included, and says so at once, even after
/// it has evicted them all and its view holds only itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_majority_refuses_everything_once_its_lease_runs_out() {
    let mut h = Harness::start_leased(3).await;
    h.converge().await;
    let within = Duration::from_secs(10);
    let cart = h.cart_owned_by(2, None, ALL);
    h.nodes[2].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    assert!(h.resident(2, &cart));
    h.nodes[0].stop_serving().await;
    h.nodes[1].stop_serving().await;
    eventually("node 2 knows it reaches no majority", within, || {
        !h.nodes[2].cluster.membership().in_majority()
            && h.nodes[2].cluster.membership().view().len() == 1
    })
    .await;
    // Its last lease runs out (the clock stands still otherwise).
    h.clock.advance(1_000);
    assert!(!h.nodes[2].cluster.has_lease());
    assert!(!h.nodes[2].cluster.is_ready(), "unready without a lease");
    let carts = h.nodes[2].cluster.carts();
    for result in [carts.get(&cart).await, carts.mutate(&cart, add(1)).await] {
        let (kind, text) = kind(result);
        assert_eq!(kind, ErrorKind::Unavailable, "{text}");
        assert!(text.contains("majority"), "{text}");
    }
    // Forwarded requests too (a peer that still routes to it).
    assert!(matches!(h.nodes[2].grains.get(&cart).await, Err(GrainError::NoLease)));
}

/// A cart whose owner went silent is taken over only when the owner's
/// lease has surely run out, never while it may still be serving; an owner
/// that answers hands over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_owners_carts_are_taken_over_only_after_its_lease() {
    let mut h = Harness::start_leased(3).await;
    h.converge().await;
    let within = Duration::from_secs(10);
    let cart = h.cart_owned_by(2, None, ALL);
    h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    assert!(h.resident(2, &cart));
    h.nodes[2].stop_serving().await;
    eventually("node 2 evicted", within, || {
        h.nodes[..2].iter().all(|n| n.cluster.membership().view().len() == 2)
    })
    .await;
    let carts = h.nodes[0].cluster.carts();
    let (kind, text) = kind(carts.mutate(&cart, add(1)).await);
    assert_eq!(kind, ErrorKind::Unavailable, "not yet: {text}");
    assert!(text.contains("may still hold it"), "{text}");
    h.outlast_leases();
    eventually("the survivors' leases renewed", within, || {
        h.nodes[..2].iter().all(|n| n.cluster.has_lease())
    })
    .await;
    let state = json(&carts.mutate(&cart, add(1)).await.unwrap());
    assert_eq!(state["version"], 2, "taken over once the lease is surely over");
    assert_eq!(state["items"][0]["qty"], 2);
}

/// A holder keeps a cart it owns by its own view: a request routed by a
/// view that is behind cannot pull the cart away (it would only move back
/// on the next request). A cart it no longer owns by its view it hands over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_keeps_a_cart_it_owns_by_its_own_view() {
    use cart_cluster::proto::control::OwnerChangeRequest;
    use cart_cluster::proto::control::control_plane_client::ControlPlaneClient;
    let h = Harness::start(3).await;
    h.join(ALL);
    let cart = h.cart_owned_by(1, None, ALL);
    h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap();
    assert!(h.resident(1, &cart));
    let mut control = ControlPlaneClient::connect(h.nodes[1].addr.grpc_uri()).await.unwrap();
    let ask =
        || OwnerChangeRequest { cart_id: cart.to_string(), new_host: h.nodes[2].addr.to_string() };
    let ack = control.confirm_owner(ask()).await.unwrap().into_inner();
    assert!(!ack.accepted, "{}", ack.message);
    assert!(ack.message.contains("owns"), "{}", ack.message);
    assert!(h.resident(1, &cart), "the holder still serves it");
    // Node 1 closes: by its view it owns nothing now, so it lets go.
    h.nodes[1].cluster.membership().close();
    let ack = control.confirm_owner(ask()).await.unwrap().into_inner();
    assert!(ack.accepted, "{}", ack.message);
    assert!(!h.resident(1, &cart));
    // Until the new holder claims it, the store still names node 1: a
    // request reaching node 1 meanwhile is sent on, never served on that
    // old claim (two holders).
    let (kind, text) = kind(h.nodes[1].grains.get(&cart).await);
    assert_eq!(kind, ErrorKind::Misdirected, "{text}");
    assert!(!h.resident(1, &cart));
    // Nobody claimed it after all: after the guard, node 1 may again.
    h.clock.advance(2_000);
    assert_eq!(json(&h.nodes[1].grains.get(&cart).await.unwrap())["version"], 1);
}
