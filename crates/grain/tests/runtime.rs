//! The grain runtime over a real file store and the sample catalogue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cart_catalog::{FileCatalog, Markets, Resolver};
use cart_domain::CartCommand;
use cart_domain::proto::{AddRequest, ChangeQuantity};
use cart_grain::{
    CartId, GrainError, GrainRuntime, Handover, ManualClock, MutateRequest, RuntimeOptions,
};
use cart_store::{
    EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, IdempotencyTag, NewEvent,
};

const SKU: &str = "861200";

fn store(dir: &std::path::Path) -> Arc<FileStore> {
    Arc::new(FileStore::open(FileStoreOptions::new(dir, FsyncPolicy::Always)).unwrap())
}

fn resolver() -> Resolver {
    Resolver::new(Arc::new(FileCatalog::sample().unwrap()), Markets::default())
}

fn runtime(
    store: Arc<FileStore>,
    clock: Arc<ManualClock>,
    options: RuntimeOptions,
) -> Arc<GrainRuntime> {
    GrainRuntime::new(store, resolver(), clock, options)
}

fn add(sku: &str, quantity: i32) -> MutateRequest {
    MutateRequest {
        mutations: vec![CartCommand::AddSku(AddRequest {
            sku: sku.into(),
            quantity,
            ..Default::default()
        })],
        ..Default::default()
    }
}

fn json(state: &cart_grain::CartState) -> serde_json::Value {
    serde_json::from_slice(&state.to_json()).unwrap()
}

