//! Cart state and the rules of every mutation.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::CartError;
use crate::item::{ItemInfo, ItemInterner};
use crate::kinds::CartEvent;
use crate::limits::{
    MAX_CART_JSON_BYTES, MAX_COUNTRY_LEN, MAX_DELIVERIES, MAX_LINES, MAX_PRICE, MAX_QUANTITY,
    MAX_SKU_LEN, MAX_STORE_ID_LEN, MAX_TAX_RATE, MAX_TEXT_LEN, MIN_QUANTITY,
};
use crate::money::vat_included;
use crate::proto;

pub mod snapshot;

/// The literal the storefront compares `paymentStatus` with once an order is
/// complete.
pub const PAYMENT_STATUS_COMPLETED: &str = "checkout_completed";

/// One shopping cart: its lines, deliveries and checkout status.
///
/// Totals are not stored; they are derived from the lines and deliveries
/// whenever they are read, so they can never disagree with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cart {
    id: Arc<str>,
    version: u64,
    lines: Vec<CartLine>,
    deliveries: Vec<Delivery>,
    next_line_id: u32,
    next_delivery_id: u32,
    market: Option<Box<Market>>,
    checkout: Option<Box<CheckoutState>>,
}

/// A cart as the grain runtime shares it: read-only, cheap to clone, never
/// changing under its reader. The HTTP edge renders it as JSON; the cluster
/// sends it as the wire's `CartState`.
pub type CartState = Arc<Cart>;

/// The market a cart trades in, fixed by its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Market {
    country: Box<str>,
    currency: Box<str>,
}

/// The cart's checkout: the payment provider's order for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutState {
    /// The payment provider's order id.
    pub order_id: String,
    /// The provider's last known status.
    pub status: String,
    /// The cart version the order was built from.
    pub cart_version: u64,
    /// The order amount it was built with (minor units).
    pub amount: i64,
    /// The shopper left checkout to edit the cart.
    pub editing: bool,
    /// The order completed.
    pub completed: bool,
    /// The completion was acknowledged to the provider.
    pub acknowledged: bool,
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq)]
pub struct CartLine {
    /// Line id, allocated by the cart, never reused within it.
    pub id: u32,
    /// Quantity, `MIN_QUANTITY..=MAX_QUANTITY`.
    pub qty: u32,
    /// Unit price, minor units including VAT.
    pub price: i64,
    /// Previous unit price (0 when not discounted).
    pub org_price: i64,
    /// Stock level when the line was added.
    pub stock: i32,
    /// VAT rate in basis points.
    pub tax: u32,
    /// Shared descriptive fields.
    pub info: Arc<ItemInfo>,
}

impl CartLine {
    /// Unit price times quantity.
    pub fn total(&self) -> i64 {
        self.price.saturating_mul(i64::from(self.qty))
    }

    /// Discount on the whole line: the drop from the previous price.
    pub fn discount(&self) -> i64 {
        (self.org_price - self.price).max(0).saturating_mul(i64::from(self.qty))
    }
}

/// A delivery covering some lines of the cart.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Delivery id, allocated by the cart, never reused within it.
    pub id: u32,
    /// Carrier or shipping option type.
    pub provider: Box<str>,
    /// Line ids covered.
    pub items: Vec<u32>,
    /// Fee, minor units including VAT.
    pub price: i64,
    /// VAT rate of the fee, basis points.
    pub tax: u32,
    /// Where the parcel is picked up, if chosen.
    pub pickup_point: Option<Box<PickupPoint>>,
}

/// A pickup location, as the storefront sends and reads it:
/// `{id, name?, address?, city?, zip?, country?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickupPoint {
    /// Carrier's location id.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Street address.
    pub address: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Postal code.
    pub zip: Option<String>,
    /// Country code.
    pub country: Option<String>,
}

impl From<PickupPoint> for proto::PickupPoint {
    fn from(p: PickupPoint) -> Self {
        proto::PickupPoint {
            id: p.id,
            name: p.name,
            address: p.address,
            city: p.city,
            zip: p.zip,
            country: p.country,
        }
    }
}

impl From<proto::PickupPoint> for PickupPoint {
    fn from(p: proto::PickupPoint) -> Self {
        PickupPoint {
            id: p.id,
            name: p.name,
            address: p.address,
            city: p.city,
            zip: p.zip,
            country: p.country,
        }
    }
}

