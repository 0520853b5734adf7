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

/// Times a completion is checked again when the cart changed under it.
const COMPLETION_ATTEMPTS: usize = 3;

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
                    // Paid: complete the cart now (the push may be late),
                    // unless the order is stale; then it was refused and
                    // cancelled, and a new order follows.
                    match self.complete(&parsed).await {
                        Ok(_) => return Ok(current.json),
                        Err(CheckoutError::Mismatch(_)) => {}
                        Err(e) => return Err(e),
                    }
                    let cart = self.cart(id).await?;
                    let request = order::build(&cart, &self.public_url)?;
                    let created = self.client.create(&request).await?;
                    let order_id = provider_order(&created.json)?.order_id;
                    self.started(id, &cart, &order_id, &created.json, request.order_amount).await?;
                    tracing::info!(cart = %id, order = %order_id, "checkout order replaced a refused one");
                    return Ok(created.json);
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

    /// `GET /cart/confirmation/{orderId}` for the shopper whose cart is
    /// `cart`: what the confirmation page needs (order id, status, the
    /// provider's confirmation snippet), never the provider's whole order
    /// (it holds the customer's address, email and phone). Another cart's
    /// order is `UnknownOrder`. Completes the cart if the order is complete
    /// (the push may come later, or never reach us).
    pub async fn confirmation(
        &self,
        cart: &CartId,
        order_id: &str,
    ) -> Result<Value, CheckoutError> {
        // The cart says which order is its own: another one is not looked
        // up at the provider at all.
        let own = self.cart(cart).await?;
        if own.checkout().is_none_or(|c| c.order_id != order_id) {
            return Err(CheckoutError::UnknownOrder(order_id.to_owned()));
        }
        let (order, parsed) = self.read_order(order_id).await?;
        if parsed.merchant_reference1.as_deref() != Some(cart.as_str()) {
            return Err(CheckoutError::UnknownOrder(order_id.to_owned()));
        }
        if parsed.is_complete()
            && let Err(e) = self.complete(&parsed).await
        {
            tracing::warn!(order = order_id, error = %e, "could not complete the cart from the confirmation page");
        }
        Ok(serde_json::json!({
            "order_id": parsed.order_id,
            "status": parsed.status,
            "html_snippet": order.json["html_snippet"],
        }))
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
    /// returns the cart id. Only an order that matches the cart *as it is
    /// now* (same lines, quantities, unit prices and VAT, same amount) and a
    /// cart in checkout (not being edited) completes; anything else is a
    /// `Mismatch`: nothing is recorded, the refusal is logged and counted
    /// (`cart_checkout_refused_total{reason}`), and the provider's order is
    /// cancelled so the customer is not charged for what will not ship.
    /// The completion is recorded at the version checked, so an edit racing
    /// with it makes it check again.
    async fn complete(&self, order: &ProviderOrder) -> Result<CartId, CheckoutError> {
        let unknown = || CheckoutError::UnknownOrder(order.order_id.clone());
        let id = CartId::parse(order.merchant_reference1.as_deref().ok_or_else(unknown)?)
            .map_err(|_| unknown())?;
        for _ in 0..COMPLETION_ATTEMPTS {
            let cart = self.cart(&id).await?;
            let checkout =
                cart.checkout().filter(|c| c.order_id == order.order_id).ok_or_else(unknown)?;
            if checkout.completed {
                return Ok(id);
            }
            if let Some(reason) = self.stale(&cart, order) {
                self.refuse(&id, order, reason).await;
                return Err(CheckoutError::Mismatch(order.order_id.clone()));
            }
            let completed = CartCommand::CompleteOrder(OrderCompleted {
                order_id: order.order_id.clone(),
                status: order.status.clone(),
                acknowledged: false,
            });
            match self.record(&id, completed, Some(cart.version())).await {
                Ok(_) => {
                    tracing::info!(cart = %id, order = %order.order_id, amount = order.order_amount, "order completed");
                    return Ok(id);
                }
                Err(CheckoutError::Cart(e)) if e.kind() == ErrorKind::Completed => return Ok(id),
                Err(CheckoutError::Cart(e)) if e.kind() == ErrorKind::PreconditionFailed => {}
                Err(e) => return Err(e),
            }
        }
        Err(CheckoutError::Mismatch(format!("{}: the cart kept changing", order.order_id)))
    }

    /// Why `order` cannot complete `cart` as it is now, if it cannot.
    fn stale(&self, cart: &CartState, order: &ProviderOrder) -> Option<&'static str> {
        if cart.checkout().is_some_and(|c| c.editing) {
            return Some("editing");
        }
        match order::build(cart, &self.public_url) {
            Ok(request) if order.matches(&request) => None,
            Ok(request) if order.order_amount != request.order_amount => Some("amount"),
            Ok(_) => Some("lines"),
            Err(_) => Some("unpayable"),
        }
    }

    /// Logs, counts and cancels a paid order that does not match its cart.
    async fn refuse(&self, id: &CartId, order: &ProviderOrder, reason: &'static str) {
        tracing::warn!(cart = %id, order = %order.order_id, paid = order.order_amount, reason, "the provider's order does not match the cart; not completing it, cancelling it");
        metrics::counter!(crate::families::CHECKOUT_REFUSED.name, "reason" => reason).increment(1);
        if let Err(e) = self.client.cancel(&order.order_id).await {
            tracing::error!(cart = %id, order = %order.order_id, error = %e, "could not cancel a refused order; cancel it by hand");
        }
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
