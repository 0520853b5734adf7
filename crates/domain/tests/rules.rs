//! The cart's rules, one mutation at a time.

use cart_domain::proto::{
    AddItem, ChangeQuantity, CreateCheckoutOrder, OrderCompleted, PickupPoint, RemoveDelivery,
    RemoveItem, SetCartItems, SetDelivery, SetPickupPoint,
};
use cart_domain::{Cart, CartError, CartEvent, ItemInterner};

fn item(sku: &str, price: i64, qty: i32) -> AddItem {
    AddItem {
        sku: sku.into(),
        name: format!("Product {sku}"),
        price,
        quantity: qty,
        tax: 2500,
        currency: "SEK".into(),
        country: "se".into(),
        ..Default::default()
    }
}

struct Fixture {
    cart: Cart,
    items: ItemInterner,
}

impl Fixture {
    fn new() -> Self {
        Fixture { cart: Cart::new("c1".into()), items: ItemInterner::new() }
    }

    fn apply(&mut self, m: CartEvent) -> Result<(), CartError> {
        self.cart.apply(&m, &self.items)
    }

    fn ok(&mut self, m: CartEvent) {
        self.apply(m).unwrap();
    }

    /// Applies a mutation that must fail and checks it left the cart alone.
    fn refused(&mut self, m: CartEvent) -> CartError {
        let before = self.cart.clone();
        let err = self.apply(m).unwrap_err();
        assert_eq!(self.cart, before, "a refused mutation changed the cart");
        err
    }
}

#[test]
fn adding_the_same_sku_raises_the_quantity_of_one_line() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("100", 1000, 1)));
    f.ok(CartEvent::AddItem(item("100", 1000, 2)));
    assert_eq!(f.cart.lines().len(), 1);
    assert_eq!(f.cart.lines()[0].qty, 3);
    assert_eq!(f.cart.version(), 2);
}

#[test]
fn the_same_sku_in_another_store_is_another_line() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("100", 1000, 1)));
    let mut in_store = item("100", 1000, 1);
    in_store.store_id = Some("2001".into());
    f.ok(CartEvent::AddItem(in_store));
    assert_eq!(f.cart.lines().len(), 2);
}

#[test]
fn totals_include_deliveries_and_vat_per_line() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 12_500, 2))); // 25 000, VAT 5 000
    let mut food = item("b", 1_060, 1); // 6 % VAT: 1060 -> net 1000, VAT 60
    food.tax = 600;
    f.ok(CartEvent::AddItem(food));
    f.ok(CartEvent::SetDelivery(SetDelivery {
        provider: "postnord".into(),
        items: vec![1, 2],
        price: 4_900, // highest line rate, 25 %: VAT 980
        ..Default::default()
    }));
    let t = f.cart.totals();
    assert_eq!(t.price, 25_000 + 1_060 + 4_900);
    assert_eq!(t.tax, 5_000 + 60 + 980);
}

#[test]
fn discount_is_the_drop_from_the_previous_price() {
    let mut f = Fixture::new();
    let mut sale = item("a", 800, 3);
    sale.org_price = 1_000;
    f.ok(CartEvent::AddItem(sale));
    assert_eq!(f.cart.totals().discount, 600);
}

#[test]
fn quantity_limits_are_enforced() {
    let mut f = Fixture::new();
    assert!(matches!(
        f.refused(CartEvent::AddItem(item("a", 1, 0))),
        CartError::InvalidQuantity { .. }
    ));
    assert!(matches!(
        f.refused(CartEvent::AddItem(item("a", 1, 1000))),
        CartError::InvalidQuantity { .. }
    ));
    f.ok(CartEvent::AddItem(item("a", 1, 999)));
    assert!(matches!(
        f.refused(CartEvent::AddItem(item("a", 1, 1))),
        CartError::InvalidQuantity { .. }
    ));
    assert!(matches!(
        f.refused(CartEvent::ChangeQuantity(ChangeQuantity { id: 1, quantity: -1 })),
        CartError::InvalidQuantity { .. }
    ));
}

