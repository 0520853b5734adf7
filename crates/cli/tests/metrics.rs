//! `/metrics` as Prometheus scrapes it: every family the crates define has
//! its HELP and TYPE and is exported from the start (zero where nothing
//! happened), nothing is exported that no catalogue defines, and requests,
//! failures and process figures are counted.

mod support;

use cart_metrics::{Family, Kind};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use support::{SKU_A, Server, client};

fn catalogue() -> Vec<Family> {
    [
        cart_store::families::FAMILIES,
        cart_grain::families::FAMILIES,
        cart_cluster::families::FAMILIES,
        cart_http::families::FAMILIES,
        cart_checkout::families::FAMILIES,
    ]
    .concat()
}

/// The binary's own families (its catalogue is not a library).
const BINARY_FAMILIES: [&str; 2] = ["cart_startup_duration_seconds", "cart_build_info"];

/// What one scrape says: HELP and TYPE per family, and the sample lines.
struct Scrape {
    help: HashMap<String, String>,
    kind: HashMap<String, String>,
    samples: Vec<String>,
}

impl Scrape {
    async fn of(node: &Server) -> Scrape {
        let text = support::metrics(node).await;
        let mut scrape = Scrape { help: HashMap::new(), kind: HashMap::new(), samples: vec![] };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                scrape.help.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                scrape.kind.insert(name.to_owned(), kind.to_owned());
            } else if !line.is_empty() {
                scrape.samples.push(line.to_owned());
            }
        }
        scrape
    }

    /// The value of the sample `series` (name and labels as exported).
    fn value(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Whether any sample belongs to family `name`.
    fn has_samples(&self, name: &str) -> bool {
        self.samples.iter().any(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.chars().next())
                .is_some_and(|c| c == ' ' || c == '{' || c == '_')
        })
    }
}

#[tokio::test]
async fn every_family_has_help_and_is_exported_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &[]);
    // One request first: the HTTP request families appear with it.
    let _ = Scrape::of(&node).await;
    let scrape = Scrape::of(&node).await;
    for family in catalogue() {
        let name = family.name;
        let help = scrape.help.get(name).map(String::as_str).unwrap_or_default();
        assert_eq!(help, family.help, "HELP of {name}");
        let bucketed = name.ends_with("duration_seconds") || name.ends_with("batch_size");
        let kind = scrape.kind.get(name).map(String::as_str);
        assert_eq!(kind, Some(family.kind.prometheus_type(bucketed)), "TYPE of {name}");
        assert!(scrape.has_samples(name), "{name} exported from the start");
        for labels in family.label_sets() {
            if family.kind == Kind::Histogram {
                continue;
            }
            let rendered: Vec<String> =
                labels.iter().map(|l| format!("{}=\"{}\"", l.key(), l.value())).collect();
            let series = match rendered.is_empty() {
                true => name.to_owned(),
                false => format!("{name}{{{}}}", rendered.join(",")),
            };
            assert!(scrape.value(&series).is_some(), "{series} exported from the start");
        }
    }
    for name in BINARY_FAMILIES {
        assert!(scrape.help.contains_key(name) && scrape.has_samples(name), "{name}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(scrape.value(&format!("cart_build_info{{version=\"{version}\"}}")), Some(1.0));
    assert_eq!(scrape.value("cart_store_healthy"), Some(1.0));
    let rss = scrape.value("process_resident_memory_bytes").unwrap_or(0.0);
    assert!(rss > 1e6, "process metrics: RSS {rss}");
    assert!(scrape.has_samples("process_cpu_seconds_total"));
    // Nothing of ours is exported that no catalogue defines.
    let defined: HashSet<&str> =
        catalogue().iter().map(|f| f.name).chain(BINARY_FAMILIES).collect();
    for name in scrape.kind.keys().filter(|n| n.starts_with("cart_")) {
        assert!(defined.contains(name.as_str()), "{name} is in no catalogue");
    }
    for name in scrape.kind.keys() {
        assert!(scrape.help.contains_key(name), "{name} has no HELP");
    }
}

#[tokio::test]
async fn requests_and_failures_are_counted_by_route_status_and_reason() {
    let catalog = support::unreachable_catalog();
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--catalog", &catalog, "--catalog-timeout", "200ms"]);
    let http = client();
    let r = http
        .post(format!("{}/api/carts/counted/items", node.internal_url))
        .json(&json!({"sku": SKU_A, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = http.get(format!("{}/no/such/route", node.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{}/api/carts/counted", node.internal_url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let scrape = Scrape::of(&node).await;
    let value = |series: &str| scrape.value(series).unwrap_or(0.0);
    assert_eq!(value("cart_http_failures_total{reason=\"unavailable\"}"), 1.0);
    assert_eq!(
        value("cart_http_requests_total{route=\"/api/carts/{id}/items\",status=\"503\"}"),
        1.0
    );
    assert_eq!(value("cart_http_requests_total{route=\"/api/carts/{id}\",status=\"404\"}"), 1.0);
    assert_eq!(value("cart_http_requests_total{route=\"unmatched\",status=\"404\"}"), 1.0);
    assert!(
        value("cart_http_request_duration_seconds_count{route=\"/api/carts/{id}/items\"}") >= 1.0
    );
    // The path a client sent never becomes a label.
    assert!(!scrape.samples.iter().any(|l| l.contains("no/such") || l.contains("counted")));
}
