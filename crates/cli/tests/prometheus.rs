//! The shipped monitoring against the real thing: Debian's Prometheus
//! scrapes a 3-node cluster with the alert rules of `deploy/prometheus`
//! loaded (`promtool` checks them first), every rule evaluates without
//! error, and every query of the Grafana dashboard in `deploy/grafana`
//! returns data.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cart_testkit::certs::TestCa;
use serde_json::{Value, json};
use support::{SKU_A, Server, client, wait_until};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

/// A command from Debian's `prometheus` package (scripts/test installs it).
fn tool(name: &str) -> Command {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{name} is missing: install Debian's prometheus package (scripts/test does)"
    );
    Command::new(path)
}

/// A running Prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = deploy("prometheus/alerts.yml").canonicalize().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: cart-actor\n    static_configs:\n      - targets: {}\n",
            rules.display(),
            serde_json::to_string(targets).unwrap()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let checked =
            tool("promtool").arg("check").arg("config").arg(&config_path).output().unwrap();
        assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = tool("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// The result of an instant query, or why there is none.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", expr)],
        )
        .map_err(|e| e.to_string())?;
        let answer: Value = client()
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(format!("{answer}"));
        }
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_a_cluster_evaluates_the_rules_and_answers_every_dashboard_query() {
    let rules = deploy("prometheus/alerts.yml");
    let checked = tool("promtool").arg("check").arg("rules").arg(&rules).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("monitored cluster");
    let a = Server::start_tls(dir.path(), &ca, &[]);
    let b = Server::start_tls(dir.path(), &ca, &["--peers", &a.node]);
    let c = Server::start_tls(dir.path(), &ca, &["--peers", &b.node]);
    let nodes = [a, b, c];
    let targets: Vec<String> =
        nodes.iter().map(|n| n.internal_url.trim_start_matches("http://").to_owned()).collect();
    let prometheus = Prometheus::start(&targets);
    wait_until("Prometheus to be ready", Duration::from_secs(20), || async {
        client()
            .get(format!("{}/-/ready", prometheus.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    // Traffic through every node, so rates have something to show.
    let http = client();
    for round in 0..3 {
        for (i, node) in nodes.iter().enumerate() {
            let _ = http
                .post(format!("{}/api/carts/monitored-{i}-{round}/items", node.internal_url))
                .json(&json!({"sku": SKU_A, "quantity": 1}))
                .send()
                .await;
        }
    }
    // Every node scraped, often enough for one-minute rates.
    wait_until("three targets scraped several times", Duration::from_secs(30), || async {
        prometheus
            .query("count(count_over_time(up{job=\"cart-actor\"}[1m]) >= 4) == 3")
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await;
    let up = prometheus.query("up{job=\"cart-actor\"} == 1").await.unwrap();
    assert_eq!(up.len(), 3, "{up:?}");

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/cart-actor.json")).unwrap())
            .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let mut empty = Vec::new();
    for expr in &exprs {
        match prometheus.query(expr).await {
            Ok(result) if !result.is_empty() => {}
            other => empty.push(format!("{expr}: {other:?}")),
        }
    }
    assert!(empty.is_empty(), "dashboard queries without data:\n{}", empty.join("\n"));

    // Every rule has been evaluated, and none failed.
    let rules_of = || async {
        let answer: Value = client()
            .get(format!("{}/api/v1/rules", prometheus.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect::<Vec<Value>>()
    };
    wait_until("every rule to be evaluated", Duration::from_secs(10), || async {
        let rules = rules_of().await;
        !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")
    })
    .await;
    let rules = rules_of().await;
    assert_eq!(rules.len(), 9, "all the rules loaded");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // A healthy cluster fires nothing but what its short life explains.
    let firing: Vec<&Value> = rules.iter().filter(|r| r["state"] == "firing").collect();
    assert!(firing.is_empty(), "alerts firing on a healthy cluster: {firing:?}");
}
