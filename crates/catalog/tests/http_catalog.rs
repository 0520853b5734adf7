//! The HTTP catalogue client against a real local HTTP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cart_catalog::{Catalog, CatalogError, HttpCatalog, HttpCatalogOptions};

async fn by_sku(State(hits): State<Arc<AtomicUsize>>, Path(sku): Path<String>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    match sku.as_str() {
        "1001" => axum::Json(serde_json::json!({
            "id": 1001, "sku": "1001", "title": "Keyboard", "values": {"4": 99900}
        }))
        .into_response(),
        "1002" => {
            // Slow enough that concurrent lookups overlap.
            tokio::time::sleep(Duration::from_millis(150)).await;
            axum::Json(serde_json::json!({
                "id": 1002, "sku": "1002", "title": "Mouse", "values": {"4": 19900}
            }))
            .into_response()
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        "malformed" => (StatusCode::OK, "{\"id\": \"not a number\"").into_response(),
        "broken" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app =
        axum::Router::new().route("/api/by-sku/{sku}", get(by_sku)).with_state(Arc::clone(&hits));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

fn client(base: &str) -> HttpCatalog {
    let mut options = HttpCatalogOptions::new(base);
    options.timeout = Duration::from_millis(300);
    HttpCatalog::new(options).unwrap()
}

#[tokio::test]
async fn found_items_are_cached() {
    let (base, hits) = serve().await;
    let c = client(&base);
    assert_eq!(c.lookup("1001").await.unwrap().title, "Keyboard");
    assert_eq!(c.lookup("1001").await.unwrap().title, "Keyboard");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_sku_is_unknown() {
    let (base, _) = serve().await;
    assert!(
        matches!(client(&base).lookup("4040").await, Err(CatalogError::UnknownSku(s)) if s == "4040")
    );
}

#[tokio::test]
async fn a_slow_catalogue_times_out_quickly() {
    let (base, _) = serve().await;
    let started = std::time::Instant::now();
    let result = client(&base).lookup("slow").await;
    assert!(matches!(result, Err(CatalogError::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn malformed_json_is_a_bad_response() {
    let (base, _) = serve().await;
    assert!(matches!(client(&base).lookup("malformed").await, Err(CatalogError::BadResponse(_))));
}

#[tokio::test]
async fn server_errors_and_a_down_catalogue_are_unavailable() {
    let (base, hits) = serve().await;
    let c = client(&base);
    assert!(matches!(c.lookup("broken").await, Err(CatalogError::Unavailable(_))));
    assert!(matches!(c.lookup("broken").await, Err(CatalogError::Unavailable(_))));
    assert_eq!(hits.load(Ordering::SeqCst), 2, "failures are not cached");
    // Nothing listens on port 9 of localhost.
    let down = client("http://127.0.0.1:9");
    assert!(matches!(down.lookup("1001").await, Err(CatalogError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_sku_share_one_lookup() {
    let (base, hits) = serve().await;
    let c = Arc::new(client(&base));
    let lookups: Vec<_> = (0..20)
        .map(|_| {
            let c = Arc::clone(&c);
            tokio::spawn(async move { c.lookup("1002").await.map(|i| i.title.clone()) })
        })
        .collect();
    for l in lookups {
        assert_eq!(l.await.unwrap().unwrap(), "Mouse");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one lookup for twenty concurrent misses");
}
