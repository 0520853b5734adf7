//! A cart's records are found through links from its newest one: any mix
//! of appends, snapshots (also ones written after later events), erasures,
//! claims, reopens and compactions loads back what a model says; and logs
//! written before records were linked stay readable, and are linked by
//! compaction.

use std::collections::BTreeMap;

use cart_store::{
    Event, EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, Loaded, NewEvent, Snapshot,
};
use proptest::prelude::*;

fn open(dir: &std::path::Path) -> FileStore {
    open_with_segments(dir, FileStoreOptions::DEFAULT_SEGMENT_BYTES)
}

fn open_with_segments(dir: &std::path::Path, segment_bytes: u64) -> FileStore {
    let mut options = FileStoreOptions::new(dir, FsyncPolicy::Never);
    options.auto_compaction = None;
    options.segment_bytes = segment_bytes;
    FileStore::open(options).unwrap()
}

fn new_event(n: u64) -> NewEvent {
    NewEvent {
        kind: 3,
        timestamp_ms: n as i64,
        payload: n.to_le_bytes().to_vec(),
        idempotency: None,
    }
}

/// What a cart should load as: every event, and the best snapshot saved.
#[derive(Debug, Default, Clone)]
struct Model {
    events: Vec<u64>,
    snapshot: Option<u64>,
}

impl Model {
    fn expected(&self) -> (Option<u64>, Vec<u64>) {
        let from = self.snapshot.unwrap_or(0) as usize;
        (self.snapshot, self.events[from..].to_vec())
    }
}

fn seen(loaded: &Loaded) -> (Option<u64>, Vec<u64>) {
    let events = loaded.events.iter().map(|e| e.seq).collect();
    (loaded.snapshot.as_ref().map(|s| s.version), events)
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        cart: usize,
        events: u64,
        claim: bool,
        /// Through the second store on the same directory.
        follower: bool,
    },
    /// A snapshot `back` events behind the cart's version.
    Snapshot {
        cart: usize,
        back: u64,
    },
    Erase {
        cart: usize,
    },
    /// Closes and opens the first store again; without its checkpoint,
    /// the whole log is read.
    Reopen {
        checkpoint: bool,
    },
    Compact,
    /// Checks the second store, which reads only when asked (so it may be
    /// behind by segments that a compaction meanwhile deleted).
    CheckFollower,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 1..4u64, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(cart, events, claim, follower)| Op::Append { cart, events, claim, follower }),
        3 => (0..4usize, 0..3u64).prop_map(|(cart, back)| Op::Snapshot { cart, back }),
        1 => (0..4usize).prop_map(|cart| Op::Erase { cart }),
        1 => any::<bool>().prop_map(|checkpoint| Op::Reopen { checkpoint }),
        1 => Just(Op::Compact),
        1 => Just(Op::CheckFollower),
    ]
}

const CARTS: [&str; 4] = ["a", "b", "a-cart-id-longer-than-sixteen-bytes", "c"];

async fn run(ops: Vec<Op>, segment_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_with_segments(dir.path(), segment_bytes);
    let follower = open_with_segments(dir.path(), segment_bytes);
    let mut models: BTreeMap<usize, Model> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Append { cart, events, claim, follower: through_follower } => {
                let store = if through_follower { &follower } else { &store };
                let model = models.entry(cart).or_default();
                let version = model.events.len() as u64;
                let id = CARTS[cart];
                let fence = match store.claim_of(id).await.unwrap() {
                    Some(c) if !claim => Fence::Epoch(c.epoch),
                    _ => Fence::Claim(format!("n{cart}")),
                };
                let new = (version + 1..=version + events).map(new_event).collect();
                let appended = store.append(id, version, fence, new).await.unwrap();
                assert_eq!(appended.version, version + events);
                model.events.extend(version + 1..=version + events);
            }
            Op::Snapshot { cart, back } => {
                let model = models.entry(cart).or_default();
                let version = model.events.len() as u64;
                if version == 0 {
                    continue;
                }
                let at = version.saturating_sub(back).max(1);
                let state = at.to_be_bytes().to_vec();
                store
                    .save_snapshot(CARTS[cart], Snapshot { version: at, timestamp_ms: 1, state })
                    .await
                    .unwrap();
                model.snapshot = model.snapshot.max(Some(at));
            }
            Op::Erase { cart } => {
                store.erase(CARTS[cart]).await.unwrap();
                models.remove(&cart);
            }
            Op::Reopen { checkpoint } => {
                drop(store);
                if !checkpoint {
                    for entry in std::fs::read_dir(dir.path()).unwrap() {
                        let path = entry.unwrap().path();
                        if path.extension().is_some_and(|e| e == "checkpoint") {
                            std::fs::remove_file(path).unwrap();
                        }
                    }
                }
                store = open_with_segments(dir.path(), segment_bytes);
            }
            Op::Compact => {
                store.compact().await.unwrap();
            }
            Op::CheckFollower => check(&follower, &models).await,
        }
        check(&store, &models).await;
    }
    check(&follower, &models).await;
}

