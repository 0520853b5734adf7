//! Index checkpoints of the file store against real directories: a reopened
//! store reads its checkpoint and only the log after it, and a checkpoint
//! that is damaged, stale or for another log is never trusted.

mod history;

use std::path::{Path, PathBuf};

use cart_store::{EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, StoreError};
use history::{check_written, event, id, open, write_history};

fn checkpoint(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("index-{generation}.checkpoint"))
}

/// A store that never checkpoints: what it appends is after the checkpoint
/// an earlier store left, as if the process had been killed.
fn open_without_checkpoints(dir: &Path) -> FileStore {
    let mut options = FileStoreOptions::new(dir, FsyncPolicy::Always);
    options.auto_compaction = None;
    options.checkpoint_every = None;
    FileStore::open(options).unwrap()
}

/// Appends events 13 and 14 to carts 5..10 and erases cart 6.
async fn write_after_checkpoint(store: &FileStore) {
    for cart in 5..10 {
        let events = vec![event(cart, 13), event(cart, 14)];
        store.append(&id(cart), 12, Fence::Epoch(1), events).await.unwrap();
    }
    assert!(store.erase(&id(6)).await.unwrap());
}

async fn check_after_checkpoint(store: &FileStore) {
    for cart in 5..10 {
        let loaded = store.load(&id(cart)).await.unwrap();
        if cart == 6 {
            assert!(loaded.is_empty(), "cart 6 was erased after the checkpoint");
        } else {
            assert_eq!(loaded.version(), 14, "cart {cart}");
            assert_eq!(
                loaded.events.last().map(|e| e.payload.clone()),
                Some(event(cart, 14).payload)
            );
        }
    }
    for cart in 10..40 {
        assert_eq!(store.load(&id(cart)).await.unwrap().version(), 12, "cart {cart}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_has_every_cart_from_its_checkpoint_and_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&open(dir.path())).await;
    assert!(checkpoint(dir.path(), 0).is_file(), "a closing store checkpoints its index");

    let store = open_without_checkpoints(dir.path());
    check_written(&store).await;
    write_after_checkpoint(&store).await;
    drop(store);

    let store = open(dir.path());
    check_after_checkpoint(&store).await;
    // The new checkpoint (written at close) holds the erasure too.
    drop(store);
    let store = open(dir.path());
    check_after_checkpoint(&store).await;
    assert_eq!(store.cart_ids().await.unwrap().len(), 34);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_with_a_checkpoint_reads_only_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&open(dir.path())).await;
    // Damage a record of cart 11 (no snapshot) deep in the history (far before the
    // checkpoint's fingerprint span): an open that scanned the whole log
    // would refuse it.
    let log = dir.path().join("events.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let needle = b"payload of 11 at 3";
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    assert!(at + 4096 < bytes.len());
    bytes[at] ^= 0x20;
    std::fs::write(&log, &bytes).unwrap();

    let store = open(dir.path());
    // The damage is still found, and said, when the cart is read.
    assert!(matches!(store.load(&id(11)).await, Err(StoreError::Corrupt(_))));
    assert_eq!(store.load(&id(13)).await.unwrap().version(), 12);
    drop(store);

    std::fs::remove_file(checkpoint(dir.path(), 0)).unwrap();
    let mut options = FileStoreOptions::new(dir.path(), FsyncPolicy::Always);
    options.checkpoint_every = None;
    assert!(
        matches!(FileStore::open(options), Err(StoreError::Corrupt(_))),
        "without the checkpoint the whole log is scanned and the damage refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_is_ignored_and_the_log_scanned() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&open(dir.path())).await;
    let path = checkpoint(dir.path(), 0);
    let good = std::fs::read(&path).unwrap();
    for at in [0, 9, 20, 40, good.len() / 2, good.len() - 1] {
        let mut damaged = good.clone();
        damaged[at] ^= 0x01;
        std::fs::write(&path, &damaged).unwrap();
        check_written(&open_without_checkpoints(dir.path())).await;
    }
    for cut in [0, 7, good.len() / 3, good.len() - 4] {
        std::fs::write(&path, &good[..cut]).unwrap();
        check_written(&open_without_checkpoints(dir.path())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_log_is_never_trusted() {
    // Two stores with the same carts but different histories: the
    // checkpoint of one, put beside the other's log, must not be used.
    let a = tempfile::tempdir().unwrap();
    write_history(&open(a.path())).await;
    let b = tempfile::tempdir().unwrap();
    let store = open_without_checkpoints(b.path());
    write_history(&store).await;
    write_after_checkpoint(&store).await;
    drop(store);
    std::fs::copy(checkpoint(a.path(), 0), checkpoint(b.path(), 0)).unwrap();
    check_after_checkpoint(&open(b.path())).await;

    // Nor one for a log that is now shorter (restored from an older copy).
    let c = tempfile::tempdir().unwrap();
    std::fs::copy(a.path().join("events.log"), c.path().join("events.log")).unwrap();
    std::fs::copy(checkpoint(b.path(), 0), checkpoint(c.path(), 0)).unwrap();
    check_written(&open(c.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_replaces_the_checkpoint_of_the_generation_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write_history(&store).await;
    drop(store);
    assert!(checkpoint(dir.path(), 0).is_file());
    let store = open(dir.path());
    store.compact().await.unwrap();
    assert!(!checkpoint(dir.path(), 0).exists(), "the old generation's checkpoint is gone");
    let checkpoints: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".checkpoint"))
        .collect();
    let compacted = history::logs_in(dir.path()).remove(0);
    let generation: u64 = compacted["compacted-".len()..compacted.len() - 4].parse().unwrap();
    assert_eq!(checkpoints, [format!("index-{generation}.checkpoint")], "a compaction checkpoints");
    store.append(&id(7), 12, Fence::Epoch(1), vec![event(7, 13)]).await.unwrap();
    drop(store);
    let store = open_without_checkpoints(dir.path());
    assert_eq!(store.load(&id(7)).await.unwrap().version(), 13);
    assert_eq!(store.cart_ids().await.unwrap().len(), 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_store_checkpoints_as_its_log_grows() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = FileStoreOptions::new(dir.path(), FsyncPolicy::Always);
    options.auto_compaction = Some(cart_store::AutoCompaction {
        min_bytes: u64::MAX,
        growth: 2,
        check_every: std::time::Duration::from_millis(20),
    });
    options.checkpoint_every = Some(1);
    let store = FileStore::open(options).unwrap();
    write_history(&store).await;
    let path = checkpoint(dir.path(), 0);
    // How far the checkpoint reaches: bytes 16..24 of it.
    let reaches = || {
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes.get(16..24).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for("no checkpoint while running", &|| reaches() > 0);
    let first = reaches();
    // The next is due once the log has grown by four times the
    // checkpoint's size too (a few KiB here).
    let size = std::fs::metadata(&path).unwrap().len();
    let events = (13..13 + 4 * size / 40).map(|seq| event(7, seq)).collect();
    store.append(&id(7), 12, Fence::Epoch(1), events).await.unwrap();
    wait_for("the checkpoint does not follow the log", &|| reaches() > first);
    assert!(reaches() <= std::fs::metadata(dir.path().join("events.log")).unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_changed_nothing_does_not_rewrite_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&open(dir.path())).await;
    let path = checkpoint(dir.path(), 0);
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();
    let store = open(dir.path());
    check_written(&store).await;
    drop(store);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), written);
    // After an append it does.
    let store = open(dir.path());
    store.append(&id(7), 12, Fence::Epoch(1), vec![event(7, 13)]).await.unwrap();
    drop(store);
    assert_ne!(std::fs::metadata(&path).unwrap().modified().unwrap(), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_abandoned_halfway_is_removed_at_open() {
    // A process killed while writing a checkpoint leaves its temporary file,
    // which may name carts erased since: the next open removes it once it
    // is clearly abandoned, and leaves one that may still be being written.
    let dir = tempfile::tempdir().unwrap();
    write_history(&open(dir.path())).await;
    let abandoned = dir.path().join("index-0.checkpoint.4242.tmp");
    let fresh = dir.path().join("index-0.checkpoint.4343.tmp");
    for path in [&abandoned, &fresh] {
        std::fs::write(path, format!("{} and more", id(3))).unwrap();
    }
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&abandoned)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    check_written(&open(dir.path())).await;
    assert!(!abandoned.exists());
    assert!(fresh.exists());
}
