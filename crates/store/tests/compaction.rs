//! Compaction of the file store against real directories and processes:
//! what it keeps and drops, appends while it runs, another process
//! following it, and a process killed at every step of it.

mod history;

use std::path::Path;
use std::sync::Arc;

use cart_store::file::{CRASH_AT_ENV, CRASH_POINTS, LOG_FILE};
use cart_store::{EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, Loaded, Snapshot};
use history::{anywhere_on_disk, check_written, event, id, logs_in, open, write_history};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_cart_and_leaves_erased_ones_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write_history(&store).await;
    let erased = id(3);
    assert!(!anywhere_on_disk(dir.path(), erased.as_bytes()).is_empty(), "before compaction");
    let report = store.compact().await.unwrap();
    assert_eq!(report.carts, 35);
    // A third of the records go; each kept one carries 12 bytes of its
    // offset and checksum, a fifth of these small records.
    assert!(report.bytes_after * 4 < report.bytes_before * 3, "{report:?}");
    check_written(&store).await;
    assert_eq!(anywhere_on_disk(dir.path(), erased.as_bytes()), Vec::<String>::new());
    assert_eq!(
        anywhere_on_disk(dir.path(), b"payload of 3 at 7"),
        Vec::<String>::new(),
        "nor its contents"
    );
    let first = compacted_and_active(dir.path());
    // Appends go on in the new segment, and survive a reopen.
    store.append(&id(7), 12, Fence::Epoch(1), vec![event(7, 13)]).await.unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.load(&id(7)).await.unwrap().version(), 13);
    // A second compaction moves on again.
    store.compact().await.unwrap();
    let second = compacted_and_active(dir.path());
    assert!(second > first, "{second:?} after {first:?}");
    assert_eq!(store.load(&id(7)).await.unwrap().version(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_process_follows_a_compaction_and_appends_never_stop() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(open(dir.path()));
    let b = Arc::new(open(dir.path()));
    write_history(&a).await;
    // Writers on both handles while `a` compacts three times.
    let mut writers = Vec::new();
    for (w, store) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        writers.push(tokio::spawn(async move {
            let cart = format!("busy-{w}");
            let mut version = 0;
            let mut fence = Fence::Claim(format!("w{w}"));
            for seq in 1..=150u64 {
                let appended = store.append(&cart, version, fence, vec![event(w, seq)]).await;
                let appended = appended.unwrap();
                version = appended.version;
                fence = Fence::Epoch(appended.epoch);
            }
            (cart, version)
        }));
    }
    for _ in 0..3 {
        a.compact().await.unwrap();
    }
    for writer in writers {
        let (cart, version) = writer.await.unwrap();
        assert_eq!(version, 150);
        for store in [&a, &b] {
            let loaded = store.load(&cart).await.unwrap();
            let seqs: Vec<u64> = loaded.events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=150).collect::<Vec<_>>(), "{cart}: every acknowledged append");
        }
    }
    check_written(&*b).await;
    // `b` writes to the generation `a` made; `a` sees it.
    b.append(&id(9), 12, Fence::Epoch(1), vec![event(9, 13)]).await.unwrap();
    assert_eq!(a.load(&id(9)).await.unwrap().version(), 13);
    drop((a, b));
    compacted_and_active(dir.path());
}

/// The log's files after a compaction: one compacted file and the active
/// segment right after it; returns their names.
fn compacted_and_active(dir: &Path) -> Vec<String> {
    let logs = logs_in(dir);
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs[0].starts_with("compacted-") && logs[1].starts_with("segment-"), "{logs:?}");
    let end = |name: &str, prefix: &str| name.strip_prefix(prefix).map(|n| n.to_owned());
    assert_eq!(end(&logs[0], "compacted-"), end(&logs[1], "segment-"), "contiguous");
    logs
}

/// Run by [`a_compaction_killed_at_any_step_loses_nothing`] in a child
/// process: writes the history, then compacts with the crash point set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by a_compaction_killed_at_any_step_loses_nothing"]
async fn compaction_child() {
    let dir = std::env::var("CART_COMPACTION_CHILD_DIR").unwrap();
    let store = open(Path::new(&dir));
    write_history(&store).await;
    store.compact().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_killed_at_any_step_loses_nothing() {
    for step in CRASH_POINTS {
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "compaction_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CART_COMPACTION_CHILD_DIR", dir.path())
            .env(CRASH_AT_ENV, step)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(!child.status.success(), "{step}: the child was killed");
        assert!(
            stderr.contains(&format!("crashing at compaction step {step}")),
            "{step}: {stderr}"
        );
        let store = open(dir.path());
        check_written(&store).await;
        let logs = logs_in(dir.path());
        let compacted = ["renamed", "marked", "removed"].contains(step);
        let files: Vec<&str> = logs.iter().map(|n| n.split('-').next().unwrap_or(n)).collect();
        if compacted {
            assert_eq!(files, ["compacted", "segment"], "{step}: {logs:?}");
        } else {
            assert_eq!(logs[0], LOG_FILE, "{step}: the segments stand: {logs:?}");
            assert!(!files.contains(&"compacted"), "{step}: {logs:?}");
        }
        // The next compaction completes, and the erased carts are gone.
        store.compact().await.unwrap();
        check_written(&store).await;
        compacted_and_active(dir.path());
        assert_eq!(anywhere_on_disk(dir.path(), id(2).as_bytes()), Vec::<String>::new(), "{step}");
        store.append(&id(10), 12, Fence::Epoch(1), vec![event(10, 13)]).await.unwrap();
        drop(store);
        assert_eq!(open(dir.path()).load(&id(10)).await.unwrap().version(), 13, "{step}");
    }
}

#[tokio::test]
async fn a_missing_compacted_log_is_refused_not_replaced_by_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write_history(&store).await;
    store.compact().await.unwrap();
    drop(store);
    let compacted = logs_in(dir.path()).remove(0);
    std::fs::remove_file(dir.path().join(&compacted)).unwrap();
    let refused = FileStore::open(FileStoreOptions::new(dir.path(), FsyncPolicy::Always));
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("missing") && message.contains("backup"), "{message}");
    assert_eq!(logs_in(dir.path()).len(), 1, "nothing made up in its place");
}

#[tokio::test]
async fn the_store_compacts_by_itself_once_the_log_has_grown() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = FileStoreOptions::new(dir.path(), FsyncPolicy::Never);
    options.auto_compaction = Some(cart_store::AutoCompaction {
        min_bytes: 64 << 10,
        growth: 2,
        check_every: std::time::Duration::from_millis(20),
    });
    let store = FileStore::open(options).unwrap();
    let mut version = 0;
    let mut fence = Fence::Claim("n1".into());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while logs_in(dir.path()).contains(&LOG_FILE.to_owned()) {
        assert!(std::time::Instant::now() < deadline, "no compaction by itself");
        let events = (0..50).map(|i| event(1, version + i + 1)).collect();
        let appended = store.append("grows", version, fence, events).await.unwrap();
        version = appended.version;
        fence = Fence::Epoch(appended.epoch);
        let snapshot = Snapshot { version, timestamp_ms: 0, state: vec![1; 10] };
        store.save_snapshot("grows", snapshot).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let loaded: Loaded = store.load("grows").await.unwrap();
    assert_eq!(loaded.version(), version);
    assert_eq!(
        loaded.snapshot.map(|s| s.version),
        Some(version),
        "the compacted log holds the snapshot"
    );
}
