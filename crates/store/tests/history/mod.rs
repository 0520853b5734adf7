//! A known history of carts written to a file store, and checks of it,
//! shared by the compaction and checkpoint tests.
#![allow(dead_code)] // each test binary uses some of it

use std::path::Path;

use cart_store::{EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, NewEvent, Snapshot};

pub fn open(dir: &Path) -> FileStore {
    let mut options = FileStoreOptions::new(dir, FsyncPolicy::Always);
    options.auto_compaction = None;
    FileStore::open(options).unwrap()
}

pub fn event(cart: usize, seq: u64) -> NewEvent {
    NewEvent {
        kind: 2,
        timestamp_ms: seq as i64,
        payload: format!("payload of {cart} at {seq}").into_bytes(),
        idempotency: None,
    }
}

pub fn id(cart: usize) -> String {
    format!("cart-{cart:04}")
}

/// Carts 0..40 get 12 events each; even carts a snapshot at 8; carts 0..5
/// are erased. Returns nothing: [`check_written`] knows what to expect.
pub async fn write_history(store: &FileStore) {
    for cart in 0..40 {
        let events = (1..=12).map(|seq| event(cart, seq)).collect();
        store.append(&id(cart), 0, Fence::Claim("n1".into()), events).await.unwrap();
        if cart % 2 == 0 {
            let snapshot = Snapshot { version: 8, timestamp_ms: 8, state: state_at(cart, 8) };
            store.save_snapshot(&id(cart), snapshot).await.unwrap();
        }
    }
    for cart in 0..5 {
        assert!(store.erase(&id(cart)).await.unwrap());
    }
}

pub fn state_at(cart: usize, version: u64) -> Vec<u8> {
    format!("state of {cart} at {version}").into_bytes()
}

/// Every cart as [`write_history`] left it.
pub async fn check_written(store: &dyn EventStore) {
    for cart in 0..40 {
        let loaded = store.load(&id(cart)).await.unwrap();
        if cart < 5 {
            assert!(loaded.is_empty(), "cart {cart} was erased");
            continue;
        }
        assert_eq!(loaded.version(), 12, "cart {cart}");
        let first = if cart % 2 == 0 {
            assert_eq!(loaded.snapshot.as_ref().map(|s| s.state.clone()), Some(state_at(cart, 8)));
            9
        } else {
            assert_eq!(loaded.snapshot, None);
            1
        };
        let seqs: Vec<u64> = loaded.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (first..=12).collect::<Vec<_>>(), "cart {cart}");
        for e in &loaded.events {
            assert_eq!(e.payload, event(cart, e.seq).payload);
        }
    }
}

/// Whether any file in `dir` holds `needle`.
pub fn anywhere_on_disk(dir: &Path, needle: &[u8]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|f| {
            let bytes = std::fs::read(f.path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The log's files in `dir` (segments and compacted files), sorted.
pub fn logs_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let log = ["events", "segment-", "compacted-"].iter().any(|p| n.starts_with(p));
            log && n.ends_with(".log")
        })
        .collect();
    names.sort();
    names
}