/// The parts of a cart as another node reports them; see [`Cart::restore`].
#[derive(Debug, Clone, Default)]
pub struct RestoredCart {
    /// The cart id.
    pub id: Arc<str>,
    /// Its version.
    pub version: u64,
    /// The lines (their product facts shared, see
    /// [`ItemInterner::intern_encoded`]).
    pub lines: Vec<CartLine>,
    /// The deliveries.
    pub deliveries: Vec<Delivery>,
    /// Country and currency, once the cart has had a line.
    pub market: Option<(String, String)>,
    /// The checkout, once started.
    pub checkout: Option<CheckoutState>,
}

/// Totals of a cart, all in minor units including VAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Lines plus deliveries.
    pub price: i64,
    /// VAT contained in `price`.
    pub tax: i64,
    /// Sum of line discounts.
    pub discount: i64,
}

impl Cart {
    /// An empty cart with this id, at version 0.
    pub fn new(id: Arc<str>) -> Self {
        Cart {
            id,
            version: 0,
            lines: Vec::new(),
            deliveries: Vec::new(),
            next_line_id: 1,
            next_delivery_id: 1,
            market: None,
            checkout: None,
        }
    }

    /// The cart id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many mutations have been applied.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The lines, in the order they were added.
    pub fn lines(&self) -> &[CartLine] {
        &self.lines
    }

    /// The deliveries, in the order they were set.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    /// The cart's currency, once it has had a line.
    pub fn currency(&self) -> Option<&str> {
        self.market.as_ref().map(|m| &*m.currency)
    }

    /// The cart's country, once it has had a line.
    pub fn country(&self) -> Option<&str> {
        self.market.as_ref().map(|m| &*m.country)
    }

    /// The checkout order id, once checkout has started.
    pub fn order_reference(&self) -> Option<&str> {
        self.checkout.as_ref().map(|c| &*c.order_id)
    }

    /// Whether a checkout order exists, the shopper is in checkout, and it
    /// has not completed. The amount cannot change meanwhile.
    pub fn payment_in_progress(&self) -> bool {
        self.checkout.as_ref().is_some_and(|c| !c.editing && !c.completed)
    }

    /// The checkout, once one was started.
    pub fn checkout(&self) -> Option<&CheckoutState> {
        self.checkout.as_deref()
    }

    /// Refuses mutations that would change the order amount while checkout
    /// is in progress or after the order completed.
    fn check_amount_may_change(&self, event: &CartEvent) -> Result<(), CartError> {
        let changes_amount = matches!(
            event,
            CartEvent::AddItem(_)
                | CartEvent::RemoveItem(_)
                | CartEvent::ChangeQuantity(_)
                | CartEvent::SetCartItems(_)
                | CartEvent::SetDelivery(_)
                | CartEvent::RemoveDelivery(_)
        );
        match self.checkout.as_deref() {
            Some(c) if changes_amount && c.completed => Err(CartError::OrderAlreadyCompleted),
            Some(c) if changes_amount && !c.editing => Err(CartError::CheckoutInProgress),
            _ => Ok(()),
        }
    }

    /// The payment status, once checkout has started.
    pub fn payment_status(&self) -> Option<&str> {
        self.checkout.as_ref().map(|c| &*c.status)
    }

    /// About how many bytes the cart's JSON takes (an upper estimate, cheap:
    /// the lines' pre-rendered product fields plus a fixed allowance per
    /// number and list), for [`Cart::check_size`].
    pub fn json_size_hint(&self) -> usize {
        const PER_LINE: usize = 160;
        const PER_DELIVERY: usize = 120;
        let lines: usize = self.lines.iter().map(|l| l.info.json.len() + PER_LINE).sum();
        let deliveries: usize = self
            .deliveries
            .iter()
            .map(|d| {
                let pickup = d.pickup_point.as_deref().map_or(0, |p| {
                    let optional = [&p.name, &p.address, &p.city, &p.zip, &p.country];
                    p.id.len()
                        + 80
                        + optional
                            .iter()
                            .map(|v| v.as_ref().map_or(0, |s| s.len() + 16))
                            .sum::<usize>()
                });
                d.provider.len() + d.items.len() * 8 + pickup + PER_DELIVERY
            })
            .sum();
        400 + self.id.len() + lines + deliveries
    }

