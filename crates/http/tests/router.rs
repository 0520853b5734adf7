//! The HTTP API in process: the real router over a real grain runtime and
//! file store, called without a socket. These pin the HTTP edge's rules:
//! cookies, status codes, entity tags, idempotency, body limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use cart_catalog::{FileCatalog, Markets, Resolver};
use cart_grain::{GrainRuntime, ManualClock, RuntimeOptions};
use cart_http::auth::BearerToken;
use cart_http::{AppState, MAX_BODY_BYTES};
use cart_store::{FileStore, FileStoreOptions, FsyncPolicy};
use serde_json::{Value, json};
use tower::ServiceExt;

const SKU: &str = "861200";

struct Api {
    public: Router,
    internal: Router,
    ready: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {:?} (status {})", String::from_utf8_lossy(&self.body), self.status)
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Api {
    fn new() -> Api {
        Self::with_token(None)
    }

    fn with_token(token: Option<BearerToken>) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn cart_store::EventStore> = Arc::new(
            FileStore::open(FileStoreOptions::new(dir.path(), FsyncPolicy::Never)).unwrap(),
        );
        let resolver = Resolver::new(Arc::new(FileCatalog::sample().unwrap()), Markets::default());
        let grains = GrainRuntime::new(
            Arc::clone(&store),
            resolver,
            Arc::new(ManualClock::new(1_000_000)),
            RuntimeOptions::default(),
        );
        let ready = Arc::new(AtomicBool::new(true));
        let readiness = {
            let ready = Arc::clone(&ready);
            Arc::new(move || ready.load(Ordering::SeqCst))
        };
        let state = AppState {
            carts: Arc::new(grains),
            cluster: None,
            ready: readiness,
            metrics: Arc::new(|| "# metrics\n".to_owned()),
            checkout: None,
            ids: Arc::new(cart_grain::CartIdMint::new(b"router test secret")),
            store,
        };
        let public = cart_http::public(state.clone());
        let internal = cart_http::internal(state, token);
        Api { public, internal, ready, _dir: dir }
    }

    /// Calls the listener the path belongs to: `/api/...` and `/metrics`
    /// are internal, the rest public.
    async fn call(&self, request: Request<Body>) -> Answer {
        let path = request.uri().path();
        let internal = path.starts_with("/api/") || path == "/metrics";
        let router = if internal { &self.internal } else { &self.public };
        Self::call_on(router, request).await
    }

    async fn call_on(router: &Router, request: Request<Body>) -> Answer {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec();
        Answer { status, headers, body }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.call(request.body(body).unwrap()).await
    }
}

fn cookie_of(answer: &Answer) -> String {
    let set = answer.header(header::SET_COOKIE).expect("a Set-Cookie header");
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_storefront_cart_lives_in_the_cartid_cookie() {
    let api = Api::new();
    let none = api.send(Method::GET, "/cart/", &[], None).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    let added =
        api.send(Method::POST, "/cart/", &[], Some(json!({"sku": SKU, "quantity": 2}))).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text());
    let cookie = cookie_of(&added);
    assert!(cookie.starts_with("cartid="), "{cookie}");
    let set = added.header(header::SET_COOKIE).unwrap();
    assert!(
        set.contains("Path=/") && !set.contains("HttpOnly"),
        "the storefront deletes it from JS: {set}"
    );

    let read = api.send(Method::GET, "/cart", &[("cookie", &cookie)], None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), added.json(), "the trailing slash does not matter");
    assert_eq!(read.json()["items"][0]["qty"], 2);

    // An invalid cookie before the valid one does not hide the cart.
    let both = format!("cartid=../../etc; {cookie}");
    let read = api.send(Method::GET, "/cart/", &[("cookie", &both)], None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json()["id"], added.json()["id"]);

    let line = read.json()["items"][0]["id"].as_i64().unwrap();
    let removed =
        api.send(Method::DELETE, &format!("/cart/{line}"), &[("cookie", &cookie)], None).await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(removed.json()["items"], json!([]));
    assert!(removed.header(header::SET_COOKIE).is_none(), "an existing cart keeps its cookie");
}

