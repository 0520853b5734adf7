//! The file store against a real directory: conditional appends, group
//! commit, reopen, torn and corrupt records, and the directory lock.

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use cart_store::{
    Claim, EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, IdempotencyTag, NewEvent,
    StoreError,
};

/// Appends as the owner "n1", claiming the cart with the first append.
async fn put(
    store: &FileStore,
    cart: &str,
    expected: u64,
    events: Vec<NewEvent>,
) -> Result<u64, StoreError> {
    let fence = match store.claim_of(cart).await? {
        Some(Claim { epoch, owner }) if owner == "n1" => Fence::Epoch(epoch),
        _ => Fence::Claim("n1".into()),
    };
    Ok(store.append(cart, expected, fence, events).await?.version)
}

fn open(dir: &std::path::Path) -> Result<FileStore, StoreError> {
    FileStore::open(FileStoreOptions::new(dir, FsyncPolicy::Always))
}

fn event(n: u8) -> NewEvent {
    NewEvent {
        kind: 2,
        timestamp_ms: i64::from(n),
        payload: vec![n; usize::from(n)],
        idempotency: None,
    }
}

fn log_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(cart_store::file::LOG_FILE)
}

#[tokio::test]
async fn appends_load_back_in_order_with_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    assert!(store.load("a").await.unwrap().events.is_empty());
    assert_eq!(put(&store, "a", 0, vec![event(1), event(2)]).await.unwrap(), 2);
    assert_eq!(put(&store, "b", 0, vec![event(9)]).await.unwrap(), 1);
    assert_eq!(put(&store, "a", 2, vec![event(3)]).await.unwrap(), 3);
    let a = store.load("a").await.unwrap().events;
    assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(a.iter().map(|e| e.timestamp_ms).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(a[2].payload, vec![3, 3, 3]);
    let mut ids = store.cart_ids().await.unwrap();
    ids.sort();
    assert_eq!(ids, vec!["a", "b"]);
}

#[tokio::test]
async fn a_writer_that_is_behind_gets_a_conflict_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    put(&store, "a", 0, vec![event(1)]).await.unwrap();
    let err = put(&store, "a", 0, vec![event(2)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 0, actual: 1 }), "{err:?}");
    let err = put(&store, "a", 5, vec![event(2)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 5, actual: 1 }), "{err:?}");
    assert_eq!(store.load("a").await.unwrap().events.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_to_many_carts_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for cart in 0..64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for v in 0..20u64 {
                put(&store, &format!("cart-{cart}"), v, vec![event(1)]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(store);
    let reopened = open(dir.path()).unwrap();
    for cart in 0..64 {
        assert_eq!(reopened.load(&format!("cart-{cart}")).await.unwrap().events.len(), 20);
    }
}

/// Reads run while commits are being written and synced: every load must
/// be a whole prefix of the cart's log (sequence 1..=n, each event the one
/// appended at that position), never a batch indexed twice or half.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loads_during_commits_see_whole_prefixes_of_each_log() {
    const CARTS: usize = 8;
    const EVENTS: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()).unwrap());
    let writers: Vec<_> = (0..CARTS)
        .map(|cart| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for v in 0..EVENTS {
                    let n = (v % 200) as u8 + 1;
                    put(&store, &format!("p{cart}"), v, vec![event(n)]).await.unwrap();
                }
            })
        })
        .collect();
    let mut loads = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        for cart in 0..CARTS {
            let events = store.load(&format!("p{cart}")).await.unwrap().events;
            for (i, e) in events.iter().enumerate() {
                let n = (i as u64 % 200) as u8 + 1;
                assert_eq!(e.seq, i as u64 + 1, "cart p{cart}: gap or duplicate at {i}");
                assert_eq!(e.payload, vec![n; usize::from(n)], "cart p{cart} event {}", e.seq);
            }
            loads += 1;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(loads > CARTS, "the loads did not overlap the commits");
    for cart in 0..CARTS {
        assert_eq!(store.load(&format!("p{cart}")).await.unwrap().events.len() as u64, EVENTS);
    }
}

#[tokio::test]
async fn idempotency_tags_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tag = IdempotencyTag { key: "key-1".into(), fingerprint: 0xfeed };
    {
        let store = open(dir.path()).unwrap();
        let mut e = event(4);
        e.idempotency = Some(tag.clone());
        put(&store, "a", 0, vec![event(3), e]).await.unwrap();
    }
    let store = open(dir.path()).unwrap();
    let events = store.load("a").await.unwrap().events;
    assert_eq!(events[0].idempotency, None);
    assert_eq!(events[1].idempotency, Some(tag));
}

