//! Checkout routes: the storefront's `/cart/checkout` and
//! `/cart/confirmation/{orderId}`, the HTML pages `/checkout` and
//! `/confirmation/{orderId}` that embed the provider's snippet, and the
//! provider's callbacks `/klarna/push` and `/klarna/validate`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use cart_checkout::Checkout;
use cart_grain::GrainError;

use crate::error::ApiError;
use crate::{AppState, cookie, response};

/// The checkout routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/cart/checkout", get(checkout).delete(leave))
        .route("/cart/confirmation/{order_id}", get(confirmation))
        .route("/checkout", get(|| async { page("Checkout", "/cart/checkout") }))
        .route("/confirmation/{order_id}", get(|| async { page("Order confirmation", "") }))
        .route("/klarna/push", post(push))
        .route("/klarna/validate", post(validate))
}

fn service(s: &AppState) -> Result<&Checkout, ApiError> {
    s.checkout.as_deref().ok_or_else(|| ApiError::Unavailable("checkout is not configured".into()))
}

fn order_json(order: serde_json::Value) -> Response {
    let mut r = axum::Json(order).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn checkout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = cookie::cart_id(&headers, &s.ids).ok_or(ApiError::Grain(GrainError::NotFound))?;
    let order = service(&s)?.checkout(&id).await;
    Ok(order_json(order.map_err(|e| ApiError::from(e).about(&id, vec!["checkout"]))?))
}

async fn leave(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = cookie::cart_id(&headers, &s.ids).ok_or(ApiError::Grain(GrainError::NotFound))?;
    let cart = service(&s)?.leave(&id).await;
    Ok(response::cart(cart.map_err(|e| ApiError::from(e).about(&id, vec!["leave_checkout"]))?))
}

async fn confirmation(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = cookie::cart_id(&headers, &s.ids).ok_or(ApiError::Grain(GrainError::NotFound))?;
    Ok(order_json(service(&s)?.confirmation(&id, &order_id).await?))
}

async fn push(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let order_id =
        q.get("order_id").ok_or_else(|| ApiError::BadRequest("order_id is required".into()))?;
    service(&s)?.push(order_id).await?;
    Ok((StatusCode::OK, "ok").into_response())
}

/// Klarna waits 3 s for this answer; an answer we cannot give in time sends
/// the customer back to checkout rather than approving an unverified order.
const VALIDATION_BUDGET: std::time::Duration = std::time::Duration::from_millis(2500);

async fn validate(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let checkout = service(&s)?;
    let valid =
        tokio::time::timeout(VALIDATION_BUDGET, checkout.validate(&body)).await.unwrap_or(false);
    if valid {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    let location = HeaderValue::from_str(&checkout.checkout_page())
        .unwrap_or(HeaderValue::from_static("/checkout"));
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

/// A page that fetches the order JSON from `source` (or, when empty, from
/// `/cart/confirmation/{last path segment}`), puts its `html_snippet` in the
/// container and recreates every `<script>` so the provider's loader runs.
fn page(title: &str, source: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="sv">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body>
<div id="checkout-container">Loading…</div>
<script>
(async () => {{
  const container = document.getElementById("checkout-container");
  const source = {source:?} || "/cart/confirmation/" + encodeURIComponent(location.pathname.split("/").pop());
  const res = await fetch(source, {{ credentials: "same-origin", cache: "no-store" }});
  if (!res.ok) {{ container.textContent = await res.text(); return; }}
  const order = await res.json();
  container.innerHTML = order.html_snippet;
  for (const old of container.querySelectorAll("script")) {{
    const s = document.createElement("script");
    for (const a of old.attributes) s.setAttribute(a.name, a.value);
    s.text = old.text;
    old.parentNode.replaceChild(s, old);
  }}
}})();
</script>
</body>
</html>
"#
    );
    let mut r = Html(html).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
