//! The cart's JSON shape: the storefront contract (camelCase, amounts in minor
//! units), plus `version` and `currency`.
//!
//! Rendering the cart is on every request's path, so a line's product fields
//! (the same for every cart holding the product) are rendered once per
//! [`crate::ItemInfo`] (see [`crate::item`]) and copied in; the rest goes
//! through serde field by field.

use serde::Serialize;

use crate::cart::{Cart, CartLine, Delivery, PickupPoint};

/// Appends `,"name":value`.
fn member(out: &mut Vec<u8>, name: &str, value: &impl Serialize) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    // Serialising plain strings, numbers and derived structs into memory
    // cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn line(out: &mut Vec<u8>, l: &CartLine) {
    out.extend_from_slice(b"{\"id\":");
    let _ = serde_json::to_writer(&mut *out, &l.id);
    member(out, "price", &l.price);
    member(out, "orgPrice", &l.org_price);
    member(out, "qty", &l.qty);
    member(out, "stock", &l.stock);
    member(out, "tax", &l.tax);
    out.extend_from_slice(l.info.json.as_bytes());
    out.push(b'}');
}

impl Cart {
    /// The cart as storefront JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + 512 * self.lines().len());
        let totals = self.totals();
        out.extend_from_slice(b"{\"id\":");
        let _ = serde_json::to_writer(&mut out, self.id());
        member(&mut out, "version", &self.version());
        out.extend_from_slice(b",\"items\":[");
        for (i, l) in self.lines().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            line(&mut out, l);
        }
        out.push(b']');
        let deliveries: Vec<DeliveryView<'_>> =
            self.deliveries().iter().map(DeliveryView::from).collect();
        member(&mut out, "deliveries", &deliveries);
        member(&mut out, "totalPrice", &totals.price);
        member(&mut out, "totalTax", &totals.tax);
        member(&mut out, "totalDiscount", &totals.discount);
        if let Some(currency) = self.currency() {
            member(&mut out, "currency", &currency);
        }
        if let Some(country) = self.country() {
            member(&mut out, "country", &country);
        }
        member(&mut out, "processing", &false);
        member(&mut out, "paymentInProgress", &self.payment_in_progress());
        if let Some(reference) = self.order_reference() {
            member(&mut out, "orderReference", &reference);
        }
        if let Some(status) = self.payment_status() {
            member(&mut out, "paymentStatus", &status);
        }
        if let Some(checkout) = self.checkout() {
            member(&mut out, "checkout", &checkout);
        }
        out.push(b'}');
        out
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryView<'a> {
    id: u32,
    provider: &'a str,
    items: &'a [u32],
    price: i64,
    tax: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pickup_point: Option<&'a PickupPoint>,
}

impl<'a> From<&'a Delivery> for DeliveryView<'a> {
    fn from(d: &'a Delivery) -> Self {
        DeliveryView {
            id: d.id,
            provider: &d.provider,
            items: &d.items,
            price: d.price,
            tax: d.tax,
            pickup_point: d.pickup_point.as_deref(),
        }
    }
}