fn id(s: &str) -> CartId {
    CartId::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_to_one_cart_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(store(dir.path()), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let rt = Arc::clone(&rt);
        tasks.push(tokio::spawn(async move { rt.mutate(&id("c1"), add(SKU, 1)).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let cart = json(&rt.get(&id("c1")).await.unwrap());
    assert_eq!(cart["items"][0]["qty"], 50);
    assert_eq!(cart["version"], 50);
}

#[tokio::test]
async fn a_restarted_runtime_replays_the_same_cart() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let rt =
            runtime(store(dir.path()), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
        rt.mutate(&id("c1"), add(SKU, 2)).await.unwrap();
        rt.mutate(&id("c1"), add("861217", 1)).await.unwrap();
        let change = CartCommand::ChangeQuantity(ChangeQuantity { id: 1, quantity: 5 });
        rt.mutate(&id("c1"), MutateRequest { mutations: vec![change], ..Default::default() })
            .await
            .unwrap()
    };
    let rt = runtime(store(dir.path()), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
    assert_eq!(rt.get(&id("c1")).await.unwrap(), before);
}

#[tokio::test]
async fn unknown_carts_are_not_found_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(store(dir.path()), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
    assert!(matches!(rt.get(&id("nope")).await, Err(GrainError::NotFound)));
    assert_eq!(rt.resident(), 0);
}

#[tokio::test]
async fn refused_mutations_change_nothing_and_map_to_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(store(dir.path()), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
    let err = rt.mutate(&id("c1"), add("no-such-sku", 1)).await.unwrap_err();
    assert_eq!(err.kind().http_status(), 404);
    let err = rt.mutate(&id("c1"), add(SKU, 1000)).await.unwrap_err();
    assert_eq!(err.kind().http_status(), 400);
    let err = rt.mutate(&id("c1"), add("999001", 1)).await.unwrap_err();
    assert_eq!(err.kind().http_status(), 409, "discontinued item: {err}");
    assert!(matches!(rt.get(&id("c1")).await, Err(GrainError::NotFound)));
}

#[tokio::test]
async fn idle_grains_passivate_by_the_clock_and_reactivate_intact() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let options = RuntimeOptions { idle_ttl: Duration::from_secs(60), ..Default::default() };
    let rt = runtime(store(dir.path()), Arc::clone(&clock), options);
    let before = rt.mutate(&id("c1"), add(SKU, 3)).await.unwrap();
    clock.advance(59_000);
    assert_eq!(rt.passivate_idle().await, 0, "not idle long enough");
    clock.advance(1_000);
    assert_eq!(rt.passivate_idle().await, 1);
    assert_eq!(rt.resident(), 0);
    assert_eq!(rt.get(&id("c1")).await.unwrap(), before);
    assert_eq!(rt.resident(), 1);
}

#[tokio::test]
async fn the_cap_evicts_idle_grains_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let options = RuntimeOptions { max_grains: 4, ..Default::default() };
    let rt = runtime(store(dir.path()), Arc::clone(&clock), options);
    for i in 0..10 {
        clock.advance(1);
        rt.mutate(&id(&format!("c{i}")), add(SKU, 1)).await.unwrap();
        assert!(rt.resident() <= 4);
    }
    for i in 0..10 {
        assert_eq!(json(&rt.get(&id(&format!("c{i}"))).await.unwrap())["items"][0]["qty"], 1);
    }
}

/// A handover that never finishes, to hold grains busy in activation.
struct StuckHandover;

#[async_trait]
impl Handover for StuckHandover {
    async fn take_over(&self, _: &CartId, _: &str) -> Result<(), GrainError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn when_no_grain_can_be_evicted_the_answer_is_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let options = RuntimeOptions { max_grains: 2, ..Default::default() };
    // Both carts are claimed by another node, so activating them here waits
    // for its (never finishing) handover.
    for i in 0..2 {
        let event = NewEvent { kind: 6, timestamp_ms: 0, payload: vec![], idempotency: None };
        let cart = format!("busy{i}");
        store.append(&cart, 0, Fence::Claim("other".into()), vec![event]).await.unwrap();
    }
    let rt = GrainRuntime::new(store, resolver(), Arc::new(ManualClock::new(0)), options);
    rt.set_handover(Arc::new(StuckHandover));
    for i in 0..2 {
        let rt = Arc::clone(&rt);
        tokio::spawn(async move { rt.get(&id(&format!("busy{i}"))).await });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rt.resident() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "busy grains never became resident");
        tokio::task::yield_now().await;
    }
    let err = rt.get(&id("third")).await.unwrap_err();
    assert!(matches!(err, GrainError::Overloaded));
    assert_eq!((err.kind().http_status(), err.kind().retry_after()), (503, Some(1)));
}

#[tokio::test]
async fn if_match_and_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let tag = IdempotencyTag { key: "k1".into(), fingerprint: 42 };
    let first = {
        let rt =
            runtime(store(dir.path()), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
        let mut req = add(SKU, 1);
        req.if_match = Some(3);
        assert!(matches!(
            rt.mutate(&id("c1"), req).await,
            Err(GrainError::PreconditionFailed { current: 0 })
        ));
        let mut req = add(SKU, 1);
        req.idempotency = Some(tag.clone());
        let first = rt.mutate(&id("c1"), req.clone()).await.unwrap();
        assert_eq!(
            rt.mutate(&id("c1"), req).await.unwrap(),
            first,
            "retry answers the first result"
        );
        rt.mutate(&id("c1"), add(SKU, 1)).await.unwrap();
        first
    };
    // After a restart the key is still known, and the answer is still the
    // cart as the first request left it.
    let rt = runtime(store(dir.path()), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
    let mut req = add(SKU, 1);
    req.idempotency = Some(tag.clone());
    assert_eq!(rt.mutate(&id("c1"), req).await.unwrap(), first);
    assert_eq!(json(&rt.get(&id("c1")).await.unwrap())["items"][0]["qty"], 2, "applied once");
    let mut other = add(SKU, 2);
    other.idempotency = Some(IdempotencyTag { key: "k1".into(), fingerprint: 7 });
    assert!(matches!(rt.mutate(&id("c1"), other).await, Err(GrainError::IdempotencyKeyReused)));
}

#[tokio::test]
async fn a_stale_writer_gets_a_conflict_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let shared = store(dir.path());
    let a = runtime(Arc::clone(&shared), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
    let b = runtime(Arc::clone(&shared), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
    a.mutate(&id("c1"), add(SKU, 1)).await.unwrap();
    b.get(&id("c1")).await.unwrap();
    a.mutate(&id("c1"), add(SKU, 1)).await.unwrap();
    // b's grain is at version 1 while the log is at 2: its append is fenced.
    assert!(matches!(b.mutate(&id("c1"), add(SKU, 1)).await, Err(GrainError::Conflict)));
    let after = b.mutate(&id("c1"), add(SKU, 1)).await.unwrap();
    assert_eq!(json(&after)["items"][0]["qty"], 3);
}

#[tokio::test]
async fn a_watcher_sees_the_current_state_then_every_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(store(dir.path()), Arc::new(ManualClock::new(0)), RuntimeOptions::default());
    assert!(matches!(rt.watch(&id("c1")).await, Err(GrainError::NotFound)));
    rt.mutate(&id("c1"), add(SKU, 1)).await.unwrap();
    let mut watch = rt.watch(&id("c1")).await.unwrap();
    assert_eq!(watch.updates.borrow_and_update().as_ref().unwrap().version(), 1);
    rt.mutate(&id("c1"), add(SKU, 1)).await.unwrap();
    rt.mutate(&id("c1"), add(SKU, 1)).await.unwrap();
    watch.updates.changed().await.unwrap();
    // Latest state wins: the watcher may skip version 2, never the newest.
    assert_eq!(watch.updates.borrow_and_update().as_ref().unwrap().version(), 3);
    // Handing the cart over ends the watch here.
    rt.hand_over(&id("c1")).await.unwrap();
    assert!(watch.updates.changed().await.is_err());
}

#[tokio::test]
async fn watchers_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let options = RuntimeOptions { max_watchers: 2, ..Default::default() };
    let rt = runtime(store(dir.path()), Arc::new(ManualClock::new(0)), options);
    rt.mutate(&id("c1"), add(SKU, 1)).await.unwrap();
    let first = rt.watch(&id("c1")).await.unwrap();
    let _second = rt.watch(&id("c1")).await.unwrap();
    assert!(matches!(rt.watch(&id("c1")).await, Err(GrainError::Overloaded)));
    drop(first);
    assert!(rt.watch(&id("c1")).await.is_ok());
}

#[tokio::test]
async fn an_idempotency_key_protects_for_its_window_across_many_keys_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let keyed = |key: &str| MutateRequest {
        idempotency: Some(IdempotencyTag { key: key.into(), fingerprint: 7 }),
        ..add(SKU, 1)
    };
    let cart = id("keyed");
    // Without snapshots, so that every state a retry may answer is stored
    // (see carts_are_snapshotted_every_n_events... for retries a snapshot
    // covers).
    let options = || RuntimeOptions { snapshot_every: 0, ..Default::default() };
    {
        let rt = runtime(store(dir.path()), Arc::clone(&clock), options());
        assert_eq!(rt.mutate(&cart, keyed("first")).await.unwrap().version(), 1);
        // Far more keys than the old count-based memory held.
        for i in 0..200 {
            rt.mutate(&cart, keyed(&format!("k{i}"))).await.unwrap();
        }
        clock.advance(23 * 3_600_000);
        let retry = rt.mutate(&cart, keyed("first")).await.unwrap();
        assert_eq!(retry.version(), 1, "the retry answers what the first attempt did");
        rt.flush().await.unwrap();
    }
    // Another process (a restart, or the next owner) reads the keys back.
    let rt = runtime(store(dir.path()), Arc::clone(&clock), options());
    assert_eq!(rt.mutate(&cart, keyed("first")).await.unwrap().version(), 1);
    assert_eq!(rt.get(&cart).await.unwrap().version(), 201, "nothing applied twice");
    // After the window the key is free again.
    clock.advance(2 * 3_600_000);
    let rt = runtime(store(dir.path()), Arc::clone(&clock), options());
    assert_eq!(rt.mutate(&cart, keyed("first")).await.unwrap().version(), 202);
}