    /// Refuses a cart that grew past [`MAX_CART_JSON_BYTES`] from
    /// `before` (its [`Cart::json_size_hint`] before the mutation), checked
    /// when a client's mutation is applied, not on replay: an old log always
    /// replays, and a cart already too large may still shrink.
    pub fn check_growth(&self, before: usize) -> Result<(), CartError> {
        let after = self.json_size_hint();
        if after > MAX_CART_JSON_BYTES && after > before {
            return Err(CartError::TooLarge { max_bytes: MAX_CART_JSON_BYTES });
        }
        Ok(())
    }

    /// Totals derived from lines and deliveries. Every line and delivery is
    /// taxed on its own (see [`crate::money`]) and the VAT amounts are summed.
    pub fn totals(&self) -> Totals {
        let mut t = Totals { price: 0, tax: 0, discount: 0 };
        for line in &self.lines {
            let total = line.total();
            t.price = t.price.saturating_add(total);
            t.tax = t.tax.saturating_add(vat_included(total, line.tax));
            t.discount = t.discount.saturating_add(line.discount());
        }
        for d in &self.deliveries {
            t.price = t.price.saturating_add(d.price);
            t.tax = t.tax.saturating_add(vat_included(d.price, d.tax));
        }
        t
    }

    /// Applies one event. On success the version grows by one; on error the
    /// cart is unchanged.
    pub fn apply(&mut self, event: &CartEvent, items: &ItemInterner) -> Result<(), CartError> {
        self.check_amount_may_change(event)?;
        match event {
            CartEvent::AddItem(m) => self.add_item(m, items)?,
            CartEvent::RemoveItem(m) => self.remove_line(m.id)?,
            CartEvent::ChangeQuantity(m) => self.change_quantity(m)?,
            CartEvent::SetDelivery(m) => self.set_delivery(m)?,
            CartEvent::RemoveDelivery(m) => {
                let index = self.delivery_index(m.id)?;
                self.deliveries.remove(index);
            }
            CartEvent::SetPickupPoint(m) => self.set_pickup_point(m)?,
            CartEvent::CreateCheckoutOrder(m) => self.create_checkout_order(m)?,
            CartEvent::SetCartItems(m) => self.set_cart_items(m, items)?,
            CartEvent::OrderCompleted(m) => self.order_completed(m)?,
        }
        self.version += 1;
        Ok(())
    }

    fn add_item(&mut self, m: &proto::AddItem, items: &ItemInterner) -> Result<(), CartError> {
        validate_add_item(m)?;
        let qty = quantity(i64::from(m.quantity))?;
        self.check_market(m)?;
        let store = m.store_id.as_deref();
        if let Some(line) = self.lines.iter_mut().find(|l| same_product(l, &m.sku, store)) {
            let merged = quantity(i64::from(line.qty) + i64::from(qty))?;
            let info =
                if line.info.describes(m) { Arc::clone(&line.info) } else { items.intern(m) };
            *line = build_line(line.id, merged, m, info);
        } else {
            if self.lines.len() >= MAX_LINES {
                return Err(CartError::TooManyLines { max: MAX_LINES });
            }
            let id = self.allocate_line_id();
            self.lines.push(build_line(id, qty, m, items.intern(m)));
        }
        self.set_market_from(m);
        Ok(())
    }

    fn change_quantity(&mut self, m: &proto::ChangeQuantity) -> Result<(), CartError> {
        let index = self.line_index(m.id)?;
        if m.quantity == 0 {
            return self.remove_line(m.id);
        }
        self.lines[index].qty = quantity(i64::from(m.quantity))?;
        Ok(())
    }

    fn remove_line(&mut self, id: i64) -> Result<(), CartError> {
        let index = self.line_index(id)?;
        let removed = self.lines.remove(index).id;
        for d in &mut self.deliveries {
            d.items.retain(|&line| line != removed);
        }
        self.deliveries.retain(|d| !d.items.is_empty());
        Ok(())
    }

