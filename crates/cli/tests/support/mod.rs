//! Test support: real `cart-actor` processes on ephemeral ports, and a fake
//! Klarna.
#![allow(dead_code)]

pub mod checker;
pub mod klarna;
pub mod load;
pub mod net;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cart_cluster::tls::{ClusterTls, TlsConnect, TlsFiles};
use cart_testkit::certs::{NodeFiles, TestCa};

/// A running `cart-actor serve` child process.
pub struct Server {
    child: Child,
    /// Base URL of the public listener, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Base URL of the internal listener (carts by id, metrics, cluster).
    pub internal_url: String,
    /// The node's cluster address, `127.0.0.1:<grpc>:<control>`.
    pub node: String,
    /// The CartActor gRPC endpoint, `http://127.0.0.1:<grpc>`.
    pub grpc_url: String,
    /// Its cluster TLS files, when it talks mutual TLS to its peers.
    pub tls: Option<NodeFiles>,
    /// The directory holding `tls`, removed with the server.
    _certs: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    extra: Vec<String>,
    logs: mpsc::Receiver<String>,
    startup_logs: std::sync::Mutex<Vec<String>>,
}

/// How long a server may take to start.
const START_DEADLINE: Duration = Duration::from_secs(20);

impl Server {
    /// Starts a cluster node on `data_dir` that talks mutual TLS with a
    /// certificate from `ca` (written next to the data directory).
    pub fn start_tls(data_dir: &Path, ca: &TestCa, extra: &[&str]) -> Server {
        Self::start_tls_at(None, "127.0.0.1", data_dir, ca, extra)
    }

    /// [`Server::start_tls`] inside network namespace `netns`, on `host`.
    pub fn start_tls_at(
        netns: Option<&str>,
        host: &str,
        data_dir: &Path,
        ca: &TestCa,
        extra: &[&str],
    ) -> Server {
        let certs = tempfile::Builder::new()
            .prefix("certs-")
            .tempdir_in(data_dir.parent().unwrap_or(data_dir))
            .expect("cert dir");
        let files = ca.write_node(certs.path(), "node");
        let mut args: Vec<String> = vec![
            "--cluster-tls-cert".into(),
            files.cert.display().to_string(),
            "--cluster-tls-key".into(),
            files.key.display().to_string(),
            "--cluster-tls-ca".into(),
            files.ca.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = Server::start_at(netns, host, data_dir, &args);
        server.tls = Some(files);
        server._certs = Some(certs);
        server
    }

    /// A gRPC channel to the node, over its cluster TLS when it has one
    /// (presenting a certificate from the same CA).
    pub fn channel(&self) -> tonic::transport::Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(self.grpc_url.clone())
            .expect("grpc url")
            .timeout(Duration::from_secs(10));
        match &self.tls {
            Some(files) => {
                let files = TlsFiles {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    ca: files.ca.clone(),
                };
                let tls = ClusterTls::load(files).expect("test TLS files");
                endpoint.connect_with_connector_lazy(TlsConnect(tls))
            }
            None => endpoint.connect_lazy(),
        }
    }

