//! The cart's JSON shape: the storefront contract (camelCase, amounts in minor
//! units), plus `version` and `currency`.

use serde::Serialize as DeriveSerialize;
use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::cart::{Cart, CartLine, CheckoutView, Delivery, PickupPoint};

#[derive(DeriveSerialize)]
#[serde(rename_all = "camelCase")]
struct CartView<'a> {
    id: &'a str,
    version: u64,
    items: Lines<'a>,
    deliveries: Vec<DeliveryView<'a>>,
    total_price: i64,
    total_tax: i64,
    total_discount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<&'a str>,
    processing: bool,
    payment_in_progress: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkout: Option<CheckoutView<'a>>,
}

struct Lines<'a>(&'a [CartLine]);

impl Serialize for Lines<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for line in self.0 {
            seq.serialize_element(&LineView::from(line))?;
        }
        seq.end()
    }
}

fn is_empty(s: &&str) -> bool {
    s.is_empty()
}

#[derive(DeriveSerialize)]
#[serde(rename_all = "camelCase")]
struct LineView<'a> {
    id: u32,
    item_id: i64,
    sku: &'a str,
    name: &'a str,
    image: &'a str,
    price: i64,
    org_price: i64,
    qty: u32,
    stock: i32,
    tax: u32,
    #[serde(rename = "type")]
    article_type: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    brand: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    category: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    category2: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    category3: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    category4: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    category5: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    outlet: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    seller_id: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    seller_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_id: Option<&'a str>,
}

impl<'a> From<&'a CartLine> for LineView<'a> {
    fn from(l: &'a CartLine) -> Self {
        let i = &*l.info;
        LineView {
            id: l.id,
            item_id: i.item_id,
            sku: &i.sku,
            name: &i.name,
            image: &i.image,
            price: l.price,
            org_price: l.org_price,
            qty: l.qty,
            stock: l.stock,
            tax: l.tax,
            article_type: &i.article_type,
            brand: &i.brand,
            category: &i.categories[0],
            category2: &i.categories[1],
            category3: &i.categories[2],
            category4: &i.categories[3],
            category5: &i.categories[4],
            outlet: &i.outlet,
            seller_id: &i.seller_id,
            seller_name: &i.seller_name,
            store_id: i.store_id.as_deref(),
        }
    }
}

#[derive(DeriveSerialize)]
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

impl Serialize for Cart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let totals = self.totals();
        CartView {
            id: self.id(),
            version: self.version(),
            items: Lines(self.lines()),
            deliveries: self.deliveries().iter().map(DeliveryView::from).collect(),
            total_price: totals.price,
            total_tax: totals.tax,
            total_discount: totals.discount,
            currency: self.currency(),
            country: self.country(),
            processing: false,
            payment_in_progress: self.payment_in_progress(),
            order_reference: self.order_reference(),
            payment_status: self.payment_status(),
            checkout: self.checkout(),
        }
        .serialize(s)
    }
}

impl Cart {
    /// The cart as storefront JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + 512 * self.lines().len());
        // Serialising plain strings and integers into memory cannot fail.
        let _ = serde_json::to_writer(&mut out, self);
        out
    }
}