    fn set_delivery(&mut self, m: &proto::SetDelivery) -> Result<(), CartError> {
        text("provider", &m.provider)?;
        if m.items.is_empty() {
            return Err(CartError::EmptyDelivery);
        }
        money("price", m.price)?;
        let mut covered = Vec::with_capacity(m.items.len());
        for &id in &m.items {
            let line = &self.lines[self.line_index(id)?];
            if !covered.contains(&line.id) {
                covered.push(line.id);
            }
        }
        let tax = match m.tax {
            Some(rate) => tax_rate(rate)?,
            None => self
                .lines
                .iter()
                .filter(|l| covered.contains(&l.id))
                .map(|l| l.tax)
                .max()
                .unwrap_or(0),
        };
        let pickup_point = m.pickup_point.as_ref().map(pickup_point).transpose()?;
        // Deliveries this one empties are dropped first; count what remains.
        let remaining = self
            .deliveries
            .iter()
            .filter(|d| d.items.iter().any(|line| !covered.contains(line)))
            .count();
        if remaining >= MAX_DELIVERIES {
            return Err(CartError::TooManyDeliveries { max: MAX_DELIVERIES });
        }
        for d in &mut self.deliveries {
            d.items.retain(|line| !covered.contains(line));
        }
        self.deliveries.retain(|d| !d.items.is_empty());
        let id = self.next_delivery_id;
        self.next_delivery_id += 1;
        self.deliveries.push(Delivery {
            id,
            provider: m.provider.as_str().into(),
            items: covered,
            price: m.price,
            tax,
            pickup_point: pickup_point.map(Box::new),
        });
        Ok(())
    }

    fn set_pickup_point(&mut self, m: &proto::SetPickupPoint) -> Result<(), CartError> {
        let index = self.delivery_index(m.delivery_id)?;
        let point = m
            .pickup_point
            .as_ref()
            .ok_or(CartError::InvalidField { field: "pickupPoint", reason: "is required" })?;
        let point = pickup_point(point)?;
        self.deliveries[index].pickup_point = Some(Box::new(point));
        Ok(())
    }

    fn create_checkout_order(&mut self, m: &proto::CreateCheckoutOrder) -> Result<(), CartError> {
        text("orderId", &m.order_id)?;
        if m.status.len() > MAX_TEXT_LEN {
            return Err(CartError::InvalidField { field: "status", reason: "is too long" });
        }
        if self.checkout.as_ref().is_some_and(|c| c.completed) {
            return Err(CartError::OrderAlreadyCompleted);
        }
        self.checkout = Some(Box::new(CheckoutState {
            order_id: m.order_id.clone(),
            status: m.status.clone(),
            cart_version: m.cart_version,
            amount: m.amount,
            editing: m.editing,
            completed: false,
            acknowledged: false,
        }));
        Ok(())
    }

    fn order_completed(&mut self, m: &proto::OrderCompleted) -> Result<(), CartError> {
        text("orderId", &m.order_id)?;
        let checkout = self
            .checkout
            .as_mut()
            .filter(|c| c.order_id == m.order_id)
            .ok_or_else(|| CartError::OrderMismatch(m.order_id.clone()))?;
        if checkout.completed {
            // Only the acknowledgement may follow a completion, once.
            if !m.acknowledged || checkout.acknowledged {
                return Err(CartError::OrderAlreadyCompleted);
            }
            checkout.acknowledged = true;
            return Ok(());
        }
        PAYMENT_STATUS_COMPLETED.clone_into(&mut checkout.status);
        checkout.completed = true;
        checkout.editing = false;
        checkout.acknowledged = m.acknowledged;
        Ok(())
    }

