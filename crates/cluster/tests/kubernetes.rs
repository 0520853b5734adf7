//! Kubernetes discovery against a fake API server. No cluster is reachable
//! here, so the fake implements the pod list and watch endpoints kube-rs
//! uses, with the API server's rules for them: namespaced paths, label
//! selectors (equality and inequality), resource versions (a list returns
//! the current version; a watch streams only later changes, as
//! newline-delimited ADDED/MODIFIED/DELETED events), and 400 for a malformed
//! selector.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cart_cluster::NodeAddr;
use cart_cluster::discovery::Discovery;
use cart_cluster::kubernetes::KubernetesPeers;
use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Clone)]
struct Event {
    version: u64,
    kind: &'static str,
    namespace: String,
    pod: Value,
}

#[derive(Default)]
struct World {
    version: u64,
    pods: BTreeMap<(String, String), Value>,
}

#[derive(Clone)]
struct Fake {
    world: Arc<Mutex<World>>,
    events: broadcast::Sender<Event>,
}

impl Fake {
    fn new() -> Self {
        Fake { world: Arc::default(), events: broadcast::channel(64).0 }
    }

    fn put(&self, namespace: &str, name: &str, labels: Value, phase: &str, ip: Option<&str>) {
        let mut w = self.world.lock().unwrap();
        w.version += 1;
        let key = (namespace.to_owned(), name.to_owned());
        let kind = if w.pods.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        let mut status = json!({"phase": phase});
        if let Some(ip) = ip {
            status["podIP"] = json!(ip);
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                         "labels": labels, "resourceVersion": w.version.to_string()},
            "status": status,
        });
        w.pods.insert(key, pod.clone());
        let _ =
            self.events.send(Event { version: w.version, kind, namespace: namespace.into(), pod });
    }

    fn delete(&self, namespace: &str, name: &str) {
        let mut w = self.world.lock().unwrap();
        w.version += 1;
        if let Some(mut pod) = w.pods.remove(&(namespace.to_owned(), name.to_owned())) {
            pod["metadata"]["resourceVersion"] = json!(w.version.to_string());
            let _ = self.events.send(Event {
                version: w.version,
                kind: "DELETED",
                namespace: namespace.into(),
                pod,
            });
        }
    }
}

/// An equality-based label selector: `k=v`, `k==v`, `k!=v`, comma separated.
fn parse_selector(s: &str) -> Result<Vec<(String, bool, String)>, String> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(|term| {
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("unable to parse requirement: {term:?}"));
            };
            if key.is_empty() || key.contains(' ') {
                return Err(format!("invalid label key {key:?}"));
            }
            Ok((key.to_owned(), equal, value.to_owned()))
        })
        .collect()
}

fn matches(selector: &[(String, bool, String)], pod: &Value) -> bool {
    selector.iter().all(|(k, equal, v)| {
        let actual = pod["metadata"]["labels"][k].as_str();
        (actual == Some(v.as_str())) == *equal
    })
}

async fn pods(
    State(fake): State<Fake>,
    Path(namespace): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let selector = match parse_selector(q.get("labelSelector").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(message) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"kind": "Status", "status": "Failure", "message": message, "reason": "BadRequest", "code": 400}))).into_response();
        }
    };
    if q.get("watch").map(String::as_str) == Some("true")
        || q.get("watch").map(String::as_str) == Some("1")
    {
        let since: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
        let timeout = q.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(300u64);
        let mut rx = fake.events.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let stream = async_stream(
            move |tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, Infallible>>| async move {
                loop {
                    let event = tokio::select! {
                        e = rx.recv() => match e { Ok(e) => e, Err(_) => return },
                        _ = tokio::time::sleep_until(deadline) => return,
                    };
                    if event.version <= since
                        || event.namespace != namespace
                        || !matches(&selector, &event.pod)
                    {
                        continue;
                    }
                    let mut line =
                        serde_json::to_vec(&json!({"type": event.kind, "object": event.pod}))
                            .unwrap();
                    line.push(b'\n');
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
            },
        );
        return Response::builder()
            .header("content-type", "application/json")
            .body(stream)
            .unwrap();
    }
    let w = fake.world.lock().unwrap();
    let items: Vec<Value> = w
        .pods
        .iter()
        .filter(|((ns, _), pod)| *ns == namespace && matches(&selector, pod))
        .map(|(_, pod)| pod.clone())
        .collect();
    axum::Json(json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": w.version.to_string()},
        "items": items,
    }))
    .into_response()
}

/// A streaming body fed by a task.
fn async_stream<F, Fut>(f: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Vec<u8>, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Body::from_stream(stream)
}

async fn serve(fake: Fake) -> String {
    let app = axum::Router::new().route("/api/v1/namespaces/{ns}/pods", get(pods)).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn eventually(peers: &KubernetesPeers, want: &[&str]) {
    let want: Vec<NodeAddr> = want
        .iter()
        .map(|ip| NodeAddr { host: (*ip).into(), grpc_port: 1337, control_port: 1338 })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = peers.peers().await.unwrap();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "peers {got:?}, wanted {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn running_pods_matching_the_selector_are_peers_and_the_watch_follows_changes() {
    let fake = Fake::new();
    let app = json!({"app": "cart"});
    fake.put("default", "cart-0", app.clone(), "Running", Some("10.0.0.1"));
    fake.put("default", "cart-1", app.clone(), "Running", Some("10.0.0.2"));
    fake.put("default", "cart-2", app.clone(), "Pending", None);
    fake.put("default", "web-0", json!({"app": "web"}), "Running", Some("10.0.0.9"));
    fake.put("other", "cart-0", app.clone(), "Running", Some("10.0.0.8"));
    let url = serve(fake.clone()).await;
    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let peers = KubernetesPeers::start(client, "default", "app=cart", 1337, 1338);

    eventually(&peers, &["10.0.0.1", "10.0.0.2"]).await;
    // A pending pod starts running: it becomes a peer.
    fake.put("default", "cart-2", app.clone(), "Running", Some("10.0.0.3"));
    eventually(&peers, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]).await;
    // A pod goes away.
    fake.delete("default", "cart-0");
    eventually(&peers, &["10.0.0.2", "10.0.0.3"]).await;
    // Pods of other apps and namespaces never count.
    fake.put("default", "web-1", json!({"app": "web"}), "Running", Some("10.0.0.10"));
    fake.put("other", "cart-1", app, "Running", Some("10.0.0.11"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    eventually(&peers, &["10.0.0.2", "10.0.0.3"]).await;
}

#[test]
fn the_fake_rejects_malformed_selectors_as_the_api_server_does() {
    assert!(parse_selector("app=cart,tier!=db").is_ok());
    assert!(parse_selector("app").is_err());
    assert!(parse_selector("=x").is_err());
}
