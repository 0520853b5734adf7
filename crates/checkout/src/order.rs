//! The checkout order object and the money mapping from a cart.
//!
//! Every amount is integer minor units including VAT, and `tax_rate` is basis
//! points, exactly like the cart, so no conversion happens: a line's
//! `total_tax_amount` uses the cart's own rule (net truncated,
//! [`cart_domain::money::vat_included`]), which is Klarna's formula, and the
//! order totals equal the cart's `totalPrice` and `totalTax`.

use cart_domain::Cart;
use cart_domain::money::vat_included;
use serde::{Deserialize, Serialize};

use crate::CheckoutError;

/// Klarna's largest unit price and line total, in minor units.
pub const MAX_LINE_AMOUNT: i64 = 100_000_000;
/// Klarna's largest number of order lines.
pub const MAX_LINES: usize = 1000;

/// One order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// `physical` or `shipping_fee`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// SKU or delivery provider.
    #[serde(default)]
    pub reference: String,
    /// Display name.
    pub name: String,
    /// Quantity.
    pub quantity: i64,
    /// Unit of the quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity_unit: Option<String>,
    /// Unit price incl. VAT.
    pub unit_price: i64,
    /// VAT rate, basis points.
    pub tax_rate: u32,
    /// `quantity × unit_price`.
    pub total_amount: i64,
    /// VAT in `total_amount`.
    pub total_tax_amount: i64,
    /// Absolute image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

/// Where the provider sends the shopper and its callbacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantUrls {
    /// Terms page.
    pub terms: String,
    /// Checkout page.
    pub checkout: String,
    /// Confirmation page, with `{checkout.order.id}`.
    pub confirmation: String,
    /// Push callback, with `{checkout.order.id}`.
    pub push: String,
    /// Validation callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
}

impl MerchantUrls {
    /// The URLs of a service reachable at `public_url`.
    pub fn for_public_url(public_url: &str) -> Self {
        let base = public_url.trim_end_matches('/');
        MerchantUrls {
            terms: format!("{base}/terms"),
            checkout: format!("{base}/checkout"),
            confirmation: format!("{base}/confirmation/{{checkout.order.id}}"),
            push: format!("{base}/klarna/push?order_id={{checkout.order.id}}"),
            validation: Some(format!("{base}/klarna/validate")),
        }
    }
}

/// The order we send when creating or updating a checkout order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRequest {
    /// ISO country, upper case.
    pub purchase_country: String,
    /// ISO currency.
    pub purchase_currency: String,
    /// RFC 1766 locale.
    pub locale: String,
    /// Σ line totals.
    pub order_amount: i64,
    /// Σ line VAT.
    pub order_tax_amount: i64,
    /// The lines.
    pub order_lines: Vec<OrderLine>,
    /// Our cart id.
    pub merchant_reference1: String,
    /// `{"cart": id, "version": v}`.
    pub merchant_data: String,
    /// Callbacks and pages.
    pub merchant_urls: MerchantUrls,
}

/// The locale the provider's UI uses for a country.
pub fn locale_for(country: &str) -> &'static str {
    match country.to_ascii_lowercase().as_str() {
        "se" => "sv-SE",
        "no" => "nb-NO",
        "dk" => "da-DK",
        "fi" => "fi-FI",
        "de" => "de-DE",
        _ => "en-GB",
    }
}

fn absolute(public_url: &str, image: &str) -> Option<String> {
    if image.is_empty() {
        None
    } else if image.starts_with("http://") || image.starts_with("https://") {
        Some(image.to_owned())
    } else {
        Some(format!("{}/{}", public_url.trim_end_matches('/'), image.trim_start_matches('/')))
    }
}

fn line(
    kind: &str,
    reference: &str,
    name: &str,
    quantity: i64,
    unit_price: i64,
    tax_rate: u32,
) -> Result<OrderLine, CheckoutError> {
    let total_amount = unit_price.saturating_mul(quantity);
    if unit_price > MAX_LINE_AMOUNT || total_amount > MAX_LINE_AMOUNT {
        return Err(CheckoutError::Unpayable(format!(
            "{reference}: amount above {MAX_LINE_AMOUNT}"
        )));
    }
    let name = if name.is_empty() { reference } else { name };
    Ok(OrderLine {
        kind: kind.to_owned(),
        reference: reference.chars().take(255).collect(),
        name: name.chars().take(255).collect(),
        quantity,
        quantity_unit: (kind == "physical").then(|| "pcs".to_owned()),
        unit_price,
        tax_rate,
        total_amount,
        total_tax_amount: vat_included(total_amount, tax_rate),
        image_url: None,
    })
}