#[test]
fn change_quantity_to_zero_removes_the_line_and_ids_are_not_reused() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 1, 1)));
    f.ok(CartEvent::ChangeQuantity(ChangeQuantity { id: 1, quantity: 0 }));
    assert!(f.cart.lines().is_empty());
    f.ok(CartEvent::AddItem(item("a", 1, 1)));
    assert_eq!(f.cart.lines()[0].id, 2);
}

#[test]
fn a_cart_holds_at_most_500_lines() {
    let mut f = Fixture::new();
    for i in 0..500 {
        f.ok(CartEvent::AddItem(item(&i.to_string(), 1, 1)));
    }
    assert_eq!(
        f.refused(CartEvent::AddItem(item("x", 1, 1))),
        CartError::TooManyLines { max: 500 }
    );
    // Raising an existing line is still fine.
    f.ok(CartEvent::AddItem(item("7", 1, 1)));
}

#[test]
fn deliveries_cover_existing_lines_only_and_follow_removals() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 1, 1)));
    f.ok(CartEvent::AddItem(item("b", 1, 1)));
    let delivery = |items: Vec<i64>| {
        CartEvent::SetDelivery(SetDelivery { provider: "dhl".into(), items, ..Default::default() })
    };
    assert_eq!(f.refused(delivery(vec![1, 9])), CartError::LineNotFound(9));
    assert_eq!(f.refused(delivery(vec![])), CartError::EmptyDelivery);
    f.ok(delivery(vec![1, 2]));
    f.ok(CartEvent::RemoveItem(RemoveItem { id: 1 }));
    assert_eq!(f.cart.deliveries()[0].items, vec![2]);
    f.ok(CartEvent::RemoveItem(RemoveItem { id: 2 }));
    assert!(f.cart.deliveries().is_empty(), "an empty delivery is dropped");
}

#[test]
fn a_line_moves_to_the_newest_delivery() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 1, 1)));
    f.ok(CartEvent::AddItem(item("b", 1, 1)));
    let set = |p: &str, items| {
        CartEvent::SetDelivery(SetDelivery { provider: p.into(), items, ..Default::default() })
    };
    f.ok(set("dhl", vec![1, 2]));
    f.ok(set("postnord", vec![2]));
    let d = f.cart.deliveries();
    assert_eq!((d[0].id, d[0].items.clone()), (1, vec![1]));
    assert_eq!((d[1].id, d[1].items.clone()), (2, vec![2]));
}

#[test]
fn pickup_points_and_delivery_removal() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 1, 1)));
    f.ok(CartEvent::SetDelivery(SetDelivery {
        provider: "dhl".into(),
        items: vec![1],
        ..Default::default()
    }));
    let point = PickupPoint { id: "p1".into(), city: Some("Lund".into()), ..Default::default() };
    assert_eq!(
        f.refused(CartEvent::SetPickupPoint(SetPickupPoint {
            delivery_id: 7,
            pickup_point: Some(point.clone())
        })),
        CartError::DeliveryNotFound(7)
    );
    f.ok(CartEvent::SetPickupPoint(SetPickupPoint { delivery_id: 1, pickup_point: Some(point) }));
    assert_eq!(f.cart.deliveries()[0].pickup_point.as_ref().unwrap().city.as_deref(), Some("Lund"));
    f.ok(CartEvent::RemoveDelivery(RemoveDelivery { id: 1 }));
    assert_eq!(
        f.refused(CartEvent::RemoveDelivery(RemoveDelivery { id: 1 })),
        CartError::DeliveryNotFound(1)
    );
}

#[test]
fn the_cart_keeps_one_currency() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 1, 1)));
    let mut nok = item("b", 1, 1);
    nok.currency = "NOK".into();
    assert!(matches!(f.refused(CartEvent::AddItem(nok)), CartError::CurrencyMismatch { .. }));
    assert_eq!(f.cart.currency(), Some("SEK"));
}