#[tokio::test]
async fn entity_tags_guard_writes_as_rfc_9110_says() {
    let api = Api::new();
    let path = "/api/carts/etag-cart/items";
    let body = || Some(json!({"sku": SKU, "quantity": 1}));
    let first = api.send(Method::POST, path, &[], body()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let etag = first.header(header::ETAG).expect("an ETag").to_owned();
    assert_eq!(etag, "\"1\"");

    let matching = api.send(Method::POST, path, &[("if-match", &etag)], body()).await;
    assert_eq!(matching.status, StatusCode::OK);
    for stale in ["\"1\"", "\"not-the-version\"", "W/\"2\""] {
        let refused = api.send(Method::POST, path, &[("if-match", stale)], body()).await;
        assert_eq!(refused.status, StatusCode::PRECONDITION_FAILED, "If-Match {stale}");
    }
    for broken in ["\"unterminated", "W/3", "\"1\", \"2\""] {
        let refused = api.send(Method::POST, path, &[("if-match", broken)], body()).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "If-Match {broken}");
    }
    // Older clients send the bare version; it is accepted as that tag.
    let bare = api.send(Method::POST, path, &[("if-match", "2")], body()).await;
    assert_eq!(bare.status, StatusCode::OK);
    let any = api.send(Method::POST, path, &[("if-match", "*")], body()).await;
    assert_eq!(any.status, StatusCode::OK);
    let read = api.send(Method::GET, "/api/carts/etag-cart", &[], None).await;
    assert_eq!(read.json()["items"][0]["qty"], 4, "only the matching writes applied");
    assert_eq!(read.header(header::ETAG), Some("\"4\""));
}

#[tokio::test]
async fn a_retried_request_applies_once_and_a_reused_key_is_refused() {
    let api = Api::new();
    let path = "/api/carts/retry-cart/items";
    let key = [("idempotency-key", "order-42")];
    let first = api.send(Method::POST, path, &key, Some(json!({"sku": SKU, "quantity": 1}))).await;
    let again = api.send(Method::POST, path, &key, Some(json!({"sku": SKU, "quantity": 1}))).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), first.json(), "the retry answers what the first attempt did");
    let other = api.send(Method::POST, path, &key, Some(json!({"sku": SKU, "quantity": 5}))).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", other.text());
    let read = api.send(Method::GET, "/api/carts/retry-cart", &[], None).await;
    assert_eq!(read.json()["version"], 1);
    assert_eq!(read.json()["items"][0]["qty"], 1);
}

