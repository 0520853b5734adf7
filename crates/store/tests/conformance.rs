//! One conformance suite for every EventStore backend: the file store and
//! PostgreSQL (a throwaway server; see cart-testkit). Two instances on one
//! backing store stand for two processes.

use std::sync::Arc;

use async_trait::async_trait;
use cart_store::{
    Claim, Event, EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, IdempotencyTag,
    Loaded, NewEvent, PgStore, PgStoreOptions, Snapshot, StoreError,
};

#[async_trait]
trait Backend: Send + Sync {
    /// Another handle on the same backing store (another "process").
    async fn open(&self) -> Arc<dyn EventStore>;
}

struct File(tempfile::TempDir);

#[async_trait]
impl Backend for File {
    async fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(
            FileStore::open(FileStoreOptions::new(self.0.path(), FsyncPolicy::Always)).unwrap(),
        )
    }
}

struct Postgres(String);

#[async_trait]
impl Backend for Postgres {
    async fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(PgStore::open(PgStoreOptions::new(self.0.clone())).await.unwrap())
    }
}

fn event(n: u8) -> NewEvent {
    NewEvent {
        kind: 2,
        timestamp_ms: i64::from(n) * 1000,
        payload: vec![n; usize::from(n)],
        idempotency: None,
    }
}

async fn append_and_load(b: &dyn Backend) {
    let s = b.open().await;
    assert!(s.load("a").await.unwrap().events.is_empty());
    assert_eq!(s.claim_of("a").await.unwrap(), None);
    let first =
        s.append("a", 0, Fence::Claim("n1".into()), vec![event(1), event(2)]).await.unwrap();
    assert_eq!((first.version, first.epoch), (2, 1));
    s.append("b", 0, Fence::Claim("n1".into()), vec![event(9)]).await.unwrap();
    assert_eq!(s.append("a", 2, Fence::Epoch(1), vec![event(3)]).await.unwrap().version, 3);
    let a = s.load("a").await.unwrap().events;
    assert_eq!(
        a.iter().map(|e| (e.seq, e.timestamp_ms)).collect::<Vec<_>>(),
        vec![(1, 1000), (2, 2000), (3, 3000)]
    );
    assert_eq!(a[2].payload, vec![3, 3, 3]);
    assert_eq!(a[0].kind, 2);
    assert_eq!(s.claim_of("a").await.unwrap(), Some(Claim { epoch: 1, owner: "n1".into() }));
    let mut ids = s.cart_ids().await.unwrap();
    ids.sort();
    assert_eq!(ids, vec!["a", "b"]);
    // Everything is durable across a reopen.
    let again = b.open().await;
    assert_eq!(again.load("a").await.unwrap().events, a);
}

async fn conditional_append_conflicts(b: &dyn Backend) {
    let s = b.open().await;
    s.append("c", 0, Fence::Claim("n1".into()), vec![event(1)]).await.unwrap();
    let behind = s.append("c", 0, Fence::Epoch(1), vec![event(2)]).await.unwrap_err();
    assert!(matches!(behind, StoreError::Conflict { expected: 0, actual: 1 }), "{behind:?}");
    let ahead = s.append("c", 3, Fence::Epoch(1), vec![event(2)]).await.unwrap_err();
    assert!(matches!(ahead, StoreError::Conflict { expected: 3, actual: 1 }), "{ahead:?}");
    assert_eq!(s.load("c").await.unwrap().events.len(), 1, "nothing of a refused append is stored");
}

async fn claims_fence_stale_writers(b: &dyn Backend) {
    let (one, two) = (b.open().await, b.open().await);
    one.append("d", 0, Fence::Claim("one".into()), vec![event(1)]).await.unwrap();
    let taken = two.append("d", 1, Fence::Claim("two".into()), vec![event(2)]).await.unwrap();
    assert_eq!(taken.epoch, 2);
    let stale = one.append("d", 2, Fence::Epoch(1), vec![event(3)]).await.unwrap_err();
    assert!(matches!(stale, StoreError::Fenced { held: 1, current: 2 }), "{stale:?}");
    assert_eq!(one.claim_of("d").await.unwrap(), Some(Claim { epoch: 2, owner: "two".into() }));
    assert_eq!(one.load("d").await.unwrap().events.len(), 2);
}

