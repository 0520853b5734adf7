//! Properties over random mutation sequences: invariants always hold, and
//! replaying the encoded accepted mutations rebuilds the live cart.

use cart_domain::limits::{MAX_LINES, MAX_QUANTITY, MIN_QUANTITY};
use cart_domain::money::vat_included;
use cart_domain::proto::{
    AddItem, ChangeQuantity, PickupPoint, RemoveDelivery, RemoveItem, SetCartItems, SetDelivery,
    SetPickupPoint,
};
use cart_domain::{Cart, CartEvent, ItemInterner};
use proptest::prelude::*;

fn add_item() -> impl Strategy<Value = AddItem> {
    (
        0..12u8,
        0..200_000i64,
        -2..1_002i32,
        prop_oneof![Just(2500), Just(1200), Just(600), Just(0)],
        any::<bool>(),
    )
        .prop_map(|(sku, price, quantity, tax, discounted)| AddItem {
            sku: format!("sku{sku}"),
            name: format!("Product {sku}"),
            price,
            org_price: if discounted { price + 1_000 } else { 0 },
            quantity,
            tax,
            currency: "SEK".into(),
            country: "se".into(),
            ..Default::default()
        })
}

fn mutation() -> impl Strategy<Value = CartEvent> {
    let line = 0..15i64;
    prop_oneof![
        4 => add_item().prop_map(CartEvent::AddItem),
        1 => line.clone().prop_map(|id| CartEvent::RemoveItem(RemoveItem { id })),
        2 => (line.clone(), -1..1_001i32)
            .prop_map(|(id, quantity)| CartEvent::ChangeQuantity(ChangeQuantity { id, quantity })),
        1 => (proptest::collection::vec(line.clone(), 0..4), 0..10_000i64).prop_map(|(items, price)| {
            CartEvent::SetDelivery(SetDelivery { provider: "postnord".into(), items, price, ..Default::default() })
        }),
        1 => (0..6i64).prop_map(|id| CartEvent::RemoveDelivery(RemoveDelivery { id })),
        1 => (0..6i64).prop_map(|delivery_id| CartEvent::SetPickupPoint(SetPickupPoint {
            delivery_id,
            pickup_point: Some(PickupPoint { id: "p".into(), ..Default::default() }),
        })),
        1 => proptest::collection::vec(add_item(), 0..4)
            .prop_map(|items| CartEvent::SetCartItems(SetCartItems { requests: vec![], items })),
    ]
}

