//! A fake Klarna Checkout v3 / Order Management API for the tests: the
//! endpoints cart-actor uses, enforcing the documented rules (basic auth,
//! JSON content type, required fields, line sums and the tax formula within
//! ±1, push URL distinct from checkout and confirmation, read-only after
//! completion, 404 for unknown or expired orders, `Klarna-Idempotency-Key`
//! on Order Management calls: a repeated key replays the first answer and
//! does nothing again).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Credentials the fake accepts.
pub const USER: &str = "PK_test_merchant";
/// See [`USER`].
pub const PASSWORD: &str = "s3cret";

#[derive(Default)]
struct Order {
    json: Value,
    complete: bool,
    expired: bool,
    cancelled: bool,
}

/// Handle on a running fake.
#[derive(Clone, Default)]
pub struct FakeKlarna {
    orders: Arc<Mutex<HashMap<String, Order>>>,
    /// Orders created.
    pub creates: Arc<AtomicUsize>,
    /// Orders updated.
    pub updates: Arc<AtomicUsize>,
    /// Orders acknowledged.
    pub acks: Arc<AtomicUsize>,
    /// Orders cancelled.
    pub cancels: Arc<AtomicUsize>,
    /// Idempotency keys seen by Order Management.
    keys: Arc<Mutex<std::collections::HashSet<String>>>,
    down: Arc<AtomicBool>,
    next: Arc<AtomicUsize>,
    /// Base URL once started.
    pub url: String,
}

fn error(status: StatusCode, code: &str, messages: Vec<String>) -> Response {
    (
        status,
        axum::Json(
            json!({"error_code": code, "error_messages": messages, "correlation_id": "fake"}),
        ),
    )
        .into_response()
}

fn authorised(headers: &HeaderMap) -> bool {
    use std::io::Write;
    let mut expected = Vec::new();
    let _ = write!(expected, "{USER}:{PASSWORD}");
    let expected = format!("Basic {}", base64(&expected));
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The documented rules of an order request; the violations found.
fn violations(o: &Value) -> Vec<String> {
    let mut v = Vec::new();
    let s = |k: &str| o[k].as_str().unwrap_or_default().to_owned();
    if s("purchase_country").len() != 2 {
        v.push("purchase_country".into());
    }
    if s("purchase_currency").len() != 3 {
        v.push("purchase_currency".into());
    }
    if s("locale").is_empty() {
        v.push("locale".into());
    }
    let Some(lines) = o["order_lines"].as_array() else {
        v.push("order_lines".into());
        return v;
    };
    if lines.len() > 1000 {
        v.push("order_lines: more than 1000".into());
    }
    let (mut sum, mut tax_sum) = (0i64, 0i64);
    for (i, l) in lines.iter().enumerate() {
        let n = |k: &str| l[k].as_i64();
        let name = l["name"].as_str().unwrap_or_default();
        if name.is_empty() || name.len() > 255 {
            v.push(format!("order_lines[{i}].name"));
        }
        let (Some(q), Some(unit), Some(rate), Some(total), Some(tax)) = (
            n("quantity"),
            n("unit_price"),
            n("tax_rate"),
            n("total_amount"),
            n("total_tax_amount"),
        ) else {
            v.push(format!("order_lines[{i}]: required field missing"));
            continue;
        };
        let discount = n("total_discount_amount").unwrap_or(0);
        if q < 0 || !(0..=10_000).contains(&rate) || unit > 100_000_000 || total > 100_000_000 {
            v.push(format!("order_lines[{i}]: value out of range"));
        }
        if total != q * unit - discount {
            v.push(format!("order_lines[{i}].total_amount"));
        }
        let exact = total as f64 - total as f64 * 10_000.0 / (10_000.0 + rate as f64);
        if (tax as f64 - exact).abs() > 1.0 {
            v.push(format!("order_lines[{i}].total_tax_amount"));
        }
        sum += total;
        tax_sum += tax;
    }
    if o["order_amount"].as_i64() != Some(sum) {
        v.push("order_amount".into());
    }
    if o["order_tax_amount"].as_i64() != Some(tax_sum) {
        v.push("order_tax_amount".into());
    }
    let urls = &o["merchant_urls"];
    for k in ["terms", "checkout", "confirmation", "push"] {
        if urls[k].as_str().is_none_or(str::is_empty) {
            v.push(format!("merchant_urls.{k}"));
        }
    }
    if urls["push"] == urls["checkout"] || urls["push"] == urls["confirmation"] {
        v.push("merchant_urls.push must differ".into());
    }
    if s("merchant_reference1").len() > 255 || s("merchant_data").len() > 6000 {
        v.push("merchant_reference/data too long".into());
    }
    v
}

fn guard(f: &FakeKlarna, headers: &HeaderMap) -> Option<Response> {
    if f.down.load(Ordering::SeqCst) {
        return Some(StatusCode::SERVICE_UNAVAILABLE.into_response());
    }
    if !authorised(headers) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            vec!["bad credentials".into()],
        ));
    }
    None
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Box<Response>> {
    let bad = |status, messages| Box::new(error(status, "BAD_VALUE", messages));
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_type {
        return Err(bad(StatusCode::UNSUPPORTED_MEDIA_TYPE, vec!["Content-Type".into()]));
    }
    let order: Value = serde_json::from_slice(body)
        .map_err(|_| bad(StatusCode::BAD_REQUEST, vec!["body".into()]))?;
    let v = violations(&order);
    if v.is_empty() { Ok(order) } else { Err(bad(StatusCode::BAD_REQUEST, v)) }
}

