//! Every input limit answers a clear 400 or 413, never a 500 or a panic.

mod support;

use reqwest::Method;
use serde_json::json;
use support::{SKU_A, Server, client};

#[tokio::test]
async fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = client();
    let url = |p: &str| server.url_of(p);
    let check =
        |method: Method, path: String, body: Option<String>, status: u16, text: &'static str| {
            let http = http.clone();
            let url = url(&path);
            async move {
                let mut req = http.request(method.clone(), &url);
                if let Some(b) = body {
                    req = req.body(b);
                }
                let r = req.send().await.unwrap();
                let got = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert_eq!(got, status, "{method} {url}: {body}");
                assert!(body.contains(text), "{method} {url}: {body:?} lacks {text:?}");
                assert!(body.len() < 300, "error texts are short: {body}");
            }
        };

    // Body size.
    let huge = json!({"sku": SKU_A, "pad": "x".repeat(70 * 1024)}).to_string();
    check(Method::POST, "/cart/".into(), Some(huge), 413, "too large").await;
    // Malformed and mistyped JSON.
    check(Method::POST, "/cart/".into(), Some("{not json".into()), 400, "invalid JSON").await;
    check(Method::POST, "/cart/".into(), Some(json!({"sku": 5}).to_string()), 400, "invalid JSON")
        .await;
    check(
        Method::POST,
        "/cart/".into(),
        Some(json!({"sku": SKU_A, "quantity": 1e12}).to_string()),
        400,
        "invalid JSON",
    )
    .await;
    // Quantities.
    check(
        Method::POST,
        "/cart/".into(),
        Some(json!({"sku": SKU_A, "quantity": 0}).to_string()),
        400,
        "quantity",
    )
    .await;
    check(
        Method::POST,
        "/cart/".into(),
        Some(json!({"sku": SKU_A, "quantity": 1000}).to_string()),
        400,
        "quantity",
    )
    .await;
    check(
        Method::POST,
        "/cart/".into(),
        Some(json!({"sku": SKU_A, "quantity": -3}).to_string()),
        400,
        "quantity",
    )
    .await;
    // SKU length.
    check(
        Method::POST,
        "/cart/".into(),
        Some(json!({"sku": "9".repeat(65)}).to_string()),
        400,
        "sku",
    )
    .await;
    check(Method::POST, "/cart/".into(), Some(json!({"sku": ""}).to_string()), 400, "sku").await;
    // Cart id.
    check(Method::GET, format!("/api/carts/{}", "a".repeat(65)), None, 400, "cart id").await;
    check(Method::GET, "/api/carts/bad%20id".into(), None, 400, "cart id").await;
    // Line ids that are not numbers.
    check(
        Method::PATCH,
        "/api/carts/c1/items/abc".into(),
        Some(json!({"quantity": 1}).to_string()),
        400,
        "",
    )
    .await;
    // Too many lines in one request, refused before the catalogue is asked.
    let items: Vec<_> =
        (0..501).map(|i| json!({"sku": format!("sku{i}"), "quantity": 1})).collect();
    check(
        Method::PUT,
        "/api/carts/c1/items".into(),
        Some(json!({"items": items}).to_string()),
        400,
        "500 lines",
    )
    .await;
    // Idempotency keys.
    let r = http
        .post(url("/api/carts/c1/items"))
        .header("idempotency-key", "k".repeat(129))
        .body(json!({"sku": SKU_A}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The server is still healthy after all that.
    assert_eq!(http.get(url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_cart_stops_at_500_lines() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    let items: Vec<_> = (0..501)
        .map(|i| json!({"id": i, "sku": format!("s{i}"), "title": format!("Item {i}"), "values": {"4": 100}}))
        .collect();
    std::fs::write(&catalog, serde_json::to_string(&items).unwrap()).unwrap();
    let server = Server::start(&dir.path().join("data"), &["--catalog", catalog.to_str().unwrap()]);
    let http = client();
    let url = format!("{}/api/carts/big/items", server.internal_url);
    let first: Vec<_> = (0..500).map(|i| json!({"sku": format!("s{i}"), "quantity": 1})).collect();
    let r = http.put(&url).json(&json!({"items": first})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.post(&url).json(&json!({"sku": "s500"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "a cart holds at most 500 lines");
}

/// The attack: a 60 KB `storeId` per line, 500 lines, and catalogue text of
/// any length. Every field has a limit, and so has the cart as a whole.
#[tokio::test]
async fn oversized_fields_and_carts_are_refused_with_a_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    let long = "x".repeat(500);
    let mut items: Vec<_> = (0..500)
        .map(|i| {
            json!({"id": i, "sku": format!("s{i}"), "title": format!("{long}{i}"),
                   "img": long, "values": {"4": 100, "2": long, "10": long, "11": long, "12": long}})
        })
        .collect();
    items.push(
        json!({"id": 900, "sku": "huge", "title": "y".repeat(100_000), "values": {"4": 100}}),
    );
    std::fs::write(&catalog, serde_json::to_string(&items).unwrap()).unwrap();
    let server = Server::start(&dir.path().join("data"), &["--catalog", catalog.to_str().unwrap()]);
    let http = client();
    let cart = format!("{}/api/carts/fat/items", server.internal_url);
    let add = |body: serde_json::Value| http.post(&cart).json(&body).send();

    let r = add(json!({"sku": "s1", "storeId": "z".repeat(60_000)})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("storeId"));
    let r = add(json!({"sku": "s1", "country": "c".repeat(100)})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = add(json!({"sku": "huge"})).await.unwrap();
    assert_eq!(r.status(), 502, "a catalogue item with a 100 KB title is the catalogue's fault");
    assert!(r.text().await.unwrap().contains("name is longer than 512 bytes"));

    // Lines of long catalogue text: the cart stops at its size limit.
    let mut refused = None;
    for i in 0..500 {
        let r = add(json!({"sku": format!("s{i}")})).await.unwrap();
        if r.status() != 200 {
            refused = Some((i, r.status().as_u16(), r.text().await.unwrap()));
            break;
        }
    }
    let (at, status, text) = refused.expect("the cart reaches its size limit before 500 lines");
    assert_eq!(status, 400);
    assert!(text.contains("the cart would exceed 524288 bytes"), "{text}");
    let body = http.get(format!("{}/api/carts/fat", server.internal_url)).send().await.unwrap();
    let json = body.bytes().await.unwrap();
    assert!(json.len() <= 512 * 1024, "the cart's JSON is {} bytes", json.len());
    let lines = serde_json::from_slice::<serde_json::Value>(&json).unwrap()["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(lines, at, "the refused add was not applied");
    // It may still shrink, and then grow again within the limit.
    let r = http.delete(format!("{cart}/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
