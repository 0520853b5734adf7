//! Attacks on real processes, each of which must be refused: what someone
//! on the network could try against the gRPC ports and the HTTP faces.

mod support;

use std::time::Duration;

use cart_cluster::proto::control::control_plane_client::ControlPlaneClient;
use cart_cluster::proto::control::{Empty, PingRequest};
use cart_testkit::certs::TestCa;
use support::Server;

/// What a run printed, standard output (where the logger writes, fatal
/// errors included) and error together.
fn said(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn serve(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cart-actor"))
        .arg("serve")
        .args(["--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A node that starts would run until told to stop; one that refuses
    // exits at once. Give it the time a start takes, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn grpc_ports_beyond_loopback_without_tls_refuse_to_start() {
    let out = serve(&["--grpc-addr", "0.0.0.0:0", "--control-addr", "127.0.0.1:0"]);
    let output = said(&out);
    assert!(!out.status.success());
    for flag in
        ["--cluster-tls-cert", "--cluster-tls-key", "--cluster-tls-ca", "--insecure-cluster"]
    {
        assert!(output.contains(flag), "the refusal names {flag}: {output}");
    }
    assert!(output.contains("0.0.0.0"), "{output}");
}

#[tokio::test]
async fn insecure_cluster_starts_but_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(
        dir.path(),
        &["--grpc-addr", "0.0.0.0:0", "--control-addr", "0.0.0.0:0", "--insecure-cluster"],
    );
    let warned = node.logs().iter().any(|l| l.contains("WARN") && l.contains("--insecure-cluster"));
    assert!(warned, "a warning at start: {:?}", node.logs());
}

#[test]
fn half_a_tls_configuration_is_refused() {
    let out = serve(&["--cluster-tls-cert", "/nonexistent/tls.crt"]);
    let output = said(&out);
    assert!(!out.status.success());
    assert!(
        output.contains("--cluster-tls-key") && output.contains("--cluster-tls-ca"),
        "{output}"
    );
}

#[tokio::test]
async fn a_tls_node_answers_no_plaintext_or_foreign_caller() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster");
    let node = Server::start_tls(&dir.path().join("data"), &ca, &[]);
    ControlPlaneClient::new(node.channel())
        .ping(PingRequest::default())
        .await
        .expect("a member may call");

    let plain = tonic::transport::Endpoint::from_shared(node.grpc_url.clone())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    assert!(ControlPlaneClient::new(plain).ping(PingRequest::default()).await.is_err());

    let mut stranger = Server::start(&dir.path().join("other"), &[]);
    let foreign = TestCa::new("someone else");
    stranger.tls = Some(foreign.write_node(&dir.path().join("foreign"), "stranger"));
    stranger.grpc_url.clone_from(&node.grpc_url);
    assert!(
        ControlPlaneClient::new(stranger.channel()).ping(PingRequest::default()).await.is_err()
    );
}

#[tokio::test]
async fn internal_routes_are_not_on_the_public_port_and_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "internal-secret-0123456789\n").unwrap();
    let node = Server::start(
        &dir.path().join("data"),
        &["--internal-token-file", token_file.to_str().unwrap()],
    );
    let http = support::client();
    let status = |r: reqwest::Response| r.status().as_u16();
    // Create a cart through the trusted face.
    let created = http
        .post(format!("{}/api/carts/t1/items", node.internal_url))
        .bearer_auth("internal-secret-0123456789")
        .json(&serde_json::json!({"sku": support::SKU_A}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(created), 200);
    let guarded = [
        "/api/carts/t1",
        "/api/carts/t1/events",
        "/api/carts/t1/history",
        "/metrics",
        "/api/cluster",
        "/api/cluster/stream",
    ];
    for path in guarded {
        let on_public = http.get(format!("{}{path}", node.url)).send().await.unwrap();
        assert_eq!(status(on_public), 404, "{path} on the public port");
        let anonymous = http.get(format!("{}{path}", node.internal_url)).send().await.unwrap();
        assert_eq!(status(anonymous), 401, "{path} without the token");
        let wrong = http
            .get(format!("{}{path}", node.internal_url))
            .bearer_auth("internal-secret-012345678")
            .send()
            .await
            .unwrap();
        assert_eq!(status(wrong), 401, "{path} with a wrong token");
    }
    let write = http
        .post(format!("{}/api/carts/t1/items", node.url))
        .json(&serde_json::json!({"sku": support::SKU_A}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(write), 404, "no by-id writes on the public port");
    // The dashboard's page holds no data: served without the token, under a
    // policy that forbids inline code; only there, and only for GET.
    for path in ["/admin", "/admin/app.js", "/admin/app.css"] {
        let page = http.get(format!("{}{path}", node.internal_url)).send().await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
        assert_eq!(status(http.get(format!("{}{path}", node.url)).send().await.unwrap()), 404);
        let post = http.post(format!("{}{path}", node.internal_url)).send().await.unwrap();
        assert_eq!(status(post), 401, "POST {path} without the token");
    }
    for beside in ["/admin/", "/admin/app.js/x", "/admin/x"] {
        let r = http.get(format!("{}{beside}", node.internal_url)).send().await.unwrap();
        assert_eq!(status(r), 401, "{beside}: only the page's own paths go without the token");
    }
    let read = http
        .get(format!("{}/api/carts/t1", node.internal_url))
        .bearer_auth("internal-secret-0123456789")
        .send()
        .await
        .unwrap();
    let cart: serde_json::Value = read.json().await.unwrap();
    assert_eq!(cart["version"], 1, "only the authorised write applied");
    assert_eq!(status(http.get(format!("{}/readyz", node.url)).send().await.unwrap()), 200);
}

#[test]
fn a_short_internal_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "short").unwrap();
    let out = serve(&["--internal-token-file", token.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(said(&out).contains("at least 16"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_ids_are_minted_and_recognised_by_every_node_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca = TestCa::new("cluster");
    let a = Server::start_tls(&data, &ca, &[]);
    let b = Server::start_tls(&data, &ca, &["--peers", &a.node]);
    let http = support::client();
    let add = |url: String, cookie: Option<String>| {
        let mut r = http.post(url).json(&serde_json::json!({"sku": support::SKU_A}));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    // Chosen ids are ignored: each gets a fresh cart and cookie.
    for chosen in ["cartid=anything", "cartid=f3", "cartid=AAAAAAAAAAAAAAAAAAAAAA"] {
        let r = add(format!("{}/cart/", a.url), Some(chosen.into())).await.unwrap();
        assert_eq!(r.status(), 200);
        let minted = support::cart_cookie(&r).expect("a new cookie");
        assert_ne!(format!("cartid={minted}"), chosen);
        let cart: serde_json::Value = r.json().await.unwrap();
        assert_eq!(cart["id"], minted.as_str(), "the cookie is the cart's id");
        assert_eq!(cart["version"], 1, "a new cart");
    }
    let r = add(format!("{}/cart/", a.url), None).await.unwrap();
    let cookie = format!("cartid={}", support::cart_cookie(&r).unwrap());
    // Node B knows node A's ids: the key is in the shared store.
    let on_b = http.get(format!("{}/cart/", b.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(on_b.status(), 200);
    let r = add(format!("{}/cart/", b.url), Some(cookie.clone())).await.unwrap();
    assert!(support::cart_cookie(&r).is_none(), "the cart goes on, no new cookie");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["version"], 2);
    // And after a restart of both.
    drop(b);
    let (data, _) = a.kill();
    let again = Server::start(&data, &[]);
    let read =
        http.get(format!("{}/cart/", again.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<serde_json::Value>().await.unwrap()["version"], 2);
}

/// Reads until the peer closes or `within` passes; returns what arrived
/// and whether the connection was closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn slow_heads_slow_bodies_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--header-timeout", "1s", "--body-timeout", "1s"]);
    let addr = addr_of(&node.url);
    let started = std::time::Instant::now();

    // Half a request head, then nothing (slowloris).
    let mut slow_head = TcpStream::connect(&addr).await.unwrap();
    slow_head.write_all(b"GET /cart/ HTTP/1.1\r\nHost: x\r\nX-Wait").await.unwrap();
    // A head, then half the body it announced.
    let mut slow_body = TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(b"POST /cart/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"sku\":")
        .await
        .unwrap();
    // A whole request, then an idle keep-alive connection.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(&addr).await.unwrap();

    let within = Duration::from_secs(8);
    let (_, closed) = read_until_closed(&mut slow_head, within).await;
    assert!(closed, "a slow head is cut off");
    let (answer, closed) = read_until_closed(&mut slow_body, within).await;
    assert!(closed, "a slow body is cut off");
    assert!(!answer.contains(" 500 "), "a slow body is never a 500: {answer}");
    let (answer, closed) = read_until_closed(&mut idle, within).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection is closed");
    let (_, closed) = read_until_closed(&mut silent, within).await;
    assert!(closed, "a connection that never speaks is closed");
    assert!(started.elapsed() < Duration::from_secs(8));
    // The service is fine.
    let ok = support::client().get(format!("{}/healthz", node.url)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503_and_closed() {
    use tokio::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--max-connections", "3", "--header-timeout", "60s"]);
    let addr = addr_of(&node.url);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The cap is per accepted connection: wait until the server holds all
    // three (a fourth is refused), polling.
    let mut refused = String::new();
    for _ in 0..100 {
        let mut extra = TcpStream::connect(&addr).await.unwrap();
        let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(2)).await;
        if closed && answer.starts_with("HTTP/1.1 503") {
            refused = answer;
            break;
        }
    }
    assert!(refused.contains("Retry-After: 1"), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");
    drop(held);
    support::wait_until("a freed slot serves again", Duration::from_secs(10), || async {
        let r = support::client().get(format!("{}/healthz", node.url)).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn a_live_cart_stream_outlives_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--header-timeout", "1s"]);
    let cookie = support::new_shopper(&node).await;
    let mut stream = tokio::net::TcpStream::connect(addr_of(&node.url)).await.unwrap();
    let head = format!("GET /cart/events HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let (first, closed) = read_until_closed(&mut stream, Duration::from_millis(500)).await;
    assert!(!closed && first.contains("id: 1"), "{first}");
    // Longer than the header timeout: the stream is a response, not a head.
    let (_, closed) = read_until_closed(&mut stream, Duration::from_millis(2500)).await;
    assert!(!closed, "the stream stays open");
    support::client()
        .post(format!("{}/cart/", node.url))
        .header("cookie", &cookie)
        .json(&serde_json::json!({"sku": support::SKU_A}))
        .send()
        .await
        .unwrap();
    let (next, _) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
    assert!(next.contains("id: 2"), "{next}");
}

#[test]
fn help_never_shows_secrets_from_the_environment() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-actor"))
        .args(["serve", "--help"])
        .env("CART_STORE", "postgres://carts:db-hunter2@db:5432/carts")
        .env("KLARNA_PASSWORD", "klarna-hunter2")
        .env("KLARNA_USERNAME", "merchant-hunter2")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("--store-password-file"), "{help}");
    assert!(!help.contains("hunter2"), "a secret shows in --help");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_can_come_from_a_file() {
    let db = tokio::task::spawn_blocking(|| {
        cart_testkit::PgServer::start_with(cart_testkit::PgSetup {
            password: Some("file-kept-password"),
            ..cart_testkit::PgSetup::default()
        })
        .unwrap()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pgpass");
    std::fs::write(&password, "file-kept-password\n").unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", db.port);
    let node = Server::start(
        &dir.path().join("data"),
        &["--store", &url, "--store-password-file", password.to_str().unwrap()],
    );
    let r = support::client()
        .post(format!("{}/cart/", node.url))
        .json(&serde_json::json!({"sku": support::SKU_A}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(node.logs().iter().all(|l| !l.contains("file-kept-password")), "no secret in the logs");
    // Without the file the node cannot open the store, and says why.
    let out = serve(&["--store", &url]);
    assert!(!out.status.success());
    let output = said(&out);
    assert!(output.contains("PostgreSQL") && !output.contains("file-kept-password"), "{output}");
}

/// Each of the Why section's gRPC attacks, from a caller that reaches the
/// ports but holds no certificate of the cluster (plaintext, and TLS with
/// another CA's certificate): none of them does anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_control_and_cart_calls_from_outside_the_cluster_do_nothing() {
    use cart_cluster::proto::cart::cart_actor_client::CartActorClient;
    use cart_cluster::proto::cart::{MutationRequest, MutationType};
    use cart_cluster::proto::control::{ClosingNotice, NegotiateRequest, OwnerChangeRequest};
    use cart_domain::proto::AddItem;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster");
    let a = Server::start_tls(&dir.path().join("data"), &ca, &[]);
    let b = Server::start_tls(&dir.path().join("data"), &ca, &["--peers", &a.node]);
    support::wait_until("the two nodes see each other", Duration::from_secs(15), || async {
        let r = support::client().get(format!("{}/api/cluster", a.internal_url)).send().await;
        match r {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["members"].as_array().is_some_and(|m| m.len() == 2)),
            Err(_) => false,
        }
    })
    .await;
    let plain = tonic::transport::Endpoint::from_shared(a.grpc_url.clone())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut outsider = Server::start(&dir.path().join("outside"), &[]);
    outsider.tls = Some(TestCa::new("attacker").write_node(&dir.path().join("attacker"), "evil"));
    outsider.grpc_url.clone_from(&a.grpc_url);
    let foreign = outsider.channel();

    let cheap = AddItem {
        sku: "861200".into(),
        price: 1,
        quantity: 100,
        currency: "SEK".into(),
        country: "se".into(),
        ..Default::default()
    };
    for channel in [plain, foreign] {
        let mut control = ControlPlaneClient::new(channel.clone());
        assert!(
            control.closing(ClosingNotice { host: b.node.clone(), incarnation: 0 }).await.is_err(),
            "forged Closing"
        );
        let forged_owner =
            OwnerChangeRequest { cart_id: "c1".into(), new_host: "10.66.6.6:1337:1338".into() };
        assert!(control.confirm_owner(forged_owner).await.is_err(), "forged ConfirmOwner");
        let flood: Vec<String> =
            (0..3000).map(|i| format!("10.9.{}.{}", i / 250, i % 250)).collect();
        assert!(
            control.negotiate(NegotiateRequest { known_hosts: flood }).await.is_err(),
            "Negotiate flood"
        );
        assert!(control.get_cart_ids(Empty {}).await.is_err(), "GetCartIds");
        let mut carts = CartActorClient::new(channel);
        let paid = MutationRequest {
            cart_id: "stolen-1".into(),
            r#type: MutationType::MutationAddItem as i32,
            payload: cheap.encode_to_vec(),
            forwarded: true,
            ..Default::default()
        };
        assert!(carts.mutate(paid).await.is_err(), "a line at a price of the caller's choosing");
    }
    // Nothing changed: both still members, no cart, no stranger in the view.
    let members = support::member_hosts(&a).await;
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.contains(&b.node));
    assert!(support::read(&a, "stolen-1").await.is_none(), "no cart was made");
}
