//! The provider's HTTP API: Checkout (`/checkout/v3/orders`) and Order
//! Management (`/ordermanagement/v1/orders`). Base URL and credentials are
//! configuration (Klarna's and Kustom's hosts differ).

use std::time::Duration;

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
        let url = format!("{}{path}", self.config.base_url.trim_end_matches('/'));
        let mut request = self
            .http
            .request(method.clone(), &url)
            .basic_auth(&self.config.username, Some(&self.config.password));
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
        let bytes = response.bytes().await.map_err(unavailable)?;
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

    /// Acknowledges a completed order through Order Management (204).
    pub async fn acknowledge(&self, order_id: &str) -> Result<(), CheckoutError> {
        let path = format!("/ordermanagement/v1/orders/{}/acknowledge", segment(order_id));
        match self.call(Method::POST, &path, None).await? {
            (StatusCode::NO_CONTENT | StatusCode::OK, _) => Ok(()),
            (status, json) => Err(Self::failed("acknowledge order", status, &json)),
        }
    }
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
