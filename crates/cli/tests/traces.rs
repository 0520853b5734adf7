//! OpenTelemetry traces against an in-process OTLP receiver (the
//! `opentelemetry-proto` service types): two nodes configured only by the
//! standard `OTEL_*` variables export over gRPC; a request carrying W3C
//! `traceparent` to the node that does not own the cart makes one trace, in
//! the caller's trace id, from the entry node's HTTP span through its
//! forward to the owner's serve, turn and store append; a forged
//! `traceparent` starts a trace of its own; a node without an endpoint
//! exports nothing.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use support::{SKU_A, Server, cart_owned_by, client, member_hosts, wait_until};

/// A span as received: which node sent it, and its own fields.
#[derive(Debug, Clone)]
struct Received {
    instance: String,
    service: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_id: Vec<u8>,
    name: String,
    kind: i32,
}

#[derive(Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let attribute = |key: &str| {
                let attributes = resource.resource.as_ref().map(|r| r.attributes.clone());
                attributes
                    .unwrap_or_default()
                    .into_iter()
                    .find(|a| a.key == key)
                    .and_then(|a| a.value?.value)
                    .map(|v| match v {
                        AnyValue::StringValue(s) => s,
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default()
            };
            let (instance, service) = (attribute("service.instance.id"), attribute("service.name"));
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        instance: instance.clone(),
                        service: service.clone(),
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_id: span.parent_span_id,
                        name: span.name,
                        kind: span.kind,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    fn spans(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }

    fn trace(&self, trace_id: &[u8]) -> Vec<Received> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

async fn start_receiver() -> (Receiver, String) {
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .expect("a port");
    let endpoint = format!("http://{}", incoming.local_addr().unwrap());
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming),
    );
    (receiver, endpoint)
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn one_trace_spans_the_entry_node_and_the_owner() {
    let (receiver, endpoint) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = |instance: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
            ("OTEL_RESOURCE_ATTRIBUTES".to_owned(), format!("service.instance.id={instance}")),
        ]
    };
    let (env_a, env_b) = (env("node-a"), env("node-b"));
    fn pairs(e: &[(String, String)]) -> Vec<(&str, &str)> {
        e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
    let a = Server::start_with_env(&data, &[], &pairs(&env_a));
    let b = Server::start_with_env(&data, &["--peers", &a.node], &pairs(&env_b));
    let nodes = vec![a, b];
    wait_until("both nodes see each other", Duration::from_secs(20), || async {
        member_hosts(&nodes[0]).await.len() == 2 && member_hosts(&nodes[1]).await.len() == 2
    })
    .await;

    // A probe first: it ends (and would be exported) before the request.
    let probe = client().get(format!("{}/readyz", nodes[0].url)).send().await.unwrap();
    assert_eq!(probe.status(), 200);

    // Through node a, to a cart node b owns, in the caller's trace.
    let cart = cart_owned_by(&nodes, 1, "traced");
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let r = client()
        .post(format!("{}/api/carts/{cart}/items", nodes[0].internal_url))
        .header("traceparent", &traceparent)
        .json(&json!({"sku": SKU_A}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let trace_id = unhex(TRACE_ID);
    let wanted = [
        "POST /api/carts/{id}/items",
        "forward Mutate",
        "serve Mutate",
        "cart turn",
        "store append",
    ];
    wait_until("the whole trace", Duration::from_secs(20), || async {
        let names: Vec<String> = receiver.trace(&trace_id).into_iter().map(|s| s.name).collect();
        wanted.iter().all(|w| names.iter().any(|n| n == w))
    })
    .await;
    let spans = receiver.trace(&trace_id);
    let find = |prefix: &str| {
        spans
            .iter()
            .find(|s| s.name == prefix)
            .unwrap_or_else(|| panic!("no {prefix} span in {spans:#?}"))
            .clone()
    };
    let http = find("POST /api/carts/{id}/items");
    let forward = find("forward Mutate");
    let serve = find("serve Mutate");
    let turn = find("cart turn");
    let store = find("store append");
    // The entry node's spans, then the owner's, each the child of the last.
    assert_eq!((http.instance.as_str(), forward.instance.as_str()), ("node-a", "node-a"));
    for s in [&serve, &turn, &store] {
        assert_eq!(s.instance, "node-b", "{} runs on the owner", s.name);
    }
    assert_eq!(hex(&http.parent_id), CALLER_SPAN, "the storefront's span is the parent");
    assert_eq!(forward.parent_id, http.span_id);
    assert_eq!(serve.parent_id, forward.span_id, "the owner continues the forward's trace");
    assert_eq!(turn.parent_id, serve.span_id);
    assert_eq!(store.parent_id, turn.span_id);
    assert_eq!(http.kind, SpanKind::Server as i32);
    assert_eq!(forward.kind, SpanKind::Client as i32);
    assert_eq!(serve.kind, SpanKind::Server as i32);
    assert!(spans.iter().all(|s| s.service == "cart-actor"), "the default service name");
    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert!(!names.iter().any(|n| n.contains("/readyz")), "probes are not traced: {names:?}");
    assert!(names.iter().any(|n| n == "GET /api/cluster"), "other requests are: {names:?}");

    // A read forwarded with the context in the call's metadata.
    let read_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = client()
        .get(format!("{}/api/carts/{cart}", nodes[0].internal_url))
        .header("traceparent", format!("00-{read_trace}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let read_id = unhex(read_trace);
    let wanted = ["GET /api/carts/{id}", "forward GetState", "cart.CartActor/GetState"];
    wait_until("the read's trace", Duration::from_secs(20), || async {
        let names: Vec<String> = receiver.trace(&read_id).into_iter().map(|s| s.name).collect();
        wanted.iter().all(|w| names.iter().any(|n| n == w))
    })
    .await;
    let spans = receiver.trace(&read_id);
    let named = |name: &str| spans.iter().find(|s| s.name == name).unwrap().clone();
    let (get, forward, owner) = (named(wanted[0]), named(wanted[1]), named(wanted[2]));
    assert_eq!(forward.parent_id, get.span_id);
    assert_eq!((owner.parent_id, owner.instance.as_str()), (forward.span_id, "node-b"));

    // A forged traceparent is no parent: the request gets a trace of its own.
    let before: BTreeMap<Vec<u8>, usize> = trace_counts(&receiver);
    let forged = format!("00-{TRACE_ID}-{CALLER_SPAN}-01-and-more-bytes");
    let r = client()
        .get(format!("{}/api/carts/{cart}", nodes[0].internal_url))
        .header("traceparent", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until("a new trace", Duration::from_secs(20), || async {
        trace_counts(&receiver).keys().any(|t| !before.contains_key(t))
    })
    .await;
    assert_eq!(trace_counts(&receiver)[&trace_id], before[&trace_id], "nothing joined it");
}

fn trace_counts(receiver: &Receiver) -> BTreeMap<Vec<u8>, usize> {
    let mut counts = BTreeMap::new();
    for span in receiver.spans() {
        *counts.entry(span.trace_id).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn traces_switched_off_export_nothing_even_at_exit() {
    let (receiver, endpoint) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_SDK_DISABLED", "true")];
    let node = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let r = client()
        .post(format!("{}/api/carts/quiet/items", node.internal_url))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"sku": SKU_A}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A clean exit flushes whatever was buffered: after it, nothing came.
    assert!(node.terminate().success());
    assert!(receiver.spans().is_empty(), "{:?}", receiver.spans());
}

#[test]
fn an_unsupported_otlp_protocol_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-actor"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"), "{text}");
}