fn view(id: &str, o: &Order) -> Value {
    let mut json = o.json.clone();
    json["order_id"] = json!(id);
    json["status"] = json!(if o.complete { "checkout_complete" } else { "checkout_incomplete" });
    json["html_snippet"] = json!(if o.complete {
        format!(
            "<div id=\"klarna-confirmation\">Thank you!<script>window.kco=\"{id}\";</script></div>"
        )
    } else {
        format!("<div id=\"klarna-checkout-container\"><script>window.kco=\"{id}\";</script></div>")
    });
    json
}

async fn create(State(f): State<FakeKlarna>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = guard(&f, &headers) {
        return r;
    }
    let order = match parse_body(&headers, &body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let id = format!("kco-{:04}", f.next.fetch_add(1, Ordering::SeqCst));
    let stored = Order { json: order, ..Order::default() };
    let json = view(&id, &stored);
    f.orders.lock().unwrap().insert(id.clone(), stored);
    f.creates.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("{}/checkout/v3/orders/{id}", f.url))],
        axum::Json(json),
    )
        .into_response()
}

async fn read(State(f): State<FakeKlarna>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = guard(&f, &headers) {
        return r;
    }
    match f.orders.lock().unwrap().get(&id) {
        Some(o) if !o.expired => axum::Json(view(&id, o)).into_response(),
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", vec![id]),
    }
}

async fn update(
    State(f): State<FakeKlarna>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = guard(&f, &headers) {
        return r;
    }
    let order = match parse_body(&headers, &body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let mut orders = f.orders.lock().unwrap();
    match orders.get_mut(&id) {
        Some(o) if o.expired => error(StatusCode::NOT_FOUND, "NOT_FOUND", vec![id]),
        Some(o) if o.complete => error(StatusCode::FORBIDDEN, "READ_ONLY_ORDER", vec![id]),
        Some(o) => {
            o.json = order;
            f.updates.fetch_add(1, Ordering::SeqCst);
            axum::Json(view(&id, o)).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "NOT_FOUND", vec![id]),
    }
}

/// Whether this Order Management call repeats an earlier one (same
/// `Klarna-Idempotency-Key`): then it is answered without acting again.
fn repeated(f: &FakeKlarna, headers: &HeaderMap) -> bool {
    let Some(key) = headers.get("klarna-idempotency-key").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    !f.keys.lock().unwrap().insert(key.to_owned())
}

async fn acknowledge(
    State(f): State<FakeKlarna>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = guard(&f, &headers) {
        return r;
    }
    let orders = f.orders.lock().unwrap();
    match orders.get(&id) {
        Some(o) if o.complete && !o.cancelled => {
            if !repeated(&f, &headers) {
                f.acks.fetch_add(1, Ordering::SeqCst);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", vec![id]),
    }
}

async fn cancel(
    State(f): State<FakeKlarna>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = guard(&f, &headers) {
        return r;
    }
    let mut orders = f.orders.lock().unwrap();
    match orders.get_mut(&id) {
        Some(o) if o.complete => {
            if !repeated(&f, &headers) {
                o.cancelled = true;
                f.cancels.fetch_add(1, Ordering::SeqCst);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", vec![id]),
    }
}

impl FakeKlarna {
    /// Starts the fake on an ephemeral port.
    pub async fn start() -> FakeKlarna {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeKlarna {
            url: format!("http://{}", listener.local_addr().unwrap()),
            ..Default::default()
        };
        let app = Router::new()
            .route("/checkout/v3/orders", post(create))
            .route("/checkout/v3/orders/{id}", get(read).post(update))
            .route("/ordermanagement/v1/orders/{id}/acknowledge", post(acknowledge))
            .route("/ordermanagement/v1/orders/{id}/cancel", post(cancel))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// The customer pays.
    pub fn complete(&self, id: &str) {
        self.orders.lock().unwrap().get_mut(id).expect("order").complete = true;
    }

    /// 48 h pass.
    pub fn expire(&self, id: &str) {
        self.orders.lock().unwrap().get_mut(id).expect("order").expired = true;
    }

    /// Changes the amount of an order behind our back.
    pub fn tamper_amount(&self, id: &str, amount: i64) {
        self.orders.lock().unwrap().get_mut(id).expect("order").json["order_amount"] =
            json!(amount);
    }

    /// The order as the provider would send it to the validation callback.
    pub fn order(&self, id: &str) -> Value {
        let orders = self.orders.lock().unwrap();
        view(id, orders.get(id).expect("order"))
    }

    /// Makes every endpoint answer 503 (or not).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Orders cancelled through Order Management.
    pub fn cancelled(&self) -> usize {
        self.cancels.load(Ordering::SeqCst)
    }

    /// Counters: (creates, updates, acknowledgements).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.creates.load(Ordering::SeqCst),
            self.updates.load(Ordering::SeqCst),
            self.acks.load(Ordering::SeqCst),
        )
    }
}

#[test]
fn base64_matches_the_rfc_examples() {
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
}