/// The checkout order for `cart`.
pub fn build(cart: &Cart, public_url: &str) -> Result<OrderRequest, CheckoutError> {
    if cart.lines().is_empty() {
        return Err(CheckoutError::EmptyCart);
    }
    let mut lines = Vec::with_capacity(cart.lines().len() + cart.deliveries().len());
    for item in cart.lines() {
        let info = &item.info;
        let mut l =
            line("physical", &info.sku, &info.name, i64::from(item.qty), item.price, item.tax)?;
        l.image_url = absolute(public_url, &info.image);
        lines.push(l);
    }
    for d in cart.deliveries() {
        lines.push(line("shipping_fee", &d.provider, &d.provider, 1, d.price, d.tax)?);
    }
    if lines.len() > MAX_LINES {
        return Err(CheckoutError::Unpayable(format!("more than {MAX_LINES} lines")));
    }
    let order_amount = lines.iter().map(|l| l.total_amount).sum();
    let order_tax_amount = lines.iter().map(|l| l.total_tax_amount).sum();
    let totals = cart.totals();
    if (order_amount, order_tax_amount) != (totals.price, totals.tax) {
        return Err(CheckoutError::Mismatch(format!("cart {} totals", cart.id())));
    }
    let country = cart.country().unwrap_or("se");
    Ok(OrderRequest {
        purchase_country: country.to_ascii_uppercase(),
        purchase_currency: cart.currency().unwrap_or("SEK").to_owned(),
        locale: locale_for(country).to_owned(),
        order_amount,
        order_tax_amount,
        order_lines: lines,
        merchant_reference1: cart.id().to_owned(),
        merchant_data: serde_json::json!({"cart": cart.id(), "version": cart.version()})
            .to_string(),
        merchant_urls: MerchantUrls::for_public_url(public_url),
    })
}

/// The provider's order, as read back (the fields we use; the rest is passed
/// to the storefront untouched).
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderOrder {
    /// Order id.
    pub order_id: String,
    /// `checkout_incomplete` or `checkout_complete` (any case).
    #[serde(default)]
    pub status: String,
    /// Order total.
    #[serde(default)]
    pub order_amount: i64,
    /// Lines.
    #[serde(default)]
    pub order_lines: Vec<OrderLine>,
    /// Our cart id.
    #[serde(default)]
    pub merchant_reference1: Option<String>,
}

impl ProviderOrder {
    /// Whether the customer completed the purchase.
    pub fn is_complete(&self) -> bool {
        self.status.eq_ignore_ascii_case("checkout_complete")
    }