/// Every cart loads from `store` as `models` say.
async fn check(store: &FileStore, models: &BTreeMap<usize, Model>) {
    {
        for (cart, id) in CARTS.iter().enumerate() {
            let loaded = store.load(id).await.unwrap();
            let expected = models.get(&cart).cloned().unwrap_or_default().expected();
            assert_eq!(seen(&loaded), expected, "cart {id}");
            if let Some(s) = &loaded.snapshot {
                assert_eq!(s.state, s.version.to_be_bytes(), "the snapshot's own state");
            }
            for e in &loaded.events {
                assert_eq!(e.payload, e.seq.to_le_bytes(), "event {} of {id}", e.seq);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_history_loads_back_as_the_model_says(
        ops in proptest::collection::vec(op(), 1..40),
        segment_bytes in prop_oneof![Just(FileStoreOptions::DEFAULT_SEGMENT_BYTES), 150..2_000u64],
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops, segment_bytes));
    }
}

/// A record of the first format (magic 0xCA, no link), as older versions
/// wrote them.
fn unlinked_record(cart: &str, event: &Event) -> Vec<u8> {
    let mut body = vec![cart.len() as u8];
    body.extend_from_slice(cart.as_bytes());
    body.extend_from_slice(&event.seq.to_le_bytes());
    body.push(event.kind);
    body.extend_from_slice(&event.timestamp_ms.to_le_bytes());
    body.push(0);
    body.extend_from_slice(&event.payload);
    let mut out = vec![0xCA];
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn old_event(seq: u64, kind: u8, payload: &[u8]) -> Event {
    Event { seq, kind, timestamp_ms: 1_000, payload: payload.to_vec(), idempotency: None }
}

#[tokio::test]
async fn a_log_of_unlinked_records_is_read_extended_and_linked_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Vec::new();
    for (cart, e) in [
        ("a", old_event(1, 0, b"n1")), // a claim
        ("a", old_event(1, 3, b"a1")),
        ("b", old_event(1, 3, b"b1")),
        ("a", old_event(2, 3, b"a2")),
        ("a", old_event(3, 3, b"a3")),
        ("a", old_event(2, 255, b"state-a2")), // a snapshot behind the version
        ("b", old_event(2, 3, b"b2")),
        ("c", old_event(1, 3, b"c1")),
        ("c", old_event(0, 254, b"")), // erased
        ("c", old_event(1, 3, b"c1-again")),
    ] {
        log.extend(unlinked_record(cart, &e));
    }
    std::fs::write(dir.path().join(cart_store::file::LOG_FILE), &log).unwrap();

    let payloads = |l: &Loaded| -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
        let snapshot = l.snapshot.as_ref().map(|s| s.state.clone());
        (snapshot, l.events.iter().map(|e| e.payload.clone()).collect())
    };
    let store = open(dir.path());
    let a = store.load("a").await.unwrap();
    assert_eq!(payloads(&a), (Some(b"state-a2".to_vec()), vec![b"a3".to_vec()]));
    let b = store.load("b").await.unwrap();
    assert_eq!(payloads(&b), (None, vec![b"b1".to_vec(), b"b2".to_vec()]));
    assert_eq!(payloads(&store.load("c").await.unwrap()), (None, vec![b"c1-again".to_vec()]));

    // New, linked records after the old ones.
    let epoch = store.claim_of("a").await.unwrap().unwrap().epoch;
    store.append("a", 3, Fence::Epoch(epoch), vec![new_event(4)]).await.unwrap();
    store.append("b", 2, Fence::Claim("n2".into()), vec![new_event(3)]).await.unwrap();
    let expect_a = (Some(2), vec![3, 4]);
    assert_eq!(seen(&store.load("a").await.unwrap()), expect_a);
    // Through the checkpoint a clean close writes.
    drop(store);
    assert!(dir.path().join("index-0.checkpoint").exists());
    let store = open(dir.path());
    assert_eq!(seen(&store.load("a").await.unwrap()), expect_a);
    assert_eq!(seen(&store.load("b").await.unwrap()), (None, vec![1, 2, 3]));
    // A linked snapshot covering everything ends the need for the old ones.
    let state = b"state-b3".to_vec();
    store.save_snapshot("b", Snapshot { version: 3, timestamp_ms: 5, state }).await.unwrap();
    assert_eq!(seen(&store.load("b").await.unwrap()), (Some(3), vec![]));

    // Compaction links every record; the old format is gone from the disk.
    store.compact().await.unwrap();
    drop(store);
    let names = file_names(dir.path());
    for checkpoint in names.iter().filter(|n| n.ends_with(".checkpoint")) {
        std::fs::remove_file(dir.path().join(checkpoint)).unwrap();
    }
    assert!(!names.contains(&cart_store::file::LOG_FILE.to_owned()), "{names:?}");
    let compacted = names.iter().find(|n| n.starts_with("compacted-")).unwrap();
    let newest = std::fs::read(dir.path().join(compacted)).unwrap();
    // Its header (16 bytes), then the first entry's gap (one byte) and
    // record, now linked.
    assert_eq!(newest.get(17), Some(&0xCB));
    let store = open(dir.path());
    assert_eq!(seen(&store.load("a").await.unwrap()), expect_a);
    assert_eq!(payloads(&store.load("a").await.unwrap()).0, Some(b"state-a2".to_vec()));
    assert_eq!(seen(&store.load("b").await.unwrap()), (Some(3), vec![]));
    assert_eq!(payloads(&store.load("c").await.unwrap()), (None, vec![b"c1-again".to_vec()]));
}

