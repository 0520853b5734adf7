//! A log written by the version before commands and events were split
//! (`fixtures/v1`, made by `fixtures/make-v1-log.sh` with that binary)
//! replays to exactly the carts that version answered.

use std::sync::Arc;

use cart_catalog::{FileCatalog, Markets, Resolver};
use cart_grain::{CartId, GrainRuntime, ManualClock, RuntimeOptions};
use cart_store::{EventStore, FileStore, FileStoreOptions, FsyncPolicy};

#[tokio::test]
async fn the_v1_fixture_log_replays_to_the_same_carts() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures.join("events.log"), dir.path().join("events.log")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("carts.json")).unwrap()).unwrap();
    let store =
        Arc::new(FileStore::open(FileStoreOptions::new(dir.path(), FsyncPolicy::Always)).unwrap());
    let resolver = Resolver::new(Arc::new(FileCatalog::sample().unwrap()), Markets::default());
    let mut kinds = std::collections::BTreeSet::new();
    for id in store.cart_ids().await.unwrap() {
        kinds.extend(store.load(&id).await.unwrap().events.iter().map(|e| e.kind));
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [2, 4, 5, 6, 7, 8, 9, 10, 11],
        "the fixture holds every stored event type"
    );
    let runtime = GrainRuntime::new(
        store,
        resolver,
        Arc::new(ManualClock::new(0)),
        RuntimeOptions::default(),
    );
    let carts = expected.as_object().unwrap();
    assert_eq!(carts.len(), 4);
    for (id, cart) in carts {
        let state = runtime.get(&CartId::parse(id).unwrap()).await.unwrap();
        let replayed: serde_json::Value = serde_json::from_slice(&state.to_json()).unwrap();
        assert_eq!(&replayed, cart, "cart {id}");
    }
}