/// A claim alone (no events): a node taking a cart over claims it before it
/// serves it; the old holder is fenced at once, nothing else changes, and
/// an append without events needs a claim.
async fn a_claim_alone_moves_the_claim(b: &dyn Backend) {
    let (one, two) = (b.open().await, b.open().await);
    one.append("g", 0, Fence::Claim("one".into()), vec![event(1)]).await.unwrap();
    let claimed = two.append("g", 1, Fence::Claim("two".into()), vec![]).await.unwrap();
    assert_eq!((claimed.version, claimed.epoch), (1, 2));
    assert_eq!(one.claim_of("g").await.unwrap(), Some(Claim { epoch: 2, owner: "two".into() }));
    let stale = one.append("g", 1, Fence::Epoch(1), vec![event(2)]).await.unwrap_err();
    assert!(matches!(stale, StoreError::Fenced { held: 1, current: 2 }), "{stale:?}");
    assert_eq!(b.open().await.load("g").await.unwrap().events.len(), 1, "no event was added");
    let empty = two.append("g", 1, Fence::Epoch(2), vec![]).await.unwrap_err();
    assert!(matches!(empty, StoreError::Invalid(_)), "{empty:?}");
    two.append("g", 1, Fence::Epoch(2), vec![event(3)]).await.unwrap();
    assert_eq!(b.open().await.load("g").await.unwrap().events.len(), 2);
}

async fn idempotency_keys_are_kept(b: &dyn Backend) {
    let s = b.open().await;
    let tag = IdempotencyTag { key: "retry-1".into(), fingerprint: u64::MAX - 5 };
    let mut tagged = event(2);
    tagged.idempotency = Some(tag.clone());
    s.append("e", 0, Fence::Claim("n".into()), vec![event(1), tagged]).await.unwrap();
    let events = b.open().await.load("e").await.unwrap().events;
    assert_eq!(events[0].idempotency, None);
    assert_eq!(events[1].idempotency, Some(tag));
}