#[test]
fn bad_fields_are_refused() {
    let mut f = Fixture::new();
    assert!(matches!(
        f.refused(CartEvent::AddItem(item("", 1, 1))),
        CartError::InvalidField { field: "sku", .. }
    ));
    assert!(matches!(
        f.refused(CartEvent::AddItem(item("a", -1, 1))),
        CartError::InvalidField { field: "price", .. }
    ));
    let mut bad_tax = item("a", 1, 1);
    bad_tax.tax = 10_001;
    assert!(matches!(
        f.refused(CartEvent::AddItem(bad_tax)),
        CartError::InvalidField { field: "tax", .. }
    ));
    for dots in [".", ".."] {
        assert!(matches!(
            f.refused(CartEvent::AddItem(item(dots, 1, 1))),
            CartError::InvalidField { field: "sku", .. }
        ));
    }
    let unresolved = SetCartItems { requests: vec![Default::default()], items: vec![] };
    assert!(matches!(
        f.refused(CartEvent::SetCartItems(unresolved)),
        CartError::InvalidField { field: "requests", .. }
    ));
}

#[test]
fn at_the_delivery_limit_redelivering_a_whole_delivery_fits() {
    use cart_domain::limits::MAX_DELIVERIES;
    let mut f = Fixture::new();
    for i in 0..MAX_DELIVERIES {
        f.ok(CartEvent::AddItem(item(&format!("sku{i}"), 100, 1)));
        let line = i64::try_from(i + 1).unwrap();
        f.ok(CartEvent::SetDelivery(SetDelivery {
            provider: "dhl".into(),
            items: vec![line],
            ..Default::default()
        }));
    }
    assert_eq!(f.cart.deliveries().len(), MAX_DELIVERIES);
    // Moving delivery 1's only line empties it: the result still fits.
    f.ok(CartEvent::SetDelivery(SetDelivery {
        provider: "postnord".into(),
        items: vec![1],
        ..Default::default()
    }));
    assert_eq!(f.cart.deliveries().len(), MAX_DELIVERIES);
    // Splitting a delivery's lines off (nothing emptied) does not.
    f.ok(CartEvent::AddItem(item("extra", 100, 1)));
    f.ok(CartEvent::SetDelivery(SetDelivery {
        provider: "dhl".into(),
        items: vec![1, 51],
        ..Default::default()
    }));
    assert_eq!(
        f.refused(CartEvent::SetDelivery(SetDelivery {
            provider: "dhl".into(),
            items: vec![51],
            ..Default::default()
        })),
        CartError::TooManyDeliveries { max: MAX_DELIVERIES }
    );
}

#[test]
fn a_restored_cart_reads_like_the_original() {
    use cart_domain::{RestoredCart, cart::CheckoutState};
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 1250, 2)));
    f.ok(CartEvent::AddItem(item("b", 990, 1)));
    f.ok(CartEvent::SetDelivery(SetDelivery {
        provider: "dhl".into(),
        items: vec![2],
        price: 4900,
        ..Default::default()
    }));
    f.ok(CartEvent::CreateCheckoutOrder(CreateCheckoutOrder {
        order_id: "o1".into(),
        status: "checkout_incomplete".into(),
        cart_version: 3,
        amount: 8390,
        editing: false,
    }));
    let c = &f.cart;
    let parts = RestoredCart {
        id: c.id().into(),
        version: c.version(),
        lines: c.lines().to_vec(),
        deliveries: c.deliveries().to_vec(),
        market: Some(("se".into(), "SEK".into())),
        checkout: c.checkout().cloned(),
    };
    let restored = cart_domain::Cart::restore(parts).unwrap();
    assert_eq!(restored.to_json(), c.to_json());
    let _: Option<&CheckoutState> = restored.checkout();
}

#[test]
fn set_cart_items_replaces_lines_keeping_ids_of_kept_products() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 1, 1)));
    f.ok(CartEvent::AddItem(item("b", 1, 1)));
    f.ok(CartEvent::SetDelivery(SetDelivery {
        provider: "dhl".into(),
        items: vec![1, 2],
        ..Default::default()
    }));
    f.ok(CartEvent::SetCartItems(SetCartItems {
        requests: vec![],
        items: vec![item("b", 1, 4), item("c", 1, 1), item("c", 1, 1)],
    }));
    let lines: Vec<_> = f.cart.lines().iter().map(|l| (l.id, &*l.info.sku, l.qty)).collect();
    assert_eq!(lines, vec![(2, "b", 4), (3, "c", 2)]);
    assert_eq!(f.cart.deliveries()[0].items, vec![2]);
}

