//! The live cluster dashboard (`/admin` on the internal listener) in
//! headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; scripts/test installs them), against a 3-node
//! cluster with mutual TLS and an internal token:
//! - the page asks for the token, refuses a wrong one, and then lists the
//!   three nodes;
//! - the cart inspector shows a cart and its event history, and mutations
//!   made through the other nodes appear in it without a reload;
//! - text a shopper chose (a pickup point's name) is shown as text: markup
//!   in it never runs;
//! - a node that leaves drops out of the members and shows in the changes.
//!
//! A screenshot of the page is left in the test's target directory
//! (`dashboard.png`) for a person to look at.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cart_testkit::certs::TestCa;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::{SKU_A, SKU_B, Server, client, wait_until};

const TOKEN: &str = "dashboard-token-0123456789";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Markup a shopper may send as a pickup point's name.
const MARKUP: &str = "<img src=x onerror=\"window.__pwned=1\">Depå";

/// A chromedriver process, killed with the test.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_driver() -> Driver {
    for tool in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url, _profile: tempfile::tempdir().unwrap() };
    let status = format!("{}/status", driver.url);
    wait_until("chromedriver", Duration::from_secs(20), || async {
        matches!(client().get(&status).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    driver
}

async fn browser(driver: &Driver) -> Client {
    let profile = format!("--user-data-dir={}", driver._profile.path().display());
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1100",
        profile.as_str(),
    ];
    let capabilities = json!({"goog:chromeOptions": {"binary": CHROMIUM, "args": args}});
    let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(capabilities).connect(&driver.url).await.unwrap()
}

/// A by-id request with the token; panics unless it succeeds.
async fn call(method: reqwest::Method, url: String, body: serde_json::Value) {
    let r = client().request(method, &url).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
}

async fn texts(page: &Client, css: &str) -> Vec<String> {
    let mut out = vec![];
    for element in page.find_all(Locator::Css(css)).await.unwrap_or_default() {
        out.push(element.text().await.unwrap_or_default());
    }
    out
}

/// Waits until the elements matching `css` have texts for which `check`
/// holds.
async fn wait_for(page: &Client, what: &str, css: &str, check: impl Fn(&[String]) -> bool) {
    wait_until(what, Duration::from_secs(20), || async { check(&texts(page, css).await) }).await;
}

async fn visible(page: &Client, css: &str) -> bool {
    match page.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

#[tokio::test]
async fn the_dashboard_shows_the_cluster_and_follows_a_cart_live() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_arg = ["--internal-token-file", token_file.to_str().unwrap()];
    let ca = TestCa::new("dashboard cluster");
    let data = dir.path().join("data");
    let a = Server::start_tls(&data, &ca, &token_arg);
    let b = Server::start_tls(&data, &ca, &[&token_arg[..], &["--peers", &a.node]].concat());
    let c = Server::start_tls(&data, &ca, &[&token_arg[..], &["--peers", &b.node]].concat());
    let mut hosts: Vec<String> = [&a, &b, &c].iter().map(|n| n.node.clone()).collect();
    hosts.sort();

    let driver = start_driver().await;
    let page = browser(&driver).await;
    page.goto(&format!("{}/admin", a.internal_url)).await.unwrap();

    // The token: a wrong one is refused, the right one opens the dashboard.
    wait_until("the token form", Duration::from_secs(20), || visible(&page, "#token")).await;
    page.find(Locator::Css("#token")).await.unwrap().send_keys("not-the-token-0123").await.unwrap();
    page.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
    wait_for(&page, "the refusal", "#login-error", |t| t.iter().any(|t| t.contains("refused")))
        .await;
    let field = page.find(Locator::Css("#token")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(TOKEN).await.unwrap();
    page.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();

    wait_for(&page, "the three nodes", "tr.member .host", |shown| {
        let mut shown = shown.to_vec();
        shown.sort();
        shown == hosts
    })
    .await;
    assert!(!visible(&page, "#login").await, "the token form is gone");

    // Gone on a reload: shows that what follows arrives live.
    page.execute("window.__loaded = 1", vec![]).await.unwrap();

    // A cart made through node b, inspected on node a's dashboard.
    let cart = "dashboard-cart-1";
    let items = |n: &Server| format!("{}/api/carts/{cart}/items", n.internal_url);
    call(reqwest::Method::POST, items(&b), json!({"sku": SKU_A, "quantity": 2})).await;
    page.find(Locator::Css("#cart-id")).await.unwrap().send_keys(cart).await.unwrap();
    page.find(Locator::Css("#inspect button")).await.unwrap().click().await.unwrap();
    wait_for(&page, "the cart's line", "tr.line .sku", |t| t == [SKU_A]).await;
    wait_for(&page, "its first event", ".timeline .type", |t| t == ["add_item"]).await;

    // Mutations through node c appear without a reload.
    call(reqwest::Method::POST, items(&c), json!({"sku": SKU_B, "quantity": 1})).await;
    let deliveries = format!("{}/api/carts/{cart}/deliveries", c.internal_url);
    call(reqwest::Method::POST, deliveries.clone(), json!({"provider": "postnord", "items": [1]}))
        .await;
    let pickup = json!({"id": "SE-1", "name": MARKUP});
    call(reqwest::Method::PUT, format!("{deliveries}/1/pickup-point"), pickup).await;
    wait_for(&page, "the second line", "tr.line .sku", |t| t == [SKU_A, SKU_B]).await;
    wait_for(&page, "the whole history, newest first", ".timeline .type", |t| {
        t == ["set_pickup_point", "set_delivery", "add_item", "add_item"]
    })
    .await;
    wait_for(&page, "the pickup point", ".pickup", |t| t.iter().any(|t| t.contains(MARKUP))).await;
    let ran = page.execute("return window.__pwned !== undefined", vec![]).await.unwrap();
    assert_eq!(ran, json!(false), "markup in a shopper's text never runs");
    assert!(page.find_all(Locator::Css("#cart img")).await.unwrap().is_empty());

    // The members' resident carts add up to what the nodes hold.
    wait_for(&page, "the resident carts", "#total-carts", |t| t == ["1"]).await;

    // A node that leaves drops out of the members and into the changes.
    let gone = c.node.clone();
    assert!(c.terminate().success());
    wait_for(&page, "two members", "tr.member .host", |t| t.len() == 2 && !t.contains(&gone)).await;
    wait_for(&page, "the change", ".changes li", |t| {
        t.first().is_some_and(|t| t.contains("closed") && t.contains(&gone))
    })
    .await;
    let loaded = page.execute("return window.__loaded === 1", vec![]).await.unwrap();
    assert_eq!(loaded, json!(true), "the page was never reloaded");

    let shot = page.screenshot().await.unwrap();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, shot).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
    page.close().await.unwrap();
}