    /// Starts a server on `data_dir` with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_at(None, "127.0.0.1", data_dir, extra)
    }

    /// Starts a server inside network namespace `netns` (when given),
    /// listening and advertising on `host`.
    pub fn start_at(netns: Option<&str>, host: &str, data_dir: &Path, extra: &[&str]) -> Server {
        Self::spawn(netns, host, data_dir, extra, &[])
    }

    /// Starts a server on loopback with `env` added to its environment.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(None, "127.0.0.1", data_dir, extra, env)
    }

    fn spawn(
        netns: Option<&str>,
        host: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let binary = env!("CARGO_BIN_EXE_cart-actor");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, binary]);
                c
            }
            None => Command::new(binary),
        };
        let any = format!("{host}:0");
        let mut child = command
            .envs(env.iter().copied())
            .arg("serve")
            .args(["--http-addr", &any, "--log-format", "json"])
            .args(["--internal-addr", &any])
            .args(if extra.contains(&"--grpc-addr") {
                vec![]
            } else {
                vec![
                    "--grpc-addr".to_owned(),
                    any.clone(),
                    "--control-addr".to_owned(),
                    any.clone(),
                ]
            })
            .args(["--advertise-host", host])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cart-actor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let mut startup_logs = Vec::new();
        let (addr, internal, node, grpc) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = logs.recv_timeout(left).expect("server did not report its address in time");
            startup_logs.push(line.clone());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
            {
                let field = |k: &str| v[k].as_str().expect(k).to_owned();
                break (
                    field("http_addr"),
                    field("internal_addr"),
                    field("node"),
                    field("grpc_addr"),
                );
            }
        };
        Server {
            child,
            url: format!("http://{addr}"),
            internal_url: format!("http://{internal}"),
            node,
            grpc_url: format!("http://{grpc}"),
            tls: None,
            _certs: None,
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            logs,
            startup_logs: std::sync::Mutex::new(startup_logs),
        }
    }

    /// The URL of `path` on the listener that serves it: `/api/...` and
    /// `/metrics` on the internal one, the rest on the public one.
    pub fn url_of(&self, path: &str) -> String {
        let internal = path.starts_with("/api/") || path.starts_with("/metrics");
        format!("{}{path}", if internal { &self.internal_url } else { &self.url })
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGKILLs the process and waits for it.
    pub fn kill(mut self) -> (PathBuf, Vec<String>) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        (self.data_dir.clone(), self.extra.clone())
    }

    /// SIGTERMs the process and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines printed so far.
    pub fn logs(&self) -> Vec<String> {
        let mut all = self.startup_logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.extend(self.logs.try_iter());
        all.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cart id that `owner` (index into `nodes`) owns by rendezvous placement.
pub fn cart_owned_by(nodes: &[Server], owner: usize, prefix: &str) -> String {
    use cart_cluster::NodeAddr;
    let addrs: Vec<NodeAddr> = nodes.iter().map(|n| n.node.parse().unwrap()).collect();
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| cart_cluster::placement::owner(id, &addrs, &[]) == Some(&addrs[owner]))
        .unwrap()
}

/// An HTTP client without connection reuse surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

/// The `cartid` value of a `Set-Cookie` header, if the response set one.
pub fn cart_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("cartid="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// A shopper's new cart through the storefront (one unit of [`SKU_A`]): its
/// `Cookie` header, `cartid=<minted id>`.
pub async fn new_shopper(server: &Server) -> String {
    let r = client()
        .post(format!("{}/cart/", server.url))
        .body(serde_json::json!({"sku": SKU_A}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    format!("cartid={}", cart_cookie(&r).expect("a minted cookie"))
}

/// The hosts in `server`'s member view, sorted (none when it does not
/// answer).
pub async fn member_hosts(server: &Server) -> Vec<String> {
    let Ok(r) = client().get(format!("{}/api/cluster", server.internal_url)).send().await else {
        return vec![];
    };
    let Ok(v) = r.json::<serde_json::Value>().await else { return vec![] };
    let mut hosts: Vec<String> = v["members"]
        .as_array()
        .map(|a| a.iter().map(|m| m["host"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    hosts.sort();
    hosts
}

/// Polls `check` until it holds, failing the test after `within`; returns
/// how long it took.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A node's `/metrics` text.
pub async fn metrics(server: &Server) -> String {
    let r = client().get(format!("{}/metrics", server.internal_url)).send().await;
    r.expect("metrics").text().await.expect("metrics text")
}

/// A cart by id through the service face, if it exists.
pub async fn read(server: &Server, cart: &str) -> Option<serde_json::Value> {
    let r = client().get(format!("{}/api/carts/{cart}", server.internal_url)).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// Total quantity over a cart's lines.
pub fn qty(cart: &serde_json::Value) -> u64 {
    cart["items"]
        .as_array()
        .map_or(0, |items| items.iter().map(|l| l["qty"].as_u64().unwrap_or(0)).sum())
}

/// A SKU from the shipped sample catalogue.
pub const SKU_A: &str = "861200";
/// Another SKU from the sample catalogue.
pub const SKU_B: &str = "861217";
/// A third SKU from the sample catalogue.
pub const SKU_C: &str = "861234";

/// Asserts that every line is a JSON object naming each key once (a log
/// collector keeps only one of two equal keys).
pub fn assert_json_lines(lines: &[String]) {
    for line in lines {
        if let Err(e) = serde_json::from_str::<UniqueKeys>(line) {
            panic!("not a JSON object with unique keys ({e}): {line}");
        }
    }
}

/// A JSON object whose keys, checked while parsing, are all different.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<serde::de::IgnoredAny>()?;
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("the key {key:?} appears twice")));
            }
        }
        Ok(UniqueKeys)
    }
}

/// The JSON log lines of `lines` whose message is `message`.
pub fn log_lines(lines: &[String], message: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

/// `--catalog` pointing where nothing listens: every lookup fails (503).
pub fn unreachable_catalog() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    format!("http://{closed}")
}
