//! What the node's JSON logs say when things fail: one JSON object per line
//! with each key once, fatal errors included, and a failed request names its
//! cart, what it asked and why it failed.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{SKU_A, Server, assert_json_lines, client, log_lines, wait_until};

#[test]
fn a_fatal_error_is_logged_in_the_configured_format() {
    let dir = tempfile::tempdir().unwrap();
    // A data directory that is a file: the store cannot open.
    let data = dir.path().join("not-a-directory");
    std::fs::write(&data, "x").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-actor"))
        .args(["serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0"])
        .args(["--log-format", "json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_json_lines(&lines);
    let fatal = log_lines(&lines, "cart-actor stopped on an error");
    assert_eq!(fatal.len(), 1, "{stdout}");
    assert_eq!(fatal[0]["level"], "ERROR");
    let error = fatal[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("not-a-directory"), "says which path: {error}");
    assert!(out.stderr.is_empty(), "nothing outside the log format: {:?}", out.stderr);
}

#[tokio::test]
async fn a_failed_request_logs_its_cart_mutation_and_reason() {
    let catalog = support::unreachable_catalog();
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start(dir.path(), &["--catalog", &catalog, "--catalog-timeout", "200ms"]);
    let r = client()
        .post(format!("{}/api/carts/logged-cart/items", node.internal_url))
        .json(&json!({"sku": SKU_A, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let status = r.status().as_u16();
    wait_until("the failure to be logged", Duration::from_secs(5), || async {
        !log_lines(&node.logs(), "request failed").is_empty()
    })
    .await;
    let lines = node.logs();
    assert_json_lines(&lines);
    let line = &log_lines(&lines, "request failed")[0];
    assert_eq!(line["cart"], "logged-cart", "{line}");
    assert_eq!(line["mutation_types"], "add_item", "{line}");
    assert_eq!(line["status"], status, "{line}");
    let reason = line["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("catalog") || reason.contains("catalogue"), "{line}");
}