#[tokio::test]
async fn two_writers_on_one_directory_see_and_fence_each_other() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores on one directory behave as two processes would: each has
    // its own lock and index and catches up with the other's appends.
    let a = open(dir.path()).unwrap();
    let b = open(dir.path()).unwrap();
    let first = a.append("c", 0, Fence::Claim("a".into()), vec![event(1)]).await.unwrap();
    assert_eq!((first.version, first.epoch), (1, 1));
    assert_eq!(b.load("c").await.unwrap().events.len(), 1, "b sees a's append");
    assert_eq!(b.claim_of("c").await.unwrap(), Some(Claim { epoch: 1, owner: "a".into() }));
    // b takes the cart over: its claim fences a.
    let taken = b.append("c", 1, Fence::Claim("b".into()), vec![event(2)]).await.unwrap();
    assert_eq!((taken.version, taken.epoch), (2, 2));
    let err = a.append("c", 2, Fence::Epoch(1), vec![event(3)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { held: 1, current: 2 }), "{err:?}");
    // A writer that is behind gets a conflict even with the right epoch.
    let err = b.append("c", 1, Fence::Epoch(2), vec![event(3)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 1, actual: 2 }), "{err:?}");
    assert_eq!(b.append("c", 2, Fence::Epoch(2), vec![event(3)]).await.unwrap().version, 3);
    let seqs: Vec<u64> = a.load("c").await.unwrap().events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

async fn write_two_carts(dir: &std::path::Path) -> u64 {
    let store = open(dir).unwrap();
    put(&store, "a", 0, vec![event(10)]).await.unwrap();
    put(&store, "b", 0, vec![event(20)]).await.unwrap();
    drop(store);
    std::fs::metadata(log_path(dir)).unwrap().len()
}

/// Forgets the high-water mark, as after a crash before the mark caught up
/// with the last batch (or a store from before the mark).
fn forget_mark(dir: &std::path::Path) {
    std::fs::remove_file(dir.join(cart_store::file::HIGH_WATER_FILE)).unwrap();
}

fn cut_to(dir: &std::path::Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(log_path(dir)).unwrap();
    f.set_len(len).unwrap();
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_the_store_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_two_carts(dir.path()).await;
    // Cut the last record in half, as a crash mid-write would (before it
    // was acknowledged, so before the mark covered it).
    cut_to(dir.path(), full - 7);
    forget_mark(dir.path());
    let store = open(dir.path()).unwrap();
    assert_eq!(store.load("a").await.unwrap().events.len(), 1);
    assert!(store.load("b").await.unwrap().events.is_empty(), "the torn record is gone");
    assert_eq!(put(&store, "b", 0, vec![event(21)]).await.unwrap(), 1);
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.load("b").await.unwrap().events[0].payload, vec![21; 21]);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_two_carts(dir.path()).await;
    let mut f = std::fs::OpenOptions::new().append(true).open(log_path(dir.path())).unwrap();
    f.write_all(&[0u8; 100]).unwrap();
    drop(f);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.load("b").await.unwrap().events.len(), 1);
    drop(store);
    assert_eq!(std::fs::metadata(log_path(dir.path())).unwrap().len(), full);
}

#[tokio::test]
async fn an_unacknowledged_corrupt_last_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_two_carts(dir.path()).await;
    flip_byte(dir.path(), full - 3);
    forget_mark(dir.path());
    let store = open(dir.path()).unwrap();
    assert_eq!(store.load("a").await.unwrap().events.len(), 1);
    assert!(store.load("b").await.unwrap().events.is_empty());
}

