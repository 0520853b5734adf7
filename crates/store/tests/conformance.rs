//! One conformance suite for every EventStore backend: the file store and
//! PostgreSQL (a throwaway server; see cart-testkit). Two instances on one
//! backing store stand for two processes.

use std::sync::Arc;

use async_trait::async_trait;
use cart_store::{
    Claim, EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, IdempotencyTag, NewEvent,
    PgStore, PgStoreOptions, StoreError,
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
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn secrets_are_made_once_and_shared() {
                super::secrets_are_made_once_and_shared(&*backend().await).await
            }
        }
    };
}

conformance!(file, File(tempfile::tempdir().unwrap()));
conformance!(postgres, Postgres(cart_testkit::fresh_database().await));
