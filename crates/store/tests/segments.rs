//! The file store's log kept in segments, against real directories: the
//! active segment is sealed and the next begun as it fills, every open
//! reads them back (from a checkpoint or from the start), a second process
//! follows them (also past a compaction of segments it had not read), and
//! a segment lost or damaged is refused, never skipped.

mod history;

use std::path::Path;

use cart_store::{EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, StoreError};
use history::{check_written, event, id, logs_in, write_history};

/// A store sealing its segment every `segment_bytes`.
fn open_small(dir: &Path, segment_bytes: u64) -> FileStore {
    let mut options = FileStoreOptions::new(dir, FsyncPolicy::Always);
    options.auto_compaction = None;
    options.segment_bytes = segment_bytes;
    FileStore::open(options).unwrap()
}

fn try_open(dir: &Path) -> Result<FileStore, StoreError> {
    let mut options = FileStoreOptions::new(dir, FsyncPolicy::Always);
    options.auto_compaction = None;
    FileStore::open(options)
}

fn remove_checkpoints(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "checkpoint") {
            std::fs::remove_file(path).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_in_new_segments_and_every_open_reads_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path(), 2_000);
    write_history(&store).await;
    let segments = logs_in(dir.path());
    assert!(segments.len() > 10, "{segments:?}");
    assert_eq!(segments[0], "events.log");
    assert!(segments[1..].iter().all(|s| s.starts_with("segment-")), "{segments:?}");
    check_written(&store).await;
    drop(store);
    // From the checkpoint a clean close writes, then from the first byte.
    check_written(&open_small(dir.path(), 2_000)).await;
    remove_checkpoints(dir.path());
    let store = open_small(dir.path(), 2_000);
    check_written(&store).await;
    store.append(&id(7), 12, Fence::Epoch(1), vec![event(7, 13)]).await.unwrap();
    drop(store);
    assert_eq!(try_open(dir.path()).unwrap().load(&id(7)).await.unwrap().version(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_behind_a_compaction_of_segments_it_never_read_reads_the_log_anew() {
    let dir = tempfile::tempdir().unwrap();
    let a = open_small(dir.path(), 1_500);
    let b = open_small(dir.path(), 1_500);
    assert!(b.load(&id(1)).await.unwrap().is_empty());
    // `b` reads nothing while `a` writes many segments and compacts them.
    write_history(&a).await;
    a.compact().await.unwrap();
    assert_eq!(logs_in(dir.path()).len(), 2, "the segments `b` never read are gone");
    check_written(&b).await;
    b.append(&id(8), 12, Fence::Epoch(1), vec![event(8, 13)]).await.unwrap();
    assert_eq!(a.load(&id(8)).await.unwrap().version(), 13);
    // And `b` follows the next compaction by its note.
    a.append(&id(9), 12, Fence::Epoch(1), vec![event(9, 13)]).await.unwrap();
    assert_eq!(b.load(&id(9)).await.unwrap().version(), 13);
    a.compact().await.unwrap();
    b.append(&id(9), 13, Fence::Epoch(1), vec![event(9, 14)]).await.unwrap();
    assert_eq!(a.load(&id(9)).await.unwrap().version(), 14);
    assert_eq!(b.load(&id(8)).await.unwrap().version(), 13);
}

/// The names of the last two segments of a store closed after
/// [`write_history`] in segments of 1,500 bytes.
fn last_two(dir: &Path) -> (String, String) {
    let logs = logs_in(dir);
    let n = logs.len();
    assert!(n > 3, "{logs:?}");
    (logs[n - 2].clone(), logs[n - 1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_segment_is_refused_and_only_accepted_by_giving_up_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&open_small(dir.path(), 1_500)).await;
    let (_, last) = last_two(dir.path());
    std::fs::remove_file(dir.path().join(&last)).unwrap();
    remove_checkpoints(dir.path());
    let message = try_open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("acknowledged") && message.contains("HIGH_WATER"), "{message}");
    // Deleting the mark accepts the loss: the sealed segment before it is
    // whole, and the missing next one is begun again.
    std::fs::remove_file(dir.path().join(cart_store::file::HIGH_WATER_FILE)).unwrap();
    let store = try_open(dir.path()).unwrap();
    assert!(logs_in(dir.path()).contains(&last), "begun again");
    store.append("after", 0, Fence::Claim("n1".into()), vec![event(50, 1)]).await.unwrap();
    drop(store);
    assert_eq!(try_open(dir.path()).unwrap().load("after").await.unwrap().version(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_missing_in_the_middle_or_damaged_is_refused_even_without_a_mark() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&open_small(dir.path(), 1_500)).await;
    remove_checkpoints(dir.path());
    std::fs::remove_file(dir.path().join(cart_store::file::HIGH_WATER_FILE)).unwrap();
    let (sealed, _) = last_two(dir.path());
    let path = dir.path().join(&sealed);
    let whole = std::fs::read(&path).unwrap();
    // A flipped byte inside a sealed segment, with a segment after it.
    let mut damaged = whole.clone();
    damaged[whole.len() / 2] ^= 0x40;
    std::fs::write(&path, &damaged).unwrap();
    let message = try_open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("damaged") || message.contains("follows"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing was cut off");
    // The segment gone altogether.
    std::fs::remove_file(&path).unwrap();
    let message = try_open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("follows") && message.contains("backup"), "{message}");
    // Back in place, the store opens whole.
    std::fs::write(&path, &whole).unwrap();
    check_written(&try_open(dir.path()).unwrap()).await;
}
