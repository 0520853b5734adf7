//! Mutual TLS between nodes: a TLS cluster routes as a plaintext one does,
//! and nothing on its gRPC ports answers a caller without a certificate
//! from the cluster CA. Certificates are made by the test.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cart_cluster::NodeAddr;
use cart_cluster::proto::cart::StateRequest;
use cart_cluster::proto::cart::cart_actor_client::CartActorClient;
use cart_cluster::proto::control::PingRequest;
use cart_cluster::proto::control::control_plane_client::ControlPlaneClient;
use cart_cluster::tls::{ClusterTls, TlsConnect};
use cart_grain::Carts;
use cart_testkit::certs::TestCa;
use support::{Harness, add, json, tls_files};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tonic::transport::{Channel, Endpoint};

const ALL: &[usize] = &[0, 1, 2];

fn endpoint(addr: &NodeAddr) -> Endpoint {
    Endpoint::from_shared(addr.grpc_uri()).unwrap().connect_timeout(Duration::from_secs(5))
}

/// A channel to `addr` presenting the certificate of `tls`.
fn channel_with(addr: &NodeAddr, tls: Arc<ClusterTls>) -> Channel {
    endpoint(addr).connect_with_connector_lazy(TlsConnect(tls))
}

/// Files for a caller holding a certificate from `issuer`, trusting `ca`.
fn caller(dir: &std::path::Path, issuer: &TestCa, ca: &TestCa) -> Arc<ClusterTls> {
    let files = issuer.write_node(dir, "caller");
    std::fs::write(&files.ca, ca.pem()).unwrap();
    ClusterTls::load(tls_files(files)).unwrap()
}

async fn pings(channel: Channel) -> Result<(), tonic::Status> {
    ControlPlaneClient::new(channel).ping(PingRequest::default()).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_routes_and_moves_carts_as_a_plaintext_one_does() {
    let mut h = Harness::start_tls(3, TestCa::new("cluster")).await;
    h.join(ALL);
    let cart = h.cart_owned_by(1, Some(2), ALL);
    for node in &h.nodes {
        node.cluster.carts().mutate(&cart, add(1)).await.unwrap();
    }
    let state = json(&h.nodes[2].cluster.carts().get(&cart).await.unwrap());
    assert_eq!(state["version"], 3);
    assert!(h.resident(1, &cart));
    // The owner stops: its peers' connections are refused and the cart
    // moves to the next node, over TLS.
    h.nodes[1].stop_serving().await;
    h.nodes[1].grains.flush().await.unwrap();
    h.outlast_leases();
    let state = json(&h.nodes[0].cluster.carts().mutate(&cart, add(1)).await.unwrap());
    assert_eq!(state["version"], 4);
    assert!(h.resident(2, &cart));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_certificate_from_the_cluster_ca_cannot_call_anything() {
    let ca = TestCa::new("cluster");
    let other = TestCa::new("someone else");
    let h = Harness::start_tls(1, ca).await;
    let ca = h.ca.as_ref().unwrap();
    let node = &h.nodes[0].addr;
    let dir = tempfile::tempdir().unwrap();

    // A member's certificate works.
    pings(channel_with(node, caller(&dir.path().join("member"), ca, ca))).await.unwrap();

    // Plaintext: not even the health service answers.
    let plain = endpoint(node).connect_lazy();
    assert!(pings(plain.clone()).await.is_err());
    let mut carts = CartActorClient::new(plain);
    let read = carts.get_state(StateRequest { cart_id: "c1".into(), forwarded: true }).await;
    assert!(read.is_err(), "plaintext GetState must fail: {read:?}");

    // A certificate from another CA (even one that trusts the cluster's).
    let outsider = caller(&dir.path().join("outsider"), &other, ca);
    assert!(pings(channel_with(node, outsider)).await.is_err());

    // TLS without a client certificate.
    let mut roots = RootCertStore::empty();
    roots.add(cart_ca_der(ca)).unwrap();
    let anonymous = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    assert!(pings(anonymous_channel(node, anonymous)).await.is_err());

    // A server with a certificate from another CA is refused by a member.
    let impostor = Harness::start_tls(1, TestCa::new("impostor")).await;
    let member = caller(&dir.path().join("member2"), ca, ca);
    assert!(pings(channel_with(&impostor.nodes[0].addr, member)).await.is_err());
}

fn cart_ca_der(ca: &TestCa) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap()
}

fn anonymous_channel(addr: &NodeAddr, mut config: ClientConfig) -> Channel {
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = addr.clone();
    endpoint(addr).connect_with_connector_lazy(tower::service_fn(move |_| {
        let (connector, target) = (connector.clone(), target.clone());
        async move {
            let tcp =
                tokio::net::TcpStream::connect((target.host.as_str(), target.grpc_port)).await?;
            let name = rustls::pki_types::ServerName::try_from("node").unwrap();
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_take_effect_without_a_restart() {
    let old = TestCa::new("cluster 2026");
    let h = Harness::start_tls(1, old).await;
    let node = &h.nodes[0];
    let old = h.ca.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(!node_tls_of(&h, 0).reload().unwrap(), "unchanged files are not a rotation");

    // Rotate the node's files to a new CA, as a renewed Secret would.
    let new = TestCa::new("cluster 2027");
    let certs = h.dir.path().join(format!("certs-{}", node.addr.grpc_port));
    new.write_node(&certs, "node");
    let new_caller = caller(&dir.path().join("new"), &new, &new);
    let old_caller = caller(&dir.path().join("old"), old, old);
    pings(channel_with(&node.addr, Arc::clone(&old_caller))).await.unwrap();

    // The node has not looked yet; its reload picks the new files up.
    let reloaded = node_tls_of(&h, 0).reload().unwrap();
    assert!(reloaded, "changed files are reloaded");
    pings(channel_with(&node.addr, new_caller)).await.unwrap();
    assert!(
        pings(channel_with(&node.addr, old_caller)).await.is_err(),
        "the old CA no longer opens new connections"
    );

    // A rotation that does not parse keeps the working configuration.
    std::fs::write(certs.join("tls.key"), "not a key").unwrap();
    assert!(node_tls_of(&h, 0).reload().is_err());
    let again = caller(&dir.path().join("again"), &new, &new);
    pings(channel_with(&node.addr, again)).await.unwrap();
}

fn node_tls_of(h: &Harness, i: usize) -> Arc<ClusterTls> {
    h.nodes[i].tls.clone().expect("a TLS node")
}
