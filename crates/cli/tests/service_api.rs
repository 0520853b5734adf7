//! The service face (carts by id) against a real server process.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{SKU_A, SKU_B, SKU_C, Server, client};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &Server, cart: &str) -> Api {
        Api { http: client(), base: format!("{}/api/carts/{cart}", server.internal_url) }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }
}

async fn ok(r: reqwest::Response) -> (u64, Value) {
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().trim_matches('"').parse().unwrap();
    (etag, r.json().await.unwrap())
}

#[tokio::test]
async fn every_route_and_etags() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server, "order-42");

    assert_eq!(api.req(Method::GET, "").send().await.unwrap().status(), 404);
    let (v, cart) = ok(api
        .req(Method::POST, "/items")
        .json(&json!({"sku": SKU_A, "quantity": 2}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!((v, cart["id"].as_str().unwrap()), (1, "order-42"));

    // Replace all lines: SKU_A stays line 1, SKU_B and SKU_C are new.
    let (v, cart) = ok(api
        .req(Method::PUT, "/items")
        .json(&json!({"items": [{"sku": SKU_A, "quantity": 1}, {"sku": SKU_B, "quantity": 3}, {"sku": SKU_C, "quantity": 1}]}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(v, 2);
    let lines: Vec<(i64, i64)> = cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["id"].as_i64().unwrap(), l["qty"].as_i64().unwrap()))
        .collect();
    assert_eq!(lines, vec![(1, 1), (2, 3), (3, 1)]);

    let (_, cart) =
        ok(api.req(Method::PATCH, "/items/2").json(&json!({"quantity": 7})).send().await.unwrap())
            .await;
    assert_eq!(cart["items"][1]["qty"], 7);
    let (_, cart) = ok(api.req(Method::DELETE, "/items/3").send().await.unwrap()).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 2);

    let (_, cart) = ok(api
        .req(Method::POST, "/deliveries")
        .json(&json!({"provider": "budbee", "items": [1, 2], "price": 5900, "pickupPoint": {"id": "box-1"}}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(cart["deliveries"][0]["pickupPoint"]["id"], "box-1");
    let (_, cart) = ok(api
        .req(Method::PUT, "/deliveries/1/pickup-point")
        .json(&json!({"id": "box-2", "city": "Malmö"}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(cart["deliveries"][0]["pickupPoint"]["city"], "Malmö");
    let (v, cart) = ok(api.req(Method::DELETE, "/deliveries/1").send().await.unwrap()).await;
    assert_eq!(cart["deliveries"], json!([]));

    let (etag, read) = ok(api.req(Method::GET, "").send().await.unwrap()).await;
    assert_eq!(etag, v);
    assert_eq!(read["version"], v);
}

#[tokio::test]
async fn if_match_guards_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server, "c-if-match");
    let (v, _) =
        ok(api.req(Method::POST, "/items").json(&json!({"sku": SKU_A})).send().await.unwrap())
            .await;
    let stale = api
        .req(Method::PATCH, "/items/1")
        .header("if-match", format!("\"{}\"", v + 1))
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let (v2, cart) = ok(api
        .req(Method::PATCH, "/items/1")
        .header("if-match", format!("\"{v}\""))
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!((v2, cart["items"][0]["qty"].as_i64()), (v + 1, Some(2)));
    let bad = api
        .req(Method::PATCH, "/items/1")
        .header("if-match", "yesterday")
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn idempotent_retries_apply_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first_body;
    {
        let server = Server::start(dir.path(), &[]);
        let api = Api::new(&server, "c-idem");
        let add = || {
            api.req(Method::POST, "/items")
                .header("idempotency-key", "add-1")
                .json(&json!({"sku": SKU_A, "quantity": 2}))
        };
        let (v1, b1) = ok(add().send().await.unwrap()).await;
        let (v2, b2) = ok(add().send().await.unwrap()).await;
        assert_eq!((v1, &b1), (v2, &b2), "the retry answers the first result");
        ok(api.req(Method::POST, "/items").json(&json!({"sku": SKU_B})).send().await.unwrap())
            .await;
        first_body = b1;
        server.terminate();
    }
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server, "c-idem");
    let (v, body) = ok(api
        .req(Method::POST, "/items")
        .header("idempotency-key", "add-1")
        .json(&json!({"sku": SKU_A, "quantity": 2}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(
        (v, &body),
        (1, &first_body),
        "after a restart the retry still answers the first result"
    );
    let (_, now) = ok(api.req(Method::GET, "").send().await.unwrap()).await;
    assert_eq!(now["items"][0]["qty"], 2, "applied once");
    assert_eq!(now["version"], 2);
    // Same key, different body: refused.
    let r = api
        .req(Method::POST, "/items")
        .header("idempotency-key", "add-1")
        .json(&json!({"sku": SKU_A, "quantity": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

/// The value of the `/metrics` sample named `name` whose labels include all
/// of `labels` (`key="value"` pairs); `None` when there is none.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_mutations_by_type_and_outcome_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server, "metered");
    for _ in 0..2 {
        ok(api.req(Method::POST, "/items").json(&json!({"sku": SKU_A})).send().await.unwrap())
            .await;
    }
    let missing = api.req(Method::DELETE, "/items/99").send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let metrics = support::metrics(&server).await;
    let value = |name: &str, labels: &[&str]| {
        sample(&metrics, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{metrics}"))
    };
    // Adds by SKU are resolved to AddItem where they enter the service.
    let add = r#"type="add_item""#;
    assert_eq!(value("cart_mutations_total", &[add, r#"outcome="ok""#]), 2.0);
    assert_eq!(
        value("cart_mutations_total", &[r#"type="remove_item""#, r#"outcome="refused""#]),
        1.0
    );
    // Every type and outcome is exported from the start, at zero until used.
    assert_eq!(value("cart_mutations_total", &[add, r#"outcome="failed""#]), 0.0);
    assert_eq!(value("cart_log_append_duration_seconds_count", &[]), 2.0);
    // One after the other, each add is a batch of its own: one sync each.
    assert_eq!(value("cart_log_fsyncs_total", &[]), 2.0);
    assert_eq!(value("cart_log_fsync_batch_size_sum", &[]), 2.0);
    assert_eq!(value("cart_grains_resident", &[]), 1.0);
    assert_eq!(value("cart_grain_activations_total", &[]), 1.0);
}
