//! The provider's HTTP API: Checkout (`/checkout/v3/orders`) and Order
//! Management (`/ordermanagement/v1/orders`). Base URL and credentials are
//! configuration (Klarna's and Kustom's hosts differ).

use std::time::Duration;

use cart_catalog::http::{Limited, read_limited};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::CheckoutError;
use crate::order::OrderRequest;

/// Where and as whom to call the provider.
#[derive(Debug, Clone)]
pub struct KlarnaConfig {
    /// Base URL, e.g. `https://api.playground.kustom.co`.
    pub base_url: String,
    /// API username (`KLARNA_USERNAME`).
    pub username: String,
    /// API password (`KLARNA_PASSWORD`).
    pub password: String,
    /// Time allowed for one call.
    pub timeout: Duration,
}

/// An order as the provider returned it: the raw JSON (passed on to the
/// storefront) and its `Location`, when created.
#[derive(Debug, Clone)]
pub struct RawOrder {
    /// The order JSON.
    pub json: Value,
}

/// A client of the provider's API.
pub struct KlarnaClient {
    http: reqwest::Client,
    config: KlarnaConfig,
}

/// Largest provider answer read, in bytes (an order of 500 lines is far
/// smaller).
pub const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

fn unavailable(e: impl std::fmt::Display) -> CheckoutError {
    CheckoutError::Provider(e.to_string())
}

impl KlarnaClient {
    /// A client for `config`.
    pub fn new(config: KlarnaConfig) -> Result<Self, CheckoutError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent("cart-actor")
            .build()
            .map_err(unavailable)?;
        Ok(KlarnaClient { http, config })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&OrderRequest>,
    ) -> Result<(StatusCode, Value), CheckoutError> {
        self.call_once(method, path, body, None).await
    }

    /// A call with a `Klarna-Idempotency-Key` (Order Management honours it
    /// for 24 h): repeating it, from any node, has the effect of one.
    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&OrderRequest>,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Value), CheckoutError> {
        let url = format!("{}{path}", self.config.base_url.trim_end_matches('/'));
        let mut request = self
            .http
            .request(method.clone(), &url)
            .basic_auth(&self.config.username, Some(&self.config.password));
        if let Some(key) = idempotency_key {
            request = request.header("Klarna-Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        } else if method == Method::POST {
            request = request.header("content-length", "0");
        }
        let response = request.send().await.map_err(|e| {
            tracing::warn!(%url, error = %e, "payment provider unreachable");
            unavailable(format!("{method} {path}: {e}"))
        })?;
        let status = response.status();
        let bytes = read_limited(response, MAX_ANSWER_BYTES).await.map_err(|e| match e {
            Limited::TooLarge => {
                unavailable(format!("{method} {path}: answer over {MAX_ANSWER_BYTES} bytes"))
            }
            Limited::Failed(e) => unavailable(e),
        })?;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, json))
    }

    fn failed(what: &str, status: StatusCode, body: &Value) -> CheckoutError {
        let code = body["error_code"].as_str().unwrap_or_default();
        tracing::warn!(what, %status, code, "payment provider refused");
        CheckoutError::Provider(format!("{what}: {status} {code}").trim_end().to_owned())
    }

    /// Creates a checkout order (201).
    pub async fn create(&self, order: &OrderRequest) -> Result<RawOrder, CheckoutError> {
        match self.call(Method::POST, "/checkout/v3/orders", Some(order)).await? {
            (StatusCode::CREATED | StatusCode::OK, json) => Ok(RawOrder { json }),
            (status, json) => Err(Self::failed("create order", status, &json)),
        }
    }

    /// Reads a checkout order; `None` when unknown or expired (404).
    pub async fn read(&self, order_id: &str) -> Result<Option<RawOrder>, CheckoutError> {
        match self
            .call(Method::GET, &format!("/checkout/v3/orders/{}", segment(order_id)), None)
            .await?
        {
            (StatusCode::OK, json) => Ok(Some(RawOrder { json })),
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (status, json) => Err(Self::failed("read order", status, &json)),
        }
    }

    /// Updates an incomplete checkout order; `None` when unknown or expired.
    pub async fn update(
        &self,
        order_id: &str,
        order: &OrderRequest,
    ) -> Result<Option<RawOrder>, CheckoutError> {
        match self
            .call(Method::POST, &format!("/checkout/v3/orders/{}", segment(order_id)), Some(order))
            .await?
        {
            (StatusCode::OK, json) => Ok(Some(RawOrder { json })),
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (status, json) => Err(Self::failed("update order", status, &json)),
        }
    }

    /// Acknowledges a completed order through Order Management (204),
    /// with an idempotency key of the order's own: concurrent or repeated
    /// acknowledgements of one order, from any node, are one.
    pub async fn acknowledge(&self, order_id: &str) -> Result<(), CheckoutError> {
        let path = format!("/ordermanagement/v1/orders/{}/acknowledge", segment(order_id));
        let key = idempotency_key("acknowledge", order_id);
        match self.call_once(Method::POST, &path, None, Some(&key)).await? {
            (StatusCode::NO_CONTENT | StatusCode::OK, _) => Ok(()),
            (status, json) => Err(Self::failed("acknowledge order", status, &json)),
        }
    }

    /// Cancels an authorised order through Order Management (204): the
    /// customer's money is released. Idempotent like [`Self::acknowledge`].
    pub async fn cancel(&self, order_id: &str) -> Result<(), CheckoutError> {
        let path = format!("/ordermanagement/v1/orders/{}/cancel", segment(order_id));
        let key = idempotency_key("cancel", order_id);
        match self.call_once(Method::POST, &path, None, Some(&key)).await? {
            (StatusCode::NO_CONTENT | StatusCode::OK, _) => Ok(()),
            (status, json) => Err(Self::failed("cancel order", status, &json)),
        }
    }
}

/// The idempotency key of `operation` on `order_id`: a UUID (version 8,
/// name-based) made from a SHA-256 of both, the same on every node and
/// every retry.
pub fn idempotency_key(operation: &str, order_id: &str) -> String {
    let digest =
        ring::digest::digest(&ring::digest::SHA256, format!("{operation}\n{order_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Percent-encodes an order id for a path segment.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
