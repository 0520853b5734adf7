//! The typed seam across real processes: the same request answers the same
//! whichever node it entered, a client built from the plan's proto text
//! alone still works, and live carts (SSE) follow a cart across nodes and
//! through its owner's death.

mod support;

use std::time::{Duration, Instant};

use cart_cluster::NodeAddr;
use serde_json::{Value, json};
use support::{SKU_A, SKU_B, Server, cart_owned_by, client, wait_until};

/// Three nodes on one shared directory (talking mutual TLS), once their
/// views agree.
async fn three(dir: &std::path::Path) -> Vec<Server> {
    let ca = cart_testkit::certs::TestCa::new("test cluster");
    let a = Server::start_tls(dir, &ca, &[]);
    let b = Server::start_tls(dir, &ca, &["--peers", &a.node]);
    let c = Server::start_tls(dir, &ca, &["--peers", &b.node]);
    let nodes = vec![a, b, c];
    let addrs: Vec<NodeAddr> = nodes.iter().map(|n| n.node.parse().unwrap()).collect();
    wait_until("the views to converge", Duration::from_secs(15), || async {
        for n in &nodes {
            let Ok(r) = client().get(format!("{}/api/cluster", n.internal_url)).send().await else {
                return false;
            };
            let Ok(v) = r.json::<Value>().await else { return false };
            if v["members"].as_array().map_or(0, Vec::len) != addrs.len() {
                return false;
            }
        }
        true
    })
    .await;
    nodes
}

