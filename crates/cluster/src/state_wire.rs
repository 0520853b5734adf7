//! The typed cart on the wire (`CartState` of `proto/cart_actor.proto`) and
//! back.

use std::sync::Arc;

use cart_domain::{
    Cart, CartLine, CartState, CheckoutState, Delivery, ItemInterner, PickupPoint, RestoredCart,
};
use cart_grain::{ErrorKind, GrainError};

use crate::proto::cart as wire;

/// The wire form of a cart: every field of its JSON.
pub fn to_wire(cart: &Cart) -> wire::CartState {
    let totals = cart.totals();
    wire::CartState {
        id: cart.id().to_owned(),
        version: cart.version(),
        items: cart
            .lines()
            .iter()
            .map(|l| wire::CartLine {
                id: l.id,
                qty: l.qty,
                price: l.price,
                org_price: l.org_price,
                stock: l.stock,
                tax: l.tax,
                product: l.info.encoded.clone(),
            })
            .collect(),
        deliveries: cart
            .deliveries()
            .iter()
            .map(|d| wire::Delivery {
                id: d.id,
                provider: d.provider.to_string(),
                items: d.items.clone(),
                price: d.price,
                tax: d.tax,
                pickup_point: d.pickup_point.as_deref().map(|p| wire::PickupPoint {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    address: p.address.clone(),
                    city: p.city.clone(),
                    zip: p.zip.clone(),
                    country: p.country.clone(),
                }),
            })
            .collect(),
        total_price: totals.price,
        total_tax: totals.tax,
        total_discount: totals.discount,
        currency: cart.currency().map(str::to_owned),
        country: cart.country().map(str::to_owned),
        payment_in_progress: cart.payment_in_progress(),
        checkout: cart.checkout().map(|c| wire::CheckoutState {
            order_id: c.order_id.clone(),
            status: c.status.clone(),
            cart_version: c.cart_version,
            amount: c.amount,
            editing: c.editing,
            completed: c.completed,
            acknowledged: c.acknowledged,
        }),
    }
}

/// The cart a peer reported, checked like any line and sharing product
/// facts through `items`. A state that breaks the cart's rules is refused as
/// a bad reply.
pub fn from_wire(state: wire::CartState, items: &ItemInterner) -> Result<CartState, GrainError> {
    let invalid = |why: String| GrainError::Remote {
        kind: ErrorKind::Internal,
        message: format!("a peer reported an invalid cart: {why}"),
    };
    let market = match (state.country, state.currency) {
        (Some(country), Some(currency)) => Some((country, currency)),
        _ => None,
    };
    let lines = state
        .items
        .into_iter()
        .map(|l| {
            let info = items.intern_encoded(&l.product).map_err(|e| invalid(e.to_string()))?;
            Ok(CartLine {
                id: l.id,
                qty: l.qty,
                price: l.price,
                org_price: l.org_price,
                stock: l.stock,
                tax: l.tax,
                info,
            })
        })
        .collect::<Result<_, GrainError>>()?;
    let deliveries = state
        .deliveries
        .into_iter()
        .map(|d| Delivery {
            id: d.id,
            provider: d.provider.into(),
            items: d.items,
            price: d.price,
            tax: d.tax,
            pickup_point: d.pickup_point.map(|p| {
                Box::new(PickupPoint {
                    id: p.id,
                    name: p.name,
                    address: p.address,
                    city: p.city,
                    zip: p.zip,
                    country: p.country,
                })
            }),
        })
        .collect();
    let checkout = state.checkout.map(|c| CheckoutState {
        order_id: c.order_id,
        status: c.status,
        cart_version: c.cart_version,
        amount: c.amount,
        editing: c.editing,
        completed: c.completed,
        acknowledged: c.acknowledged,
    });
    let parts = RestoredCart {
        id: state.id.into(),
        version: state.version,
        lines,
        deliveries,
        market,
        checkout,
    };
    Cart::restore(parts).map(Arc::new).map_err(|e| invalid(e.to_string()))
}