async fn concurrent_writers_never_fork(b: &dyn Backend) {
    let stores = [b.open().await, b.open().await, b.open().await];
    let mut tasks = Vec::new();
    for (n, s) in stores.iter().enumerate() {
        let s = Arc::clone(s);
        tasks.push(tokio::spawn(async move {
            let mut won = 0u64;
            for _ in 0..30 {
                let version = s.load("hot").await.unwrap().events.len() as u64;
                if s.append("hot", version, Fence::Claim(format!("n{n}")), vec![event(1)])
                    .await
                    .is_ok()
                {
                    won += 1;
                }
            }
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let events = stores[0].load("hot").await.unwrap().events;
    assert_eq!(events.len() as u64, total, "every acknowledged append is stored exactly once");
    assert!(
        events.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
        "sequence numbers are contiguous"
    );
}

async fn many_carts_in_one_batch(b: &dyn Backend) {
    let s = b.open().await;
    let mut tasks = Vec::new();
    for c in 0..100 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let cart = format!("m{c}");
            let first = s.append(&cart, 0, Fence::Claim("n".into()), vec![event(1)]).await.unwrap();
            for v in 1..5 {
                s.append(&cart, v, Fence::Epoch(first.epoch), vec![event(1)]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for c in 0..100 {
        assert_eq!(s.load(&format!("m{c}")).await.unwrap().events.len(), 5);
    }
}

async fn secrets_are_made_once_and_shared(b: &dyn Backend) {
    let stores = [b.open().await, b.open().await, b.open().await, b.open().await];
    // Processes starting together race to make it; all get the same one.
    let made = futures_util::future::join_all(stores.iter().map(|s| s.secret("cart-ids"))).await;
    let first = made[0].as_ref().unwrap();
    assert!(made.iter().all(|m| m.as_ref().unwrap() == first), "one secret for everyone");
    assert_ne!(*first, [0u8; 32]);
    let again = b.open().await.secret("cart-ids").await.unwrap();
    assert_eq!(again, *first, "a reopened store reads the same secret");
    let other = stores[0].secret("another").await.unwrap();
    assert_ne!(other, *first, "names are separate secrets");
    for bad in ["", "../etc", "a/b", "with space"] {
        assert!(matches!(stores[0].secret(bad).await, Err(StoreError::Invalid(_))), "{bad:?}");
    }
}

fn snapshot(version: u64, state: &str) -> Snapshot {
    Snapshot { version, timestamp_ms: 77, state: state.as_bytes().to_vec() }
}

async fn snapshots_replace_the_events_they_cover(b: &dyn Backend) {
    let s = b.open().await;
    let refused = s.save_snapshot("s", snapshot(1, "x")).await.unwrap_err();
    assert!(matches!(refused, StoreError::NotFound), "no snapshot of a cart never written");
    s.append("s", 0, Fence::Claim("n1".into()), (1..=5).map(event).collect()).await.unwrap();
    let ahead = s.save_snapshot("s", snapshot(9, "x")).await.unwrap_err();
    assert!(matches!(ahead, StoreError::Invalid(_)), "{ahead:?}");
    s.save_snapshot("s", snapshot(3, "at 3")).await.unwrap();
    let loaded = s.load("s").await.unwrap();
    assert_eq!(loaded.snapshot, Some(snapshot(3, "at 3")));
    assert_eq!(loaded.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(loaded.version(), 5);
    // An older snapshot than the one held changes nothing.
    s.save_snapshot("s", snapshot(2, "at 2")).await.unwrap();
    assert_eq!(s.load("s").await.unwrap().snapshot, Some(snapshot(3, "at 3")));
    // Appends go on after it; another handle reads the same.
    s.append("s", 5, Fence::Epoch(1), vec![event(6)]).await.unwrap();
    s.save_snapshot("s", snapshot(6, "at 6")).await.unwrap();
    let other = b.open().await.load("s").await.unwrap();
    assert_eq!(other.snapshot, Some(snapshot(6, "at 6")));
    assert!(other.events.is_empty());
    assert_eq!(s.append("s", 6, Fence::Epoch(1), vec![event(7)]).await.unwrap().version, 7);
}

async fn erased_carts_are_gone(b: &dyn Backend) {
    let s = b.open().await;
    s.append("e", 0, Fence::Claim("n1".into()), vec![event(1), event(2)]).await.unwrap();
    s.save_snapshot("e", snapshot(1, "at 1")).await.unwrap();
    s.append("kept", 0, Fence::Claim("n1".into()), vec![event(3)]).await.unwrap();
    assert!(s.erase("e").await.unwrap());
    assert!(!s.erase("e").await.unwrap(), "erasing twice finds nothing");
    assert!(!s.erase("never").await.unwrap());
    for store in [s.clone(), b.open().await] {
        assert!(store.load("e").await.unwrap().is_empty());
        assert_eq!(store.claim_of("e").await.unwrap(), None);
        assert_eq!(store.cart_ids().await.unwrap(), vec!["kept"]);
        assert_eq!(store.load("kept").await.unwrap().events.len(), 1);
    }
    // A writer that still holds the erased cart is refused, not forked.
    let stale = s.append("e", 2, Fence::Epoch(1), vec![event(4)]).await.unwrap_err();
    assert!(matches!(stale, StoreError::Fenced { .. } | StoreError::Conflict { .. }), "{stale:?}");
    let late = s.save_snapshot("e", snapshot(2, "late")).await.unwrap_err();
    assert!(matches!(late, StoreError::NotFound), "an erased cart is never brought back");
    // The id may start over as a new cart.
    let again = s.append("e", 0, Fence::Claim("n2".into()), vec![event(5)]).await.unwrap();
    assert_eq!(again.version, 1);
}

async fn idle_carts_are_listed_oldest_first(b: &dyn Backend) {
    let s = b.open().await;
    for (cart, ms) in [("new", 9_000), ("old", 1_000), ("mid", 5_000)] {
        let e = NewEvent { timestamp_ms: ms, ..event(1) };
        s.append(cart, 0, Fence::Claim("n1".into()), vec![e]).await.unwrap();
    }
    assert_eq!(s.idle_carts(6_000, 10).await.unwrap(), vec!["old", "mid"]);
    assert_eq!(s.idle_carts(6_000, 1).await.unwrap(), vec!["old"]);
    assert!(s.idle_carts(1_000, 10).await.unwrap().is_empty());
    // A new event makes a cart active again.
    let later = NewEvent { timestamp_ms: 10_000, ..event(2) };
    s.append("old", 1, Fence::Epoch(1), vec![later]).await.unwrap();
    assert_eq!(b.open().await.idle_carts(6_000, 10).await.unwrap(), vec!["mid"]);
}

async fn imports_copy_a_cart_whole(b: &dyn Backend) {
    let s = b.open().await;
    let events: Vec<Event> = (4..=5)
        .map(|seq| Event {
            seq,
            kind: 2,
            timestamp_ms: 5,
            payload: vec![seq as u8],
            idempotency: Some(IdempotencyTag { key: format!("k{seq}"), fingerprint: seq }),
        })
        .collect();
    let loaded = Loaded { snapshot: Some(snapshot(3, "at 3")), events };
    let imported = s.import("i", loaded.clone()).await.unwrap();
    assert_eq!(imported.version, 5);
    assert_eq!(b.open().await.load("i").await.unwrap(), loaded);
    assert_eq!(s.claim_of("i").await.unwrap().unwrap().owner, cart_store::TOOL_OWNER);
    let twice = s.import("i", loaded.clone()).await.unwrap_err();
    assert!(matches!(twice, StoreError::Conflict { .. }), "{twice:?}");
    let gap = Loaded { snapshot: None, events: loaded.events.clone() };
    assert!(matches!(s.import("j", gap).await, Err(StoreError::Invalid(_))));
    assert!(s.load("j").await.unwrap().is_empty());
    let next = s.append("i", 5, Fence::Claim("n1".into()), vec![event(6)]).await.unwrap();
    assert_eq!(next.version, 6);
}

async fn reserved_kinds_are_refused(b: &dyn Backend) {
    let s = b.open().await;
    for kind in [0u8, 253, 254, 255] {
        let e = NewEvent { kind, ..event(1) };
        let refused = s.append("r", 0, Fence::Claim("n1".into()), vec![e]).await.unwrap_err();
        assert!(matches!(refused, StoreError::Invalid(_)), "kind {kind}: {refused:?}");
    }
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            async fn backend() -> Box<dyn Backend> {
                Box::new($make)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn append_and_load() {
                super::append_and_load(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn conditional_append_conflicts() {
                super::conditional_append_conflicts(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn claims_fence_stale_writers() {
                super::claims_fence_stale_writers(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_claim_alone_moves_the_claim() {
                super::a_claim_alone_moves_the_claim(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn idempotency_keys_are_kept() {
                super::idempotency_keys_are_kept(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_writers_never_fork() {
                super::concurrent_writers_never_fork(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn many_carts_in_one_batch() {
                super::many_carts_in_one_batch(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn snapshots_replace_the_events_they_cover() {
                super::snapshots_replace_the_events_they_cover(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn erased_carts_are_gone() {
                super::erased_carts_are_gone(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn idle_carts_are_listed_oldest_first() {
                super::idle_carts_are_listed_oldest_first(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn imports_copy_a_cart_whole() {
                super::imports_copy_a_cart_whole(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reserved_kinds_are_refused() {
                super::reserved_kinds_are_refused(&*backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn secrets_are_made_once_and_shared() {
                super::secrets_are_made_once_and_shared(&*backend().await).await
            }
        }
    };
}

conformance!(file, File(tempfile::tempdir().unwrap()));
conformance!(postgres, Postgres(cart_testkit::fresh_database().await));