/// Damage in the last, complete, acknowledged record is damage, not a torn
/// tail: the store refuses, keeps the log as it is and copies the damaged
/// bytes aside; deleting the mark accepts the loss.
#[tokio::test]
async fn a_damaged_acknowledged_last_record_refuses_to_open_and_is_kept_aside() {
    for damage in ["flip", "cut"] {
        let dir = tempfile::tempdir().unwrap();
        let full = write_two_carts(dir.path()).await;
        let original = std::fs::read(log_path(dir.path())).unwrap();
        match damage {
            "flip" => flip_byte(dir.path(), full - 3),
            _ => cut_to(dir.path(), full - 7),
        }
        let damaged = std::fs::read(log_path(dir.path())).unwrap();
        let msg = match open(dir.path()) {
            Err(StoreError::Corrupt(msg)) => msg,
            Err(other) => panic!("{damage}: expected corruption, got {other:?}"),
            Ok(_) => panic!("{damage}: opened a log that lost an acknowledged record"),
        };
        assert!(msg.contains("acknowledged") && msg.contains("HIGH_WATER"), "{msg}");
        assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), damaged, "the log is untouched");
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("events.log.damaged-at-"))
            .collect();
        assert_eq!(aside.len(), 1, "{damage}: one side file");
        let offset: usize =
            aside[0].file_name().to_string_lossy().rsplit('-').next().unwrap().parse().unwrap();
        assert!(msg.contains(&offset.to_string()), "{msg}");
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), damaged[offset..]);
        assert!(offset < original.len());
        forget_mark(dir.path());
        let store = open(dir.path()).unwrap();
        assert_eq!(store.load("a").await.unwrap().events.len(), 1, "{damage}: the loss accepted");
        assert!(store.load("b").await.unwrap().events.is_empty());
    }
}

/// A log that is emptied, deleted or replaced by an older copy would open
/// as a store that never had those carts: refused, with what to do.
#[tokio::test]
async fn a_log_shorter_than_what_was_acknowledged_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write_two_carts(dir.path()).await;
    let older = std::fs::read(log_path(dir.path())).unwrap();
    {
        let store = open(dir.path()).unwrap();
        put(&store, "c", 0, vec![event(30)]).await.unwrap();
    }
    let refused = |what: &str| match open(dir.path()) {
        Err(StoreError::Corrupt(msg)) => {
            assert!(msg.contains("acknowledged") && msg.contains("Restore"), "{what}: {msg}");
        }
        Err(other) => panic!("{what}: expected corruption, got {other:?}"),
        Ok(_) => panic!("{what}: opened"),
    };
    std::fs::write(log_path(dir.path()), &older).unwrap();
    refused("an older copy");
    std::fs::write(log_path(dir.path()), b"").unwrap();
    refused("emptied");
    std::fs::remove_file(log_path(dir.path())).unwrap();
    refused("deleted");
    forget_mark(dir.path());
    let store = open(dir.path()).unwrap();
    assert!(
        store.load("a").await.unwrap().events.is_empty(),
        "the loss accepted: a new, empty store"
    );
}

#[tokio::test]
async fn a_corrupt_record_followed_by_valid_ones_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write_two_carts(dir.path()).await;
    // Damage the payload of the first record; the second is still valid.
    flip_byte(dir.path(), 30);
    match open(dir.path()) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("valid record follows"), "{msg}"),
        Err(other) => panic!("expected corruption, got {other:?}"),
        Ok(_) => panic!("opened a log with damage in the middle"),
    }
}

fn flip_byte(dir: &std::path::Path, at: u64) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(log_path(dir)).unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x55]).unwrap();
}