    /// Whether the order carries exactly the lines and amount of `request`.
    pub fn matches(&self, request: &OrderRequest) -> bool {
        let key = |l: &OrderLine| {
            (l.kind.clone(), l.reference.clone(), l.quantity, l.unit_price, l.tax_rate)
        };
        self.order_amount == request.order_amount
            && self.order_lines.iter().map(key).eq(request.order_lines.iter().map(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use cart_domain::proto::{AddItem, SetDelivery};
    use cart_domain::{CartEvent, ItemInterner};

    /// A cart at version 7 with these lines (price, qty, tax) and
    /// deliveries (price, tax), built by the domain's own rules.
    fn cart(items: Vec<(i64, i64, u32)>, deliveries: Vec<(i64, u32)>) -> Cart {
        let interner = ItemInterner::new();
        let mut cart = Cart::new("c1".into());
        let mut apply = |e: CartEvent| cart.apply(&e, &interner).unwrap();
        for (i, (price, qty, tax)) in items.iter().enumerate() {
            apply(CartEvent::AddItem(AddItem {
                sku: format!("sku{i}"),
                name: format!("Item {i}"),
                image: "/image/x.jpg".into(),
                price: *price,
                quantity: i32::try_from(*qty).unwrap(),
                tax: i32::try_from(*tax).unwrap(),
                currency: "SEK".into(),
                country: "se".into(),
                ..Default::default()
            }));
        }
        for (line, (price, tax)) in (1..).zip(deliveries) {
            apply(CartEvent::SetDelivery(SetDelivery {
                provider: "postnord".into(),
                items: vec![line],
                price,
                tax: Some(i32::try_from(tax).unwrap()),
                ..Default::default()
            }));
        }
        while !items.is_empty() && cart.version() < 7 {
            cart.apply(
                &CartEvent::ChangeQuantity(cart_domain::proto::ChangeQuantity {
                    id: 1,
                    quantity: i32::try_from(items[0].1).unwrap(),
                }),
                &interner,
            )
            .unwrap();
        }
        cart
    }

    /// Klarna's rule: total_tax_amount within ±1 of the formula.
    fn klarna_tax_ok(l: &OrderLine) -> bool {
        let exact = l.total_amount as f64
            - l.total_amount as f64 * 10000.0 / (10000.0 + f64::from(l.tax_rate));
        (l.total_tax_amount as f64 - exact).abs() <= 1.0
    }

    #[test]
    fn the_worked_example_of_the_reference_maps_exactly() {
        // 2 × 129.00 at 25 %, 1 × 56.00 at 12 %, shipping 49.00 at 25 %.
        let c = cart(vec![(12_900, 2, 2500), (5_600, 1, 1200)], vec![(4_900, 2500)]);
        let o = build(&c, "https://shop.example").unwrap();
        let taxes: Vec<i64> = o.order_lines.iter().map(|l| l.total_tax_amount).collect();
        assert_eq!(taxes, vec![5160, 600, 980]);
        assert_eq!(o.order_amount, 25_800 + 5_600 + 4_900);
        assert_eq!(o.order_tax_amount, 5160 + 600 + 980);
        assert_eq!(o.order_lines[2].kind, "shipping_fee");
        assert_eq!(o.order_lines[0].image_url.as_deref(), Some("https://shop.example/image/x.jpg"));
        assert_eq!(
            (o.purchase_country.as_str(), o.purchase_currency.as_str(), o.locale.as_str()),
            ("SE", "SEK", "sv-SE")
        );
        assert_eq!(o.merchant_reference1, "c1");
        assert_eq!(
            o.merchant_urls.confirmation,
            "https://shop.example/confirmation/{checkout.order.id}"
        );
        let data: serde_json::Value = serde_json::from_str(&o.merchant_data).unwrap();
        assert_eq!(data, serde_json::json!({"cart": "c1", "version": 7}));
    }

    #[test]
    fn odd_amounts_at_several_rates_stay_within_klarnas_rule_and_sum_up() {
        for (price, qty) in [(1, 1), (3, 7), (99_999, 3), (10_001, 999), (12_345, 11)] {
            let c = cart(
                vec![
                    (price, qty, 2500),
                    (price + 1, qty, 1200),
                    (price + 2, 1, 600),
                    (price, 1, 0),
                ],
                vec![(4_900, 2500), (1_999, 600)],
            );
            let o = build(&c, "http://x").unwrap();
            assert!(o.order_lines.iter().all(klarna_tax_ok), "{o:?}");
            assert_eq!(o.order_amount, o.order_lines.iter().map(|l| l.total_amount).sum::<i64>());
            assert_eq!(
                o.order_tax_amount,
                o.order_lines.iter().map(|l| l.total_tax_amount).sum::<i64>()
            );
            assert_eq!((o.order_amount, o.order_tax_amount), (c.totals().price, c.totals().tax));
        }
    }

    #[test]
    fn carts_klarna_cannot_take_are_refused() {
        assert!(matches!(build(&cart(vec![], vec![]), "http://x"), Err(CheckoutError::EmptyCart)));
        let big = cart(vec![(60_000_000, 2, 2500)], vec![]);
        assert!(matches!(build(&big, "http://x"), Err(CheckoutError::Unpayable(_))));
    }

    #[test]
    fn a_read_back_order_matches_its_request_only_if_lines_and_amount_agree() {
        let c = cart(vec![(100, 2, 2500)], vec![]);
        let o = build(&c, "http://x").unwrap();
        let read = ProviderOrder {
            order_id: "k".into(),
            status: "CHECKOUT_COMPLETE".into(),
            order_amount: o.order_amount,
            order_lines: o.order_lines.clone(),
            merchant_reference1: Some("c1".into()),
        };
        assert!(read.is_complete());
        assert!(read.matches(&o));
        let changed = build(&cart(vec![(100, 3, 2500)], vec![]), "http://x").unwrap();
        assert!(!read.matches(&changed));
    }
}