#[tokio::test]
async fn a_leased_node_serves_only_under_its_lease_and_reloads_after_a_lapse() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let options =
        RuntimeOptions { leased: true, node: "leased".into(), ..RuntimeOptions::default() };
    let node = runtime(store(dir.path()), Arc::clone(&clock), options);
    let cart = id("moved");
    assert!(
        matches!(node.mutate(&cart, add(SKU, 1)).await, Err(GrainError::NoLease)),
        "no lease yet: nothing is served"
    );
    node.grant_lease(1_000_000, 1_001_000);
    node.mutate(&cart, add(SKU, 1)).await.unwrap();
    // Its lease ran out (it stood still, or lost its majority) and another
    // node took the cart over and wrote to it.
    clock.advance(1_000);
    assert!(matches!(node.get(&cart).await, Err(GrainError::NoLease)), "reads refused too");
    let other = runtime(
        store(dir.path()),
        Arc::clone(&clock),
        RuntimeOptions { node: "other".into(), ..RuntimeOptions::default() },
    );
    other.mutate(&cart, add(SKU, 1)).await.unwrap();
    // Renewed in time, memory is authoritative; after a lapse it is not.
    node.grant_lease(1_001_000, 1_002_000);
    let state = node.get(&cart).await.unwrap();
    assert_eq!(state.version(), 2, "after a lapse the first answer comes from the store");
    assert_eq!(node.resident(), 1);
}

