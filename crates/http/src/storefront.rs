//! The storefront face: the routes the web storefront calls, the cart named
//! by the `cartid` cookie (storefront contract sections 1, 2.1 and 7).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use cart_domain::CartCommand;
use cart_grain::{GrainError, MutateRequest};

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::requests::{self, AddBody, DeliveryBody, ItemsBody, LineQuantityBody};
use crate::{AppState, cookie, response};

/// The `/cart` routes; `/cart` and `/cart/` are the same.
pub fn routes() -> Router<AppState> {
    let collection = || get(get_cart).post(add).put(change_quantity).delete(start_over);
    Router::new()
        .route("/cart", collection())
        .route("/cart/", collection())
        .route("/cart/add", post(add_many))
        .route("/cart/events", get(crate::events::storefront))
        .route("/cart/delivery", post(set_delivery))
        .route("/cart/delivery/{id}", delete(remove_delivery))
        .route("/cart/delivery/{id}/pickupPoint", put(set_pickup_point))
        .route("/cart/{line_id}", delete(remove_line))
}

fn no_cart() -> ApiError {
    ApiError::Grain(GrainError::NotFound)
}

async fn get_cart(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = cookie::cart_id(&headers, &s.ids).ok_or_else(no_cart)?;
    let state = s.carts.get(&id).await.map_err(|e| ApiError::from(e).about(&id, vec![]))?;
    Ok(response::cart(state))
}

/// Applies `mutations` to the cookie's cart; with `create`, a shopper with
/// no cart gets a new one and its cookie.
async fn mutate(
    s: &AppState,
    headers: &HeaderMap,
    mutations: Vec<CartCommand>,
    create: bool,
) -> Result<Response, ApiError> {
    let (id, new) = match cookie::cart_id(headers, &s.ids) {
        Some(id) => (id, false),
        None if create => (s.ids.mint(random_u64()?), true),
        None => return Err(no_cart()),
    };
    let types: Vec<&'static str> = mutations.iter().map(|m| m.kind().name()).collect();
    let state = s
        .carts
        .mutate(&id, MutateRequest::of(mutations))
        .await
        .map_err(|e| ApiError::from(e).about(&id, types))?;
    let mut response = response::cart(state);
    if new {
        response.headers_mut().insert(header::SET_COOKIE, cookie::set(&id));
    }
    Ok(response)
}

fn random_u64() -> Result<u64, ApiError> {
    getrandom::u64().map_err(|e| ApiError::Unavailable(format!("cannot create a cart id: {e}")))
}

async fn add(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AddBody>,
) -> Result<Response, ApiError> {
    mutate(&s, &headers, vec![requests::add(body)], true).await
}

async fn add_many(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ItemsBody>,
) -> Result<Response, ApiError> {
    mutate(&s, &headers, requests::add_many(body), true).await
}

async fn change_quantity(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LineQuantityBody>,
) -> Result<Response, ApiError> {
    let m = requests::change_quantity(body.id, body.quantity);
    mutate(&s, &headers, vec![m], false).await
}

async fn remove_line(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(line_id): Path<i64>,
) -> Result<Response, ApiError> {
    mutate(&s, &headers, vec![requests::remove_item(line_id)], false).await
}

/// Starts over: forgets the cookie, so the next add creates a new cart. The
/// old cart stays in the log, untouched.
async fn start_over() -> Response {
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie::clear())]).into_response()
}

async fn set_delivery(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DeliveryBody>,
) -> Result<Response, ApiError> {
    mutate(&s, &headers, vec![requests::set_delivery(body)], false).await
}

async fn remove_delivery(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    mutate(&s, &headers, vec![requests::remove_delivery(id)], false).await
}

async fn set_pickup_point(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<cart_domain::PickupPoint>,
) -> Result<Response, ApiError> {
    mutate(&s, &headers, vec![requests::set_pickup_point(id, body)], false).await
}
