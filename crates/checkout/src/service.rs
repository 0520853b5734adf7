//! The checkout flows behind the storefront routes and the provider's
//! callbacks. Cart state lives in the cart (CreateCheckoutOrder and
//! OrderCompleted events); the provider is never trusted: every callback
//! re-reads the order from the provider's API.

use std::sync::Arc;

use cart_domain::proto::{CreateCheckoutOrder, OrderCompleted};
use cart_domain::{CartCommand, CartState};
use cart_grain::{CartId, Carts, ErrorKind, MutateRequest};
use serde_json::Value;

use crate::CheckoutError;
use crate::client::{KlarnaClient, RawOrder};
use crate::order::{self, ProviderOrder};

/// The checkout integration.
pub struct Checkout {
    carts: Arc<dyn Carts>,
    client: KlarnaClient,
    public_url: String,
}

fn provider_order(json: &Value) -> Result<ProviderOrder, CheckoutError> {
    serde_json::from_value(json.clone())
        .map_err(|e| CheckoutError::Provider(format!("unreadable order: {e}")))
}

impl Checkout {
    /// Checkout over `carts`, calling the provider with `client`; the
    /// service's own pages and callbacks are at `public_url`.
    pub fn new(carts: Arc<dyn Carts>, client: KlarnaClient, public_url: String) -> Self {
        Checkout { carts, client, public_url }
    }

    /// Where the storefront's checkout page is.
    pub fn checkout_page(&self) -> String {
        format!("{}/checkout", self.public_url.trim_end_matches('/'))
    }

    async fn cart(&self, id: &CartId) -> Result<CartState, CheckoutError> {
        Ok(self.carts.get(id).await?)
    }

    async fn record(
        &self,
        id: &CartId,
        command: CartCommand,
        if_match: Option<u64>,
    ) -> Result<CartState, CheckoutError> {
        let request = MutateRequest { mutations: vec![command], if_match, idempotency: None };
        Ok(self.carts.mutate(id, request).await?)
    }

