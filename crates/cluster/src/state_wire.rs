//! The typed cart on the wire (`CartState` of `proto/cart_actor.proto`) and
//! back.

use std::sync::Arc;

use cart_domain::proto::AddItem;
use cart_domain::{
    Cart, CartState, CheckoutState, Delivery, ItemInterner, PickupPoint, RestoredCart,
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
            .map(|l| {
                let i = &l.info;
                let [c1, c2, c3, c4, c5] = &i.categories;
                wire::CartLine {
                    id: l.id,
                    qty: l.qty,
                    price: l.price,
                    org_price: l.org_price,
                    stock: l.stock,
                    tax: l.tax,
                    item_id: i.item_id,
                    sku: i.sku.to_string(),
                    name: i.name.to_string(),
                    image: i.image.to_string(),
                    article_type: i.article_type.to_string(),
                    brand: i.brand.to_string(),
                    category: c1.to_string(),
                    category2: c2.to_string(),
                    category3: c3.to_string(),
                    category4: c4.to_string(),
                    category5: c5.to_string(),
                    outlet: i.outlet.to_string(),
                    seller_id: i.seller_id.to_string(),
                    seller_name: i.seller_name.to_string(),
                    store_id: i.store_id.as_deref().map(str::to_owned),
                }
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
    let market = match (state.country, state.currency) {
        (Some(country), Some(currency)) => Some((country, currency)),
        _ => None,
    };
    let currency = market.as_ref().map(|(_, c)| c.clone()).unwrap_or_default();
    let country = market.as_ref().map(|(c, _)| c.clone()).unwrap_or_default();
    let lines = state
        .items
        .into_iter()
        .map(|l| {
            let item = AddItem {
                item_id: l.item_id,
                quantity: i32::try_from(l.qty).unwrap_or(i32::MAX),
                price: l.price,
                org_price: l.org_price,
                sku: l.sku,
                name: l.name,
                image: l.image,
                stock: l.stock,
                tax: i32::try_from(l.tax).unwrap_or(i32::MAX),
                brand: l.brand,
                category: l.category,
                category2: l.category2,
                category3: l.category3,
                category4: l.category4,
                category5: l.category5,
                outlet: l.outlet,
                seller_id: l.seller_id,
                seller_name: l.seller_name,
                article_type: l.article_type,
                country: country.clone(),
                currency: currency.clone(),
                store_id: l.store_id,
            };
            (l.id, item)
        })
        .collect();
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
    Cart::restore(parts, items).map(Arc::new).map_err(|e| GrainError::Remote {
        kind: ErrorKind::Internal,
        message: format!("a peer reported an invalid cart: {e}"),
    })
}