#[tokio::test]
async fn batch_and_never_policies_still_persist_after_flush() {
    for policy in [FsyncPolicy::Batch(std::time::Duration::from_millis(2)), FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStore::open(FileStoreOptions::new(dir.path(), policy)).unwrap();
            put(&store, "a", 0, vec![event(1)]).await.unwrap();
            store.flush().await.unwrap();
        }
        let store = open(dir.path()).unwrap();
        assert_eq!(store.load("a").await.unwrap().events.len(), 1, "{policy:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_never_mistakes_another_writers_batch_in_progress_for_damage() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Arc::new(open(dir.path()).unwrap());
    let reader = open(dir.path()).unwrap();
    let writing = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move {
            let mut tasks = Vec::new();
            for c in 0..32 {
                let writer = Arc::clone(&writer);
                tasks.push(tokio::spawn(async move {
                    let cart = format!("w{c}");
                    let first = writer
                        .append(&cart, 0, Fence::Claim("w".into()), vec![event(200)])
                        .await
                        .unwrap();
                    for v in 1..150u64 {
                        writer
                            .append(
                                &cart,
                                v,
                                Fence::Epoch(first.epoch),
                                vec![event(200), event(150)],
                            )
                            .await
                            .map(|_| ())
                            .unwrap_or(());
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    });
    // Read continuously while the other store writes large batches.
    while !writing.is_finished() {
        for c in 0..32 {
            reader.load(&format!("w{c}")).await.unwrap();
        }
    }
    writing.await.unwrap();
}

#[tokio::test]
async fn an_unlocked_reader_stops_at_a_bad_record_and_the_lock_holder_decides() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_two_carts(dir.path()).await;
    let reader = open(dir.path()).unwrap();
    // Bytes that do not check out (from the middle of a record), then whole
    // records: what a reader may see while another process is writing.
    let original = std::fs::read(log_path(dir.path())).unwrap();
    assert_eq!(original.len() as u64, full);
    let (first_half, second_half) = original.split_at(original.len() / 2);
    let mut f = std::fs::OpenOptions::new().append(true).open(log_path(dir.path())).unwrap();
    f.write_all(second_half).unwrap();
    f.write_all(first_half).unwrap();
    drop(f);
    // The reader without the lock cannot tell damage from a write in
    // progress: it serves what it has and does not fail.
    assert_eq!(reader.load("a").await.unwrap().events.len(), 1);
    // A process taking the lock sees a bad record followed by a valid one.
    assert!(matches!(open(dir.path()), Err(StoreError::Corrupt(_))));
}

fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(log_path(dir)).unwrap().len()
}

/// A copy of the log as a crash would leave it: taken while the store is
/// open, so with its preallocated zeroed tail.
fn crash_copy(from: &std::path::Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(log_path(from), log_path(copy.path())).unwrap();
    copy
}

/// A store in `dir` with carts "a" and "b", and a crash copy of its log.
async fn two_carts_and_a_crash_copy(dir: &std::path::Path) -> (FileStore, tempfile::TempDir) {
    let store = open(dir).unwrap();
    put(&store, "a", 0, vec![event(10)]).await.unwrap();
    put(&store, "b", 0, vec![event(20)]).await.unwrap();
    let crashed = crash_copy(dir);
    (store, crashed)
}

#[tokio::test]
async fn the_log_grows_in_preallocated_steps_and_a_clean_close_trims_them() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_two_carts(dir.path()).await;
    let store = open(dir.path()).unwrap();
    put(&store, "c", 0, vec![event(30)]).await.unwrap();
    let open_len = file_len(dir.path());
    assert!(open_len >= full + cart_store::file::PREALLOCATE_BYTES, "{open_len} bytes while open");
    // A second process sees the new record through the zeroed tail.
    let other = open(dir.path()).unwrap();
    assert_eq!(other.load("c").await.unwrap().events[0].payload, vec![30; 30]);
    drop(other);
    drop(store);
    let closed_len = file_len(dir.path());
    assert!(closed_len > full && closed_len < full + 200, "{closed_len} bytes after close");
}

#[tokio::test]
async fn after_a_crash_the_zeroed_tail_is_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, crashed) = two_carts_and_a_crash_copy(dir.path()).await;
    assert!(file_len(crashed.path()) > cart_store::file::PREALLOCATE_BYTES);
    let reopened = open(crashed.path()).unwrap();
    assert_eq!(reopened.load("a").await.unwrap().events.len(), 1);
    assert_eq!(put(&reopened, "b", 1, vec![event(21)]).await.unwrap(), 2);
    drop(reopened);
    let reopened = open(crashed.path()).unwrap();
    let b = reopened.load("b").await.unwrap().events;
    assert_eq!(b.iter().map(|e| e.payload[0]).collect::<Vec<_>>(), vec![20, 21]);
}

#[tokio::test]
async fn a_torn_record_inside_the_zeroed_tail_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, crashed) = two_carts_and_a_crash_copy(dir.path()).await;
    drop(store);
    // The start of a record (header and part of its body) right after the
    // last one: a batch cut short by the crash, inside the preallocated space.
    let logical = file_len(dir.path());
    let bytes = std::fs::read(log_path(dir.path())).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(log_path(crashed.path())).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes[..20], logical).unwrap();
    drop(f);
    let reopened = open(crashed.path()).unwrap();
    assert_eq!(reopened.load("a").await.unwrap().events.len(), 1);
    assert_eq!(reopened.load("b").await.unwrap().events.len(), 1);
    assert_eq!(put(&reopened, "c", 0, vec![event(5)]).await.unwrap(), 1);
}

#[tokio::test]
async fn zeroed_bytes_followed_by_valid_records_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write_two_carts(dir.path()).await;
    // A zeroed block where the first records were: damage, not free space.
    let f = std::fs::OpenOptions::new().write(true).open(log_path(dir.path())).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 20], 0).unwrap();
    drop(f);
    match open(dir.path()) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("valid record follows"), "{msg}"),
        Err(other) => panic!("expected corruption, got {other:?}"),
        Ok(_) => panic!("opened a log whose first records were zeroed"),
    }
}