/// The names of the files in `dir`.
fn file_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A damaged link (with a valid checksum) is reported when the cart is
/// loaded, instead of being followed round in a loop.
#[tokio::test]
async fn a_link_that_does_not_point_back_is_damage_not_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("a", 0, Fence::Claim("n1".into()), vec![new_event(1)]).await.unwrap();
    store.append("a", 1, Fence::Epoch(1), vec![new_event(2), new_event(3)]).await.unwrap();
    drop(store);
    // Point the last event's link at itself (and fix its checksum, so only
    // the link is wrong): a naive reader would loop for ever.
    let path = dir.path().join(cart_store::file::LOG_FILE);
    let mut log = std::fs::read(&path).unwrap();
    let starts = record_starts(&log);
    let last = *starts.last().unwrap();
    let body = last + 9;
    // body: cart_len 1 | "a" | seq 8 | kind 1 | timestamp 8 | prev 8
    let prev = body + 1 + 1 + 8 + 1 + 8;
    log[prev..prev + 8].copy_from_slice(&(last as u64).to_le_bytes());
    // The checksum covers the magic byte and the body.
    let crc = crc32fast::hash(
        &log[last..last + 1].iter().chain(&log[body..]).copied().collect::<Vec<u8>>(),
    );
    log[last + 5..last + 9].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &log).unwrap();
    std::fs::remove_file(dir.path().join("index-0.checkpoint")).unwrap();
    let store = open(dir.path());
    let e = store.load("a").await.unwrap_err();
    assert!(matches!(e, cart_store::StoreError::Corrupt(_)), "{e}");
}

/// Where each record of a log starts.
fn record_starts(log: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 9 <= log.len() && log[at] != 0 {
        starts.push(at);
        let len = u32::from_le_bytes(log[at + 1..at + 5].try_into().unwrap()) as usize;
        at += 9 + len;
    }
    starts
}