#[test]
fn checkout_locks_the_amount_until_completion_or_editing() {
    let mut f = Fixture::new();
    f.ok(CartEvent::AddItem(item("a", 1, 1)));
    let order = |editing| {
        CartEvent::CreateCheckoutOrder(CreateCheckoutOrder {
            order_id: "k-1".into(),
            status: "checkout_incomplete".into(),
            cart_version: 1,
            amount: 1,
            editing,
        })
    };
    f.ok(order(false));
    assert!(f.cart.payment_in_progress());
    assert_eq!(f.cart.order_reference(), Some("k-1"));
    // The amount is locked while the shopper is in checkout...
    assert_eq!(f.refused(CartEvent::AddItem(item("b", 1, 1))), CartError::CheckoutInProgress);
    assert_eq!(
        f.refused(CartEvent::ChangeQuantity(ChangeQuantity { id: 1, quantity: 2 })),
        CartError::CheckoutInProgress
    );
    // ...but not the pickup point or anything that leaves it alone.
    // Leaving checkout to edit keeps the order and unlocks the cart.
    f.ok(order(true));
    assert!(!f.cart.payment_in_progress());
    f.ok(CartEvent::AddItem(item("b", 1, 1)));
    f.ok(order(false));
    let completed = |acknowledged| {
        CartEvent::OrderCompleted(OrderCompleted {
            order_id: "k-1".into(),
            status: "checkout_complete".into(),
            acknowledged,
        })
    };
    assert_eq!(
        f.refused(CartEvent::OrderCompleted(OrderCompleted {
            order_id: "other".into(),
            status: String::new(),
            acknowledged: false
        })),
        CartError::OrderMismatch("other".into())
    );
    f.ok(completed(false));
    assert_eq!(f.cart.payment_status(), Some("checkout_completed"));
    assert!(!f.cart.payment_in_progress());
    // Exactly once: a second completion is refused; the acknowledgement
    // may follow once.
    assert_eq!(f.refused(completed(false)), CartError::OrderAlreadyCompleted);
    f.ok(completed(true));
    assert!(f.cart.checkout().unwrap().acknowledged);
    assert_eq!(f.refused(completed(true)), CartError::OrderAlreadyCompleted);
    // A completed cart's amount never changes again.
    assert_eq!(f.refused(CartEvent::AddItem(item("c", 1, 1))), CartError::OrderAlreadyCompleted);
    assert_eq!(f.refused(order(false)), CartError::OrderAlreadyCompleted);
}

#[test]
fn json_has_the_storefront_shape() {
    let mut f = Fixture::new();
    let mut a = item("861201", 515_900, 1);
    a.item_id = 861201;
    a.brand = "AMD".into();
    a.category = "Gaming".into();
    a.name = "Ryzen \"X\" 7\n<b>".into();
    f.ok(CartEvent::AddItem(a));
    f.ok(CartEvent::SetDelivery(SetDelivery {
        provider: "postnord".into(),
        items: vec![1],
        price: 4_900,
        ..Default::default()
    }));
    let v: serde_json::Value = serde_json::from_slice(&f.cart.to_json()).unwrap();
    assert_eq!(v["id"], "c1");
    assert_eq!(v["version"], 2);
    assert_eq!(v["currency"], "SEK");
    assert_eq!(v["totalPrice"], 520_800);
    assert_eq!(v["totalTax"], 104_160);
    assert_eq!(v["totalDiscount"], 0);
    assert_eq!(v["processing"], false);
    assert_eq!(v["paymentInProgress"], false);
    let line = &v["items"][0];
    for key in
        ["id", "itemId", "sku", "name", "image", "price", "orgPrice", "qty", "stock", "tax", "type"]
    {
        assert!(line.get(key).is_some(), "line lacks {key}");
    }
    assert_eq!(line["itemId"], 861201);
    assert_eq!(line["brand"], "AMD");
    assert_eq!(line["name"], "Ryzen \"X\" 7\n<b>", "strings are escaped");
    assert!(line.get("category2").is_none(), "empty optional strings are left out");
    assert_eq!(line["category"], "Gaming");
    assert_eq!(line["tax"], 2500);
    let d = &v["deliveries"][0];
    assert_eq!(
        (d["id"].clone(), d["provider"].clone(), d["items"].clone(), d["price"].clone()),
        (1.into(), "postnord".into(), serde_json::json!([1]), 4_900.into())
    );
}