    fn set_cart_items(
        &mut self,
        m: &proto::SetCartItems,
        items: &ItemInterner,
    ) -> Result<(), CartError> {
        if !m.requests.is_empty() {
            return Err(CartError::InvalidField {
                field: "requests",
                reason: "must be resolved into items first",
            });
        }
        // Merge duplicates first so limits apply to the resulting lines.
        let mut wanted: Vec<(&proto::AddItem, u32)> = Vec::with_capacity(m.items.len());
        for item in &m.items {
            validate_add_item(item)?;
            let qty = quantity(i64::from(item.quantity))?;
            let store = item.store_id.as_deref();
            match wanted
                .iter_mut()
                .find(|(w, _)| w.sku == item.sku && w.store_id.as_deref() == store)
            {
                Some(entry) => *entry = (item, quantity(i64::from(entry.1) + i64::from(qty))?),
                None => wanted.push((item, qty)),
            }
        }
        if wanted.len() > MAX_LINES {
            return Err(CartError::TooManyLines { max: MAX_LINES });
        }
        let mut market = self.market.clone();
        for (item, _) in &wanted {
            check_market(market.as_deref(), item)?;
            if market.is_none() {
                market = market_of(item);
            }
        }
        let mut lines = Vec::with_capacity(wanted.len());
        for (item, qty) in wanted {
            let existing = self
                .lines
                .iter()
                .find(|l| same_product(l, &item.sku, item.store_id.as_deref()))
                .map(|l| l.id);
            let id = match existing {
                Some(id) => id,
                None => self.allocate_line_id(),
            };
            lines.push(build_line(id, qty, item, items.intern(item)));
        }
        self.lines = lines;
        let kept: Vec<u32> = self.lines.iter().map(|l| l.id).collect();
        for d in &mut self.deliveries {
            d.items.retain(|line| kept.contains(line));
        }
        self.deliveries.retain(|d| !d.items.is_empty());
        self.market = market;
        Ok(())
    }

    /// A cart rebuilt from its state as another node reported it, for
    /// reading (rendering, checkout). Lines are checked like an AddItem's.
    /// Line and delivery ids allocated later may differ from the original's,
    /// so a restored cart is never a base for new events: events are applied
    /// only on the owner.
    pub fn restore(parts: RestoredCart) -> Result<Cart, CartError> {
        if parts.lines.len() > MAX_LINES {
            return Err(CartError::TooManyLines { max: MAX_LINES });
        }
        if parts.deliveries.len() > MAX_DELIVERIES {
            return Err(CartError::TooManyDeliveries { max: MAX_DELIVERIES });
        }
        let mut ids: Vec<u32> = parts.lines.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(CartError::InvalidField { field: "items.id", reason: "is repeated" });
        }
        for line in &parts.lines {
            sku(&line.info.sku)?;
            quantity(i64::from(line.qty))?;
            money("price", line.price)?;
            money("orgPrice", line.org_price)?;
            tax_rate(i32::try_from(line.tax).unwrap_or(i32::MAX))?;
        }
        let mut cart = Cart::new(parts.id);
        cart.version = parts.version;
        cart.next_line_id = ids.last().copied().unwrap_or(0).saturating_add(1);
        cart.next_delivery_id =
            parts.deliveries.iter().map(|d| d.id).max().unwrap_or(0).saturating_add(1);
        cart.lines = parts.lines;
        cart.deliveries = parts.deliveries;
        cart.market = parts.market.map(|(country, currency)| {
            Box::new(Market { country: country.into(), currency: currency.into() })
        });
        cart.checkout = parts.checkout.map(Box::new);
        Ok(cart)
    }

    fn allocate_line_id(&mut self) -> u32 {
        let id = self.next_line_id;
        self.next_line_id += 1;
        id
    }

    fn line_index(&self, id: i64) -> Result<usize, CartError> {
        self.lines.iter().position(|l| i64::from(l.id) == id).ok_or(CartError::LineNotFound(id))
    }

    fn delivery_index(&self, id: i64) -> Result<usize, CartError> {
        self.deliveries
            .iter()
            .position(|d| i64::from(d.id) == id)
            .ok_or(CartError::DeliveryNotFound(id))
    }

    fn check_market(&self, m: &proto::AddItem) -> Result<(), CartError> {
        check_market(self.market.as_deref(), m)
    }

    fn set_market_from(&mut self, m: &proto::AddItem) {
        if self.market.is_none() {
            self.market = market_of(m);
        }
    }
}

fn market_of(m: &proto::AddItem) -> Option<Box<Market>> {
    (!m.currency.is_empty()).then(|| {
        Box::new(Market {
            country: m.country.as_str().into(),
            currency: m.currency.as_str().into(),
        })
    })
}

fn check_market(market: Option<&Market>, m: &proto::AddItem) -> Result<(), CartError> {
    match market {
        Some(market) if !m.currency.is_empty() && *market.currency != *m.currency => {
            Err(CartError::CurrencyMismatch {
                cart: market.currency.to_string(),
                item: m.currency.clone(),
            })
        }
        _ => Ok(()),
    }
}

