//! Request bodies of both faces and the commands they become.

use cart_domain::proto::{
    AddRequest, ChangeQuantity, RemoveDelivery, RemoveItem, SetDelivery, SetPickupPoint,
};
use cart_domain::{CartCommand, PickupPoint};
use serde::Deserialize;

/// Add one product by SKU: `{sku, quantity, country?, storeId?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddBody {
    /// Catalogue SKU.
    pub sku: String,
    /// How many; 1 when omitted.
    #[serde(default = "one")]
    pub quantity: i32,
    /// Market (`se`, `no`); the default market when omitted.
    pub country: Option<String>,
    /// Store for click-and-collect.
    pub store_id: Option<String>,
}

fn one() -> i32 {
    1
}

/// One `{sku, quantity}` of a multi-item request.
#[derive(Debug, Deserialize)]
pub struct SkuQuantity {
    /// Catalogue SKU.
    pub sku: String,
    /// How many; 1 when omitted.
    #[serde(default = "one")]
    pub quantity: i32,
}

/// Many products at once: `{items: [{sku, quantity}], country?, storeId?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemsBody {
    /// The products.
    pub items: Vec<SkuQuantity>,
    /// Market of all items.
    pub country: Option<String>,
    /// Store of all items.
    pub store_id: Option<String>,
}

/// The storefront's quantity change: `{id, quantity}` (line id).
#[derive(Debug, Deserialize)]
pub struct LineQuantityBody {
    /// Line id.
    pub id: i64,
    /// New quantity; 0 removes the line.
    pub quantity: i32,
}

/// The service face's quantity change: `{quantity}`.
#[derive(Debug, Deserialize)]
pub struct QuantityBody {
    /// New quantity; 0 removes the line.
    pub quantity: i32,
}

/// A delivery: `{provider, items, price?, pickupPoint?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryBody {
    /// Carrier or option type.
    pub provider: String,
    /// Line ids covered.
    pub items: Vec<i64>,
    /// Fee in minor units incl. VAT. Ignored on the storefront face (the
    /// provider's configured fee applies); on the by-id API it sets the
    /// fee, and when absent the configured fee applies there too.
    #[serde(default)]
    pub price: Option<i64>,
    /// Pickup location.
    pub pickup_point: Option<PickupPoint>,
}

/// An add by SKU.
pub fn add(b: AddBody) -> CartCommand {
    CartCommand::AddSku(AddRequest {
        sku: b.sku,
        quantity: b.quantity,
        country: b.country,
        store_id: b.store_id,
    })
}

fn add_requests(b: ItemsBody) -> Vec<AddRequest> {
    b.items
        .into_iter()
        .map(|i| AddRequest {
            sku: i.sku,
            quantity: i.quantity,
            country: b.country.clone(),
            store_id: b.store_id.clone(),
        })
        .collect()
}

/// Adds of several SKUs, applied together or not at all.
pub fn add_many(b: ItemsBody) -> Vec<CartCommand> {
    add_requests(b).into_iter().map(CartCommand::AddSku).collect()
}

/// Replace all lines.
pub fn set_items(b: ItemsBody) -> CartCommand {
    CartCommand::SetItems(add_requests(b))
}

/// Change a line's quantity.
pub fn change_quantity(id: i64, quantity: i32) -> CartCommand {
    CartCommand::ChangeQuantity(ChangeQuantity { id, quantity })
}

/// Remove a line.
pub fn remove_item(id: i64) -> CartCommand {
    CartCommand::RemoveItem(RemoveItem { id })
}

/// Deliver some lines at the provider's configured fee (any price sent is ignored).
pub fn set_delivery(b: DeliveryBody) -> CartCommand {
    CartCommand::SetDelivery(delivery(b))
}

/// Deliver some lines for a trusted caller: at its fee when it names one.
pub fn set_delivery_trusted(b: DeliveryBody) -> CartCommand {
    match b.price {
        Some(_) => CartCommand::SetDeliveryWithFee(delivery(b)),
        None => CartCommand::SetDelivery(delivery(b)),
    }
}

fn delivery(b: DeliveryBody) -> SetDelivery {
    SetDelivery {
        provider: b.provider,
        items: b.items,
        pickup_point: b.pickup_point.map(Into::into),
        price: b.price.unwrap_or(0),
        tax: None,
    }
}

/// Remove a delivery.
pub fn remove_delivery(id: i64) -> CartCommand {
    CartCommand::RemoveDelivery(RemoveDelivery { id })
}

/// Set a delivery's pickup point.
pub fn set_pickup_point(delivery_id: i64, p: PickupPoint) -> CartCommand {
    CartCommand::SetPickupPoint(SetPickupPoint { delivery_id, pickup_point: Some(p.into()) })
}