#[tokio::test]
async fn bad_input_gets_a_clear_client_error_never_a_500() {
    let api = Api::new();
    let post = |path: &str, body: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let too_big = format!("{{\"sku\":\"{}\",\"quantity\":1}}", "x".repeat(MAX_BODY_BYTES));
    let attempts = [
        (post("/api/carts/c1/items", "{not json"), StatusCode::BAD_REQUEST),
        (post("/api/carts/c1/items", "{\"sku\": 5}"), StatusCode::BAD_REQUEST),
        (post("/api/carts/c1/items", &too_big), StatusCode::PAYLOAD_TOO_LARGE),
        (
            post("/api/carts/not%20an%20id/items", "{\"sku\":\"861200\",\"quantity\":1}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            post(
                &format!("/api/carts/{}/items", "a".repeat(65)),
                "{\"sku\":\"861200\",\"quantity\":1}",
            ),
            StatusCode::BAD_REQUEST,
        ),
        (post("/api/carts/c1/items", "{\"sku\":\"..\",\"quantity\":1}"), StatusCode::BAD_REQUEST),
        (
            post("/api/carts/c1/items", "{\"sku\":\"861200\",\"quantity\":0}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            post("/api/carts/c1/items", "{\"sku\":\"861200\",\"quantity\":-3}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            post("/api/carts/c1/items", "{\"sku\":\"no-such-sku\",\"quantity\":1}"),
            StatusCode::NOT_FOUND,
        ),
        (
            Request::builder()
                .method(Method::PATCH)
                .uri("/api/carts/c1/items/1")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"quantity\":2}"))
                .unwrap(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (request, expected) in attempts {
        let what = format!("{} {}", request.method(), request.uri());
        let answer = api.call(request).await;
        assert_eq!(answer.status, expected, "{what}: {}", answer.text());
        assert!(!answer.text().is_empty(), "{what}: the error says what is wrong");
    }
    let read = api.send(Method::GET, "/api/carts/c1", &[], None).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND, "no refused request created the cart");
}

#[tokio::test]
async fn readiness_follows_the_node_and_health_does_not() {
    let api = Api::new();
    assert_eq!(api.send(Method::GET, "/readyz", &[], None).await.status, StatusCode::OK);
    api.ready.store(false, Ordering::SeqCst);
    assert_eq!(
        api.send(Method::GET, "/readyz", &[], None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(api.send(Method::GET, "/healthz", &[], None).await.status, StatusCode::OK);
    let metrics = api.send(Method::GET, "/metrics", &[], None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(metrics.text(), "# metrics\n");
    let cluster = api.send(Method::GET, "/api/cluster", &[], None).await;
    assert_eq!(cluster.status, StatusCode::NOT_FOUND, "a single node has no cluster view");
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder().method(Method::GET).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn each_listener_serves_only_its_own_routes() {
    let api = Api::new();
    api.send(Method::POST, "/api/carts/c1/items", &[], Some(json!({"sku": SKU, "quantity": 1})))
        .await;
    for internal in ["/api/carts/c1", "/api/carts/c1/events", "/metrics", "/api/cluster"] {
        let answer = Api::call_on(&api.public, get(internal, &[])).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{internal} on the public listener");
    }
    for public in ["/cart", "/cart/events", "/checkout"] {
        let answer = Api::call_on(&api.internal, get(public, &[])).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{public} on the internal listener");
    }
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(Api::call_on(&api.public, get(probe, &[])).await.status, StatusCode::OK);
        assert_eq!(Api::call_on(&api.internal, get(probe, &[])).await.status, StatusCode::OK);
    }
    let read = Api::call_on(&api.internal, get("/api/carts/c1", &[])).await;
    assert_eq!(read.status, StatusCode::OK);
}

#[tokio::test]
async fn with_a_token_the_internal_listener_needs_it_on_every_request() {
    let token = "an-internal-token-0123456789";
    let api = Api::with_token(Some(BearerToken::new(token).unwrap()));
    let good = format!("Bearer {token}");
    for path in ["/api/carts/c1", "/metrics", "/api/cluster", "/healthz"] {
        for bad in [None, Some("Bearer wrong-token-wrong-token"), Some(token)] {
            let headers: Vec<(&str, &str)> =
                bad.map(|v| ("authorization", v)).into_iter().collect();
            let answer = Api::call_on(&api.internal, get(path, &headers)).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path} with {bad:?}");
            assert_eq!(answer.header(header::WWW_AUTHENTICATE), Some("Bearer"));
        }
    }
    let post = Request::builder()
        .method(Method::POST)
        .uri("/api/carts/c1/items")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"sku": SKU, "quantity": 1}).to_string()))
        .unwrap();
    assert_eq!(Api::call_on(&api.internal, post).await.status, StatusCode::UNAUTHORIZED);
    // Erasing a cart and compacting the store are as guarded.
    for (method, uri) in [(Method::DELETE, "/api/carts/c1"), (Method::POST, "/api/admin/compact")] {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        assert_eq!(
            Api::call_on(&api.internal, request).await.status,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        let public = Request::builder().method(Method::POST).uri(uri).body(Body::empty()).unwrap();
        let answer = Api::call_on(&api.public, public).await.status;
        assert!(
            answer == StatusCode::NOT_FOUND || answer == StatusCode::METHOD_NOT_ALLOWED,
            "{uri} is not public: {answer}"
        );
    }
    let read = Api::call_on(&api.internal, get("/api/carts/c1", &[("authorization", &good)])).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND, "the refused write changed nothing");
    let metrics = Api::call_on(&api.internal, get("/metrics", &[("authorization", &good)])).await;
    assert_eq!(metrics.status, StatusCode::OK);
    // The public listener needs no token.
    assert_eq!(Api::call_on(&api.public, get("/healthz", &[])).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_cookie_naming_a_cart_the_service_did_not_mint_gets_a_new_cart() {
    let api = Api::new();
    // A cart made by a trusted service under a chosen id.
    let made = api
        .send(
            Method::POST,
            "/api/carts/victim/items",
            &[],
            Some(json!({"sku": SKU, "quantity": 1})),
        )
        .await;
    assert_eq!(made.status, StatusCode::OK);
    let chosen = [("cookie", "cartid=victim")];
    let read = api.send(Method::GET, "/cart/", &chosen, None).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND, "a chosen id reads no cart");
    let added =
        api.send(Method::POST, "/cart/", &chosen, Some(json!({"sku": SKU, "quantity": 5}))).await;
    assert_eq!(added.status, StatusCode::OK);
    let cookie = cookie_of(&added);
    assert_ne!(cookie, "cartid=victim", "a new cart with a new cookie");
    assert_eq!(
        added.json()["id"].as_str(),
        cookie.strip_prefix("cartid="),
        "the cookie is the cart's id"
    );
    assert_eq!(added.json()["version"], 1);
    let victim = api.send(Method::GET, "/api/carts/victim", &[], None).await;
    assert_eq!(victim.json()["items"][0]["qty"], 1, "the chosen cart was not touched");
    for path in ["/cart/events", "/cart/checkout"] {
        let answer = api.send(Method::GET, path, &chosen, None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn the_storefront_cannot_set_its_own_delivery_fee() {
    let api = Api::new();
    let added =
        api.send(Method::POST, "/cart/", &[], Some(json!({"sku": SKU, "quantity": 1}))).await;
    let cookie = cookie_of(&added);
    let jar = [("cookie", cookie.as_str())];
    let free = json!({"provider": "postnord", "items": [1], "price": 0});
    let set = api.send(Method::POST, "/cart/delivery", &jar, Some(free)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    let cart = set.json();
    assert_eq!(cart["deliveries"][0]["price"], 4900, "the configured fee, not the client's 0");
    let line_total = cart["items"][0]["price"].as_i64().unwrap();
    assert_eq!(cart["totalPrice"].as_i64().unwrap(), line_total + 4900);
    let negative = json!({"provider": "budbee", "items": [1], "price": -100000});
    let set = api.send(Method::POST, "/cart/delivery", &jar, Some(negative)).await;
    assert_eq!(set.json()["deliveries"][0]["price"], 5900);
    for (body, why) in [
        (json!({"provider": "my-own-courier", "items": [1]}), "unknown provider"),
        (
            json!({"provider": "budbee", "items": [1], "pickupPoint": {"id": "p1"}}),
            "no pickup points",
        ),
    ] {
        let refused = api.send(Method::POST, "/cart/delivery", &jar, Some(body)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{why}: {}", refused.text());
    }
    // A trusted service on the internal listener may price it.
    let path = "/api/carts/shipping-1";
    api.send(Method::POST, &format!("{path}/items"), &[], Some(json!({"sku": SKU, "quantity": 1})))
        .await;
    let priced = json!({"provider": "postnord", "items": [1], "price": 1234});
    let set = api.send(Method::POST, &format!("{path}/deliveries"), &[], Some(priced)).await;
    assert_eq!(set.json()["deliveries"][0]["price"], 1234);
    let unpriced = json!({"provider": "dhl", "items": [1]});
    let set = api.send(Method::POST, &format!("{path}/deliveries"), &[], Some(unpriced)).await;
    assert_eq!(set.json()["deliveries"][0]["price"], 6900, "without a price, the configured fee");
}