fn check_invariants(cart: &Cart) -> Result<(), TestCaseError> {
    let lines = cart.lines();
    prop_assert!(lines.len() <= MAX_LINES);
    let mut ids: Vec<u32> = lines.iter().map(|l| l.id).collect();
    ids.sort_unstable();
    ids.dedup();
    prop_assert_eq!(ids.len(), lines.len(), "line ids are unique");
    for l in lines {
        prop_assert!((MIN_QUANTITY..=MAX_QUANTITY).contains(&l.qty));
    }
    for d in cart.deliveries() {
        prop_assert!(!d.items.is_empty());
        for i in &d.items {
            prop_assert!(ids.binary_search(i).is_ok(), "delivery covers a missing line");
        }
    }
    let t = cart.totals();
    let expected_price: i64 = lines.iter().map(|l| l.price * i64::from(l.qty)).sum::<i64>()
        + cart.deliveries().iter().map(|d| d.price).sum::<i64>();
    prop_assert_eq!(t.price, expected_price);
    let expected_tax: i64 =
        lines.iter().map(|l| vat_included(l.price * i64::from(l.qty), l.tax)).sum::<i64>()
            + cart.deliveries().iter().map(|d| vat_included(d.price, d.tax)).sum::<i64>();
    prop_assert_eq!(t.tax, expected_tax);
    prop_assert!(t.tax >= 0 && t.tax <= t.price);
    prop_assert!(t.discount >= 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invariants_hold_and_replay_rebuilds_the_live_cart(ms in proptest::collection::vec(mutation(), 0..60)) {
        let items = ItemInterner::new();
        let mut live = Cart::new("c".into());
        let mut log: Vec<(u8, Vec<u8>)> = Vec::new();
        for m in &ms {
            let before = live.clone();
            match live.apply(m, &items) {
                Ok(()) => {
                    prop_assert_eq!(live.version(), before.version() + 1);
                    log.push((m.kind().code(), m.encode_payload()));
                }
                Err(_) => prop_assert_eq!(&live, &before, "a refused mutation changed the cart"),
            }
            check_invariants(&live)?;
        }
        let mut replayed = Cart::new("c".into());
        for (code, payload) in &log {
            let m = CartEvent::decode(u32::from(*code), payload).unwrap();
            replayed.apply(&m, &items).unwrap();
        }
        prop_assert_eq!(replayed.to_json(), live.to_json());
        prop_assert_eq!(replayed, live);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A snapshot taken at any point, plus the events after it, rebuilds the
    /// same cart as replaying everything: the same state, and the same
    /// answers to every later event (line and delivery ids included).
    #[test]
    fn a_snapshot_at_any_point_then_the_rest_rebuilds_the_live_cart(
        ms in proptest::collection::vec(mutation(), 0..60),
        at in any::<proptest::sample::Index>(),
    ) {
        let items = ItemInterner::new();
        let mut live = Cart::new("c".into());
        let cut = at.index(ms.len() + 1);
        let mut from_snapshot: Option<Cart> = None;
        for (i, m) in ms.iter().enumerate() {
            if i == cut {
                let bytes = live.snapshot(vec![]);
                let (restored, keys) = Cart::from_snapshot("c".into(), &bytes, &ItemInterner::new()).unwrap();
                prop_assert!(keys.is_empty());
                prop_assert_eq!(&restored, &live);
                prop_assert_eq!(restored.snapshot(vec![]), bytes, "snapshots are stable");
                from_snapshot = Some(restored);
            }
            let accepted = live.apply(m, &items).is_ok();
            if let Some(cart) = from_snapshot.as_mut() {
                prop_assert_eq!(cart.apply(m, &items).is_ok(), accepted);
            }
        }
        if let Some(cart) = from_snapshot {
            prop_assert_eq!(cart.to_json(), live.to_json());
            prop_assert_eq!(cart, live);
        }
    }
}

#[test]
fn a_snapshot_keeps_its_keys_and_refuses_what_it_cannot_read() {
    use cart_domain::cart::snapshot::{SnapshotError, SnapshotKey, wire};
    use prost::Message;
    let items = ItemInterner::new();
    let mut cart = Cart::new("c".into());
    cart.apply(
        &CartEvent::AddItem(AddItem {
            sku: "1".into(),
            price: 100,
            quantity: 1,
            currency: "SEK".into(),
            country: "se".into(),
            ..Default::default()
        }),
        &items,
    )
    .unwrap();
    let key = SnapshotKey { key: "k".into(), fingerprint: 7, version: 1, at_ms: 5 };
    let bytes = cart.snapshot(vec![key.clone()]);
    let (_, keys) = Cart::from_snapshot("c".into(), &bytes, &items).unwrap();
    assert_eq!(keys, vec![key]);
    assert!(matches!(
        Cart::from_snapshot("c".into(), &[0xff, 0xff], &items),
        Err(SnapshotError::Malformed(_))
    ));
    let mut future = wire::CartSnapshot::decode(&bytes[..]).unwrap();
    future.format = 2;
    assert!(matches!(
        Cart::from_snapshot("c".into(), &future.encode_to_vec(), &items),
        Err(SnapshotError::UnknownFormat(2))
    ));
    let mut broken = wire::CartSnapshot::decode(&bytes[..]).unwrap();
    broken.next_line_id = 0;
    assert!(matches!(
        Cart::from_snapshot("c".into(), &broken.encode_to_vec(), &items),
        Err(SnapshotError::Invalid(_))
    ));
}

/// The snapshot format is stored: these bytes never change meaning.
#[test]
fn golden_snapshot() {
    let items = ItemInterner::new();
    let mut cart = Cart::new("c".into());
    cart.apply(
        &CartEvent::AddItem(AddItem {
            sku: "1".into(),
            price: 100,
            quantity: 2,
            tax: 2500,
            currency: "SEK".into(),
            country: "se".into(),
            ..Default::default()
        }),
        &items,
    )
    .unwrap();
    const GOLDEN: &str = "080110011a0e08011002186430c4133a032a0131280230013a027365420353454b";
    let hex: String = cart.snapshot(vec![]).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN);
    let bytes: Vec<u8> = (0..GOLDEN.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&GOLDEN[i..i + 2], 16).unwrap())
        .collect();
    let (read, _) = Cart::from_snapshot("c".into(), &bytes, &ItemInterner::new()).unwrap();
    assert_eq!(read, cart, "stored snapshots read back as the cart they were");
}
