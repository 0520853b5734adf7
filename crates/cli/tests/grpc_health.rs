//! gRPC health follows the node's life (SERVING, then NOT_SERVING as soon
//! as it drains, while it still answers), and gRPC reflection describes
//! every service the ports serve.

mod support;

use std::time::Duration;

use support::{Server, client, wait_until};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The health status of `service` (`""`: the whole server), as its number.
async fn health(node: &Server, service: &str) -> Option<i32> {
    let request = HealthCheckRequest { service: service.to_owned() };
    let answer = HealthClient::new(node.channel()).check(request).await.ok()?;
    Some(answer.into_inner().status)
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;
const SERVICES: [&str; 3] = ["cart.CartActor", "control.ControlPlane", ""];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_when_the_node_drains() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--drain-delay", "5s"]);
    for service in SERVICES {
        assert_eq!(health(&node, service).await, Some(SERVING), "{service:?}");
    }
    node.signal(libc::SIGTERM);
    // Within the drain delay: still answering, but no longer serving.
    wait_until("gRPC health to say NOT_SERVING", Duration::from_secs(3), || async {
        health(&node, "").await == Some(NOT_SERVING)
    })
    .await;
    for service in SERVICES {
        assert_eq!(health(&node, service).await, Some(NOT_SERVING), "{service:?}");
    }
    let ready = client().get(format!("{}/readyz", node.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready either");
    assert!(node.terminate().success());
}

#[tokio::test]
async fn reflection_lists_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &[]);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(node.channel())
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cart.CartActor",
            "control.ControlPlane",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ]
    );
}