#[tokio::test]
async fn carts_are_snapshotted_every_n_events_and_at_passivation_and_activate_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let store = store(dir.path());
    let options = RuntimeOptions {
        snapshot_every: 4,
        idle_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let rt = runtime(Arc::clone(&store), Arc::clone(&clock), options.clone());
    let keyed = |n: u64| MutateRequest {
        idempotency: Some(IdempotencyTag { key: format!("k{n}"), fingerprint: n }),
        ..add(SKU, 1)
    };
    for n in 1..=6 {
        rt.mutate(&id("snap"), keyed(n)).await.unwrap();
    }
    // Stored off the request path: polled for, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let loaded = loop {
        let loaded = store.load("snap").await.unwrap();
        if loaded.snapshot.is_some() || std::time::Instant::now() > deadline {
            break loaded;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.version), Some(4), "every 4 events");
    assert_eq!(loaded.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    clock.advance(60_000);
    assert_eq!(rt.passivate_idle().await, 1);
    let loaded = store.load("snap").await.unwrap();
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.version), Some(6), "at passivation");
    assert!(loaded.events.is_empty());
    // A new runtime (a restart) activates from the snapshot: same cart, and
    // its idempotency keys still answer retries without applying them.
    let before = rt.get(&id("snap")).await.unwrap();
    let again = runtime(Arc::clone(&store), Arc::clone(&clock), options);
    assert_eq!(again.get(&id("snap")).await.unwrap(), before);
    let retried = again.mutate(&id("snap"), keyed(6)).await.unwrap();
    assert_eq!(retried.version(), 6, "a retry is answered, not applied");
    let older = again.mutate(&id("snap"), keyed(2)).await.unwrap();
    assert_eq!(older.version(), 6, "a retry of a request the snapshot covers is not applied");
    assert_eq!(again.mutate(&id("snap"), keyed(7)).await.unwrap().version(), 7);
    assert_eq!(json(&again.get(&id("snap")).await.unwrap())["items"][0]["qty"], 7);
}

#[tokio::test]
async fn erased_carts_are_gone_and_idle_ones_expire_by_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let store = store(dir.path());
    let rt = runtime(Arc::clone(&store), Arc::clone(&clock), RuntimeOptions::default());
    rt.mutate(&id("gone"), add(SKU, 1)).await.unwrap();
    assert!(rt.erase(&id("gone")).await.unwrap());
    assert!(matches!(rt.get(&id("gone")).await, Err(GrainError::NotFound)));
    assert!(store.load("gone").await.unwrap().is_empty());
    assert!(!rt.erase(&id("gone")).await.unwrap(), "nothing left to erase");

    let expiry = cart_grain::Expiry {
        expire_after: Duration::from_secs(3600),
        keep_completed: Duration::from_secs(7200),
    };
    let everywhere = |_: &CartId| true;
    rt.mutate(&id("old"), add(SKU, 1)).await.unwrap();
    clock.advance(1_800_000);
    rt.mutate(&id("young"), add(SKU, 1)).await.unwrap();
    assert_eq!(rt.expire_round(expiry, &everywhere).await, 0, "nothing idle for an hour yet");
    clock.advance(1_800_001);
    let nowhere = |_: &CartId| false;
    assert_eq!(rt.expire_round(expiry, &nowhere).await, 0, "only carts this node owns");
    assert_eq!(rt.expire_round(expiry, &everywhere).await, 1);
    assert!(matches!(rt.get(&id("old")).await, Err(GrainError::NotFound)), "expired: 404");
    assert!(store.load("old").await.unwrap().is_empty(), "and its data removed");
    assert_eq!(rt.get(&id("young")).await.unwrap().version(), 1);
}