async fn send(
    node: &Server,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String) {
    let mut r = client().request(method, node.url_of(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    let response = r.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// One request: what it is, method, path, headers, body, expected status.
type Case =
    (&'static str, reqwest::Method, String, Vec<(&'static str, &'static str)>, Option<Value>, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_answers_the_same_through_the_owner_and_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three(dir.path()).await;
    let cart = cart_owned_by(&nodes, 1, "same");
    let (owner, other) = (&nodes[1], &nodes[0]);
    let items = format!("/api/carts/{cart}/items");
    let (status, _) =
        send(owner, reqwest::Method::POST, &items, &[], Some(json!({"sku": SKU_A}))).await;
    assert_eq!(status, 200);
    let post = reqwest::Method::POST;
    let cases: Vec<Case> = vec![
        ("unknown cart", reqwest::Method::GET, "/api/carts/nobody-here".into(), vec![], None, 404),
        ("unknown line", reqwest::Method::DELETE, format!("{items}/99"), vec![], None, 404),
        ("unknown sku", post.clone(), items.clone(), vec![], Some(json!({"sku": "000000"})), 404),
        (
            "bad quantity",
            post.clone(),
            items.clone(),
            vec![],
            Some(json!({"sku": SKU_A, "quantity": 0})),
            400,
        ),
        ("dot sku", post.clone(), items.clone(), vec![], Some(json!({"sku": ".."})), 400),
        ("not for sale", post.clone(), items.clone(), vec![], Some(json!({"sku": "999001"})), 409),
        (
            "stale If-Match",
            post.clone(),
            items.clone(),
            vec![("if-match", "\"not-the-version\"")],
            Some(json!({"sku": SKU_B})),
            412,
        ),
        (
            "old version in If-Match",
            post.clone(),
            items.clone(),
            vec![("if-match", "\"0\"")],
            Some(json!({"sku": SKU_B})),
            412,
        ),
        (
            "broken If-Match",
            post.clone(),
            items.clone(),
            vec![("if-match", "\"unterminated")],
            Some(json!({"sku": SKU_B})),
            400,
        ),
    ];
    for (what, method, path, headers, body, expected) in cases {
        let via_owner = send(owner, method.clone(), &path, &headers, body.clone()).await;
        let via_other = send(other, method, &path, &headers, body).await;
        assert_eq!(via_owner.0, expected, "{what} through the owner: {}", via_owner.1);
        assert_eq!(via_owner, via_other, "{what}: the owner and another node disagree");
    }
    // An idempotency key reused with another body: 422 through both.
    let key = [("idempotency-key", "k-1")];
    let first = send(other, post.clone(), &items, &key, Some(json!({"sku": SKU_B}))).await;
    assert_eq!(first.0, 200);
    let again = send(other, post.clone(), &items, &key, Some(json!({"sku": SKU_B}))).await;
    assert_eq!(again, first, "a retried request answers as the first time");
    let reused_owner = send(owner, post.clone(), &items, &key, Some(json!({"sku": SKU_A}))).await;
    let reused_other = send(other, post, &items, &key, Some(json!({"sku": SKU_A}))).await;
    assert_eq!(reused_owner.0, 422);
    assert_eq!(reused_owner, reused_other);
}

/// The plan's messages (GRPC-MIGRATION-PLAN.md section 5.1), as a client
/// generated from the plan's proto text alone would have them: no
/// extension fields.
mod plan {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MutationRequest {
        #[prost(string, tag = "1")]
        pub cart_id: String,
        #[prost(int32, tag = "2")]
        pub r#type: i32,
        #[prost(bytes = "vec", tag = "3")]
        pub payload: Vec<u8>,
        #[prost(int64, tag = "4")]
        pub client_timestamp: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MutationReply {
        #[prost(int32, tag = "1")]
        pub status_code: i32,
        #[prost(bytes = "vec", tag = "2")]
        pub payload: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StateRequest {
        #[prost(string, tag = "1")]
        pub cart_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StateReply {
        #[prost(int32, tag = "1")]
        pub status_code: i32,
        #[prost(bytes = "vec", tag = "2")]
        pub payload: Vec<u8>,
    }
}

async fn plan_call<Q, R>(url: &str, method: &'static str, request: Q) -> R
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(method);
    let codec = tonic_prost::ProstCodec::<Q, R>::default();
    grpc.unary(tonic::Request::new(request), path, codec).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_built_from_the_plans_proto_text_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &[]);
    let add =
        cart_domain::proto::AddRequest { quantity: 2, sku: SKU_A.into(), ..Default::default() };
    let request = plan::MutationRequest {
        cart_id: "plan-1".into(),
        r#type: 1,
        payload: prost::Message::encode_to_vec(&add),
        client_timestamp: 0,
    };
    let reply: plan::MutationReply =
        plan_call(&node.grpc_url, "/cart.CartActor/Mutate", request).await;
    assert_eq!(reply.status_code, 200, "{}", String::from_utf8_lossy(&reply.payload));
    let cart: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(cart["items"][0]["qty"], 2);
    let state: plan::StateReply = plan_call(
        &node.grpc_url,
        "/cart.CartActor/GetState",
        plan::StateRequest { cart_id: "plan-1".into() },
    )
    .await;
    assert_eq!(state.status_code, 200);
    assert_eq!(serde_json::from_slice::<Value>(&state.payload).unwrap(), cart);
    // A resolved line with a price of the client's choosing is refused.
    let priced = cart_domain::proto::AddItem {
        sku: SKU_B.into(),
        price: 1,
        quantity: 1,
        ..Default::default()
    };
    let forged = plan::MutationRequest {
        cart_id: "plan-1".into(),
        r#type: 2,
        payload: prost::Message::encode_to_vec(&priced),
        client_timestamp: 0,
    };
    let refused: plan::MutationReply =
        plan_call(&node.grpc_url, "/cart.CartActor/Mutate", forged).await;
    assert_eq!(refused.status_code, 400, "{}", String::from_utf8_lossy(&refused.payload));
    for code in [9, 11] {
        let forged = plan::MutationRequest {
            cart_id: "plan-1".into(),
            r#type: code,
            payload: vec![],
            client_timestamp: 0,
        };
        let refused: plan::MutationReply =
            plan_call(&node.grpc_url, "/cart.CartActor/Mutate", forged).await;
        assert_eq!(refused.status_code, 400, "type {code}");
    }
}

/// Reads SSE events from a streaming response: `(id, event, data)`.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(node: &Server, path: &str, last_event_id: Option<u64>) -> Events {
        let client = reqwest::Client::builder().build().unwrap();
        let mut r = client.get(node.url_of(path));
        if let Some(v) = last_event_id {
            r = r.header("last-event-id", v.to_string());
        }
        let response = r.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events { response, buffer: String::new() }
    }

    /// The next `cart` event, within `within`.
    async fn next(&mut self, within: Duration) -> (u64, Value) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned())
                };
                if field("event:").as_deref() == Some("cart") {
                    let id = field("id:").unwrap().parse().unwrap();
                    let data = serde_json::from_str(&field("data:").unwrap()).unwrap();
                    return (id, data);
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .expect("no event in time")
                .unwrap()
                .expect("the stream ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Adds through `node` with an idempotency key, retrying (the same key)
/// while the cluster fails over; returns the cart's new version.
async fn add_retrying(node: &Server, cart: &str, sku: &str, key: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client()
            .post(format!("{}/api/carts/{cart}/items", node.internal_url))
            .header("idempotency-key", key)
            .json(&json!({"sku": sku}))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
        {
            return r.json::<Value>().await.unwrap()["version"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the add never succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_follows_the_cart_across_nodes_and_through_its_owners_death() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three(dir.path()).await;
    let cart = cart_owned_by(&nodes, 1, "live");
    let v1 = add_retrying(&nodes[2], &cart, SKU_A, "w-1").await;
    let path = format!("/api/carts/{cart}/events");
    let mut watch = Events::open(&nodes[0], &path, None).await;
    let (first, state) = watch.next(Duration::from_secs(5)).await;
    assert_eq!((first, state["version"].as_u64()), (v1, Some(v1)), "the current state first");

    // A mutation through C on B's cart reaches the watcher on A.
    let v2 = add_retrying(&nodes[2], &cart, SKU_B, "w-2").await;
    let started = Instant::now();
    let (id, state) = watch.next(Duration::from_secs(5)).await;
    assert_eq!(id, v2);
    assert_eq!(state, support::read(&nodes[0], &cart).await.unwrap());
    eprintln!("watch: commit to delivery across nodes within {:?}", started.elapsed());

    // The owner dies; the same stream delivers the next mutation.
    nodes.remove(1).kill();
    let v3 = add_retrying(&nodes[1], &cart, SKU_A, "w-3").await;
    assert!(v3 > v2);
    let (id, _) = watch.next(Duration::from_secs(10)).await;
    assert_eq!(id, v3, "the stream followed the cart to its new owner");

    // A reconnect with Last-Event-ID gets nothing older.
    let mut resumed = Events::open(&nodes[0], &path, Some(v3)).await;
    let v4 = add_retrying(&nodes[0], &cart, SKU_B, "w-4").await;
    let (id, _) = resumed.next(Duration::from_secs(5)).await;
    assert_eq!(id, v4);
    let (id, _) = watch.next(Duration::from_secs(5)).await;
    assert_eq!(id, v4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_storefront_watches_its_cookie_cart_and_watchers_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--max-watchers", "2"]);
    let r = client().post(format!("{}/cart/", node.url)).json(&json!({"sku": SKU_A})).send().await;
    let r = r.unwrap();
    let cookie = support::cart_cookie(&r).unwrap();
    let no_cookie = client().get(format!("{}/cart/events", node.url)).send().await.unwrap();
    assert_eq!(no_cookie.status(), 404);
    let http = reqwest::Client::new();
    let open = || {
        http.get(format!("{}/cart/events", node.url))
            .header("cookie", format!("cartid={cookie}"))
            .send()
    };
    let mut first = Events { response: open().await.unwrap(), buffer: String::new() };
    let (v, state) = first.next(Duration::from_secs(5)).await;
    assert_eq!((v, state["items"][0]["qty"].as_u64()), (1, Some(1)));
    let second = open().await.unwrap();
    assert_eq!(second.status(), 200);
    let third = open().await.unwrap();
    assert_eq!(third.status(), 503, "the third watcher is over the cap");
    assert!(third.headers().contains_key("retry-after"));
    let metrics = client().get(format!("{}/metrics", node.internal_url)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.lines().any(|l| l == "cart_watchers 2"), "{text}");
    drop(second);
    wait_until("a freed watcher place", Duration::from_secs(5), || async {
        open().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_watches_end_at_shutdown_instead_of_holding_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--shutdown-timeout", "60s"]);
    let v = add_retrying(&node, "closing-1", SKU_A, "c-1").await;
    let mut watch = Events::open(&node, "/api/carts/closing-1/events", None).await;
    assert_eq!(watch.next(Duration::from_secs(5)).await.0, v);
    let stopping = Instant::now();
    // terminate() fails the test if the process has not exited within 20 s,
    // far below the 60 s an open stream would hold the drain for.
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
    eprintln!("shutdown with an open watch took {:?}", stopping.elapsed());
    let rest = tokio::time::timeout(Duration::from_secs(5), watch.response.chunk()).await;
    assert!(matches!(rest, Ok(Ok(None)) | Ok(Err(_))), "the stream ended: {rest:?}");
}