    /// Records a completion step that the cart accepts only once; `false`
    /// when another push or confirmation recorded it first.
    async fn record_once(&self, id: &CartId, command: CartCommand) -> Result<bool, CheckoutError> {
        match self.record(id, command, None).await {
            Ok(_) => Ok(true),
            Err(CheckoutError::Cart(e)) if e.kind() == ErrorKind::Completed => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /cart/checkout`: the cart's checkout order, created on the first
    /// call, updated when the cart changed since, re-created if it expired.
    pub async fn checkout(&self, id: &CartId) -> Result<Value, CheckoutError> {
        let cart = self.cart(id).await?;
        let request = order::build(&cart, &self.public_url)?;
        if let Some(existing) = cart.checkout() {
            if existing.completed {
                return self
                    .client
                    .read(&existing.order_id)
                    .await?
                    .map(|o| o.json)
                    .ok_or_else(|| CheckoutError::UnknownOrder(existing.order_id.clone()));
            }
            if let Some(current) = self.client.read(&existing.order_id).await? {
                let parsed = provider_order(&current.json)?;
                if parsed.is_complete() {
                    return Ok(current.json);
                }
                if parsed.matches(&request) && !existing.editing {
                    return Ok(current.json);
                }
                if let Some(updated) = self.client.update(&existing.order_id, &request).await? {
                    self.started(
                        id,
                        &cart,
                        &existing.order_id,
                        &updated.json,
                        request.order_amount,
                    )
                    .await?;
                    return Ok(updated.json);
                }
            }
            tracing::info!(cart = %id, order = %existing.order_id, "checkout order expired; creating a new one");
        }
        let created = self.client.create(&request).await?;
        let order_id = provider_order(&created.json)?.order_id;
        self.started(id, &cart, &order_id, &created.json, request.order_amount).await?;
        tracing::info!(cart = %id, order = %order_id, amount = request.order_amount, "checkout order created");
        Ok(created.json)
    }

    /// Records that checkout is (again) in progress with this order, unless
    /// the cart changed since it was read.
    async fn started(
        &self,
        id: &CartId,
        cart: &CartState,
        order_id: &str,
        json: &Value,
        amount: i64,
    ) -> Result<(), CheckoutError> {
        let command = CartCommand::Checkout(CreateCheckoutOrder {
            order_id: order_id.to_owned(),
            status: json["status"].as_str().unwrap_or("checkout_incomplete").to_owned(),
            cart_version: cart.version(),
            amount,
            editing: false,
        });
        self.record(id, command, Some(cart.version())).await.map(|_| ())
    }

    /// `DELETE /cart/checkout`: the shopper leaves checkout to change the
    /// cart; the order is kept and updated when they come back.
    pub async fn leave(&self, id: &CartId) -> Result<CartState, CheckoutError> {
        let cart = self.cart(id).await?;
        let Some(existing) = cart.checkout().filter(|c| !c.completed) else {
            return Ok(cart);
        };
        let command = CartCommand::Checkout(CreateCheckoutOrder {
            order_id: existing.order_id.clone(),
            status: "checkout_incomplete".into(),
            cart_version: cart.version(),
            amount: existing.amount,
            editing: true,
        });
        self.record(id, command, Some(cart.version())).await
    }

    /// The provider's order (raw and parsed); `UnknownOrder` if it has none.
    async fn read_order(&self, order_id: &str) -> Result<(RawOrder, ProviderOrder), CheckoutError> {
        let order = self
            .client
            .read(order_id)
            .await?
            .ok_or_else(|| CheckoutError::UnknownOrder(order_id.to_owned()))?;
        let parsed = provider_order(&order.json)?;
        Ok((order, parsed))
    }

    /// `GET /cart/confirmation/{orderId}`: the order with its confirmation
    /// snippet; completes the cart if the order is complete (the push may come
    /// later, or never reach us).
    pub async fn confirmation(&self, order_id: &str) -> Result<Value, CheckoutError> {
        let (order, parsed) = self.read_order(order_id).await?;
        if parsed.is_complete()
            && let Err(e) = self.complete(&parsed).await
        {
            tracing::warn!(order = order_id, error = %e, "could not complete the cart from the confirmation page");
        }
        Ok(order.json)
    }

    /// `POST /klarna/push?order_id=`: re-reads the order; when it is complete
    /// and matches the amount its cart was built with, completes the cart
    /// exactly once, then acknowledges the order exactly once. Repeated
    /// pushes change nothing.
    pub async fn push(&self, order_id: &str) -> Result<(), CheckoutError> {
        let (_, parsed) = self.read_order(order_id).await?;
        if !parsed.is_complete() {
            return Err(CheckoutError::Mismatch(format!("{order_id} is not complete")));
        }
        let id = self.complete(&parsed).await?;
        let cart = self.cart(&id).await?;
        if cart.checkout().is_some_and(|c| c.acknowledged) {
            return Ok(());
        }
        self.client.acknowledge(order_id).await?;
        let acknowledged = CartCommand::CompleteOrder(OrderCompleted {
            order_id: order_id.to_owned(),
            status: parsed.status.clone(),
            acknowledged: true,
        });
        if self.record_once(&id, acknowledged).await? {
            tracing::info!(cart = %id, order = order_id, "order acknowledged");
        }
        Ok(())
    }

    /// Records OrderCompleted on the order's cart unless it already is;
    /// returns the cart id.
    async fn complete(&self, order: &ProviderOrder) -> Result<CartId, CheckoutError> {
        let unknown = || CheckoutError::UnknownOrder(order.order_id.clone());
        let id = CartId::parse(order.merchant_reference1.as_deref().ok_or_else(unknown)?)
            .map_err(|_| unknown())?;
        let cart = self.cart(&id).await?;
        let checkout =
            cart.checkout().filter(|c| c.order_id == order.order_id).ok_or_else(unknown)?;
        if checkout.completed {
            return Ok(id);
        }
        if order.order_amount != checkout.amount {
            tracing::warn!(cart = %id, order = %order.order_id, paid = order.order_amount, expected = checkout.amount, "paid amount differs from the cart's; not completing");
            return Err(CheckoutError::Mismatch(order.order_id.clone()));
        }
        let completed = CartCommand::CompleteOrder(OrderCompleted {
            order_id: order.order_id.clone(),
            status: order.status.clone(),
            acknowledged: false,
        });
        if self.record_once(&id, completed).await? {
            tracing::info!(cart = %id, order = %order.order_id, amount = order.order_amount, "order completed");
        }
        Ok(id)
    }

    /// `POST /klarna/validate`: whether the order the customer is about to
    /// buy still is the cart's (same order, same lines and amount, shopper not
    /// editing).
    pub async fn validate(&self, body: &[u8]) -> bool {
        let Ok(order) = serde_json::from_slice::<ProviderOrder>(body) else { return false };
        let Some(id) = order.merchant_reference1.as_deref().and_then(|r| CartId::parse(r).ok())
        else {
            return false;
        };
        let Ok(cart) = self.cart(&id).await else { return false };
        let in_checkout = cart
            .checkout()
            .is_some_and(|c| c.order_id == order.order_id && !c.editing && !c.completed);
        in_checkout
            && order::build(&cart, &self.public_url).is_ok_and(|request| order.matches(&request))
    }
}