fn same_product(line: &CartLine, sku: &str, store: Option<&str>) -> bool {
    &*line.info.sku == sku && line.info.store_id.as_deref() == store
}

fn build_line(id: u32, qty: u32, m: &proto::AddItem, info: Arc<ItemInfo>) -> CartLine {
    CartLine {
        id,
        qty,
        price: m.price,
        org_price: m.org_price,
        stock: m.stock,
        // Validated by `validate_add_item`.
        tax: u32::try_from(m.tax).unwrap_or(0),
        info,
    }
}

/// Checks an add-by-SKU request before the catalogue is asked: a SKU of sane
/// length and a quantity in range.
pub fn validate_add_request(r: &proto::AddRequest) -> Result<(), CartError> {
    sku(&r.sku)?;
    quantity(i64::from(r.quantity))?;
    if r.store_id.as_ref().is_some_and(|s| s.len() > MAX_STORE_ID_LEN) {
        return Err(CartError::InvalidField { field: "storeId", reason: "is too long" });
    }
    if r.country.as_ref().is_some_and(|c| c.len() > MAX_COUNTRY_LEN) {
        return Err(CartError::InvalidField { field: "country", reason: "is too long" });
    }
    Ok(())
}

/// Checks a replace-all-lines request before the catalogue is asked.
pub fn validate_set_cart_items(requests: &[proto::AddRequest]) -> Result<(), CartError> {
    if requests.len() > MAX_LINES {
        return Err(CartError::TooManyLines { max: MAX_LINES });
    }
    requests.iter().try_for_each(validate_add_request)
}

fn sku(sku: &str) -> Result<(), CartError> {
    if sku.is_empty() {
        return Err(CartError::InvalidField { field: "sku", reason: "is required" });
    }
    if sku.len() > MAX_SKU_LEN {
        return Err(CartError::InvalidField { field: "sku", reason: "is too long" });
    }
    // A dot segment would name another path at a catalogue addressed by URL.
    if sku == "." || sku == ".." {
        return Err(CartError::InvalidField { field: "sku", reason: "must not be . or .." });
    }
    Ok(())
}

fn validate_add_item(m: &proto::AddItem) -> Result<(), CartError> {
    sku(&m.sku)?;
    money("price", m.price)?;
    money("orgPrice", m.org_price)?;
    tax_rate(m.tax)?;
    Ok(())
}

fn quantity(q: i64) -> Result<u32, CartError> {
    u32::try_from(q)
        .ok()
        .filter(|q| (MIN_QUANTITY..=MAX_QUANTITY).contains(q))
        .ok_or(CartError::InvalidQuantity { got: q, min: MIN_QUANTITY, max: MAX_QUANTITY })
}

fn money(field: &'static str, amount: i64) -> Result<(), CartError> {
    if amount < 0 {
        return Err(CartError::InvalidField { field, reason: "must not be negative" });
    }
    if amount > MAX_PRICE {
        return Err(CartError::InvalidField { field, reason: "is too large" });
    }
    Ok(())
}

fn tax_rate(rate: i32) -> Result<u32, CartError> {
    u32::try_from(rate)
        .ok()
        .filter(|r| *r <= MAX_TAX_RATE)
        .ok_or(CartError::InvalidField { field: "tax", reason: "must be 0..=10000 basis points" })
}

fn text(field: &'static str, value: &str) -> Result<(), CartError> {
    if value.is_empty() {
        return Err(CartError::InvalidField { field, reason: "is required" });
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(CartError::InvalidField { field, reason: "is too long" });
    }
    Ok(())
}

fn pickup_point(p: &proto::PickupPoint) -> Result<PickupPoint, CartError> {
    text("pickupPoint.id", &p.id)?;
    let optional = |field: &'static str, v: &Option<String>| match v {
        Some(s) if s.len() > MAX_TEXT_LEN => {
            Err(CartError::InvalidField { field, reason: "is too long" })
        }
        other => Ok(other.clone()),
    };
    Ok(PickupPoint {
        id: p.id.clone(),
        name: optional("pickupPoint.name", &p.name)?,
        address: optional("pickupPoint.address", &p.address)?,
        city: optional("pickupPoint.city", &p.city)?,
        zip: optional("pickupPoint.zip", &p.zip)?,
        country: optional("pickupPoint.country", &p.country)?,
    })
}
