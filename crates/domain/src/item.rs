//! The descriptive part of a cart line, shared between carts.
//!
//! Most carts hold the same popular products. A line keeps its per-cart
//! numbers (quantity, price) inline and points at one shared [`ItemInfo`] for
//! the strings, so a resident cart costs a few dozen bytes per line instead of
//! a few hundred.
//!
//! An info's identity is its product facts encoded as a `messages.AddItem`
//! that holds only them ([`product_bytes`]): the interner's key, what
//! [`ItemInfo::describes`] compares, and how a line's product travels between
//! nodes (a receiver interns the bytes it got without decoding a string when
//! it knows the product).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use prost::Message;
use serde::Serialize;

use crate::proto;

/// Catalogue facts about a product as it was added: identity and display
/// strings. Immutable once built; shared through [`ItemInterner`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ItemInfo {
    /// Catalogue product id.
    pub item_id: i64,
    /// Catalogue SKU.
    pub sku: Box<str>,
    /// Product title.
    pub name: Box<str>,
    /// Image path or URL.
    pub image: Box<str>,
    /// Article type.
    pub article_type: Box<str>,
    /// Brand.
    pub brand: Box<str>,
    /// Category levels 1 to 5.
    pub categories: [Box<str>; 5],
    /// Outlet or condition label.
    pub outlet: Box<str>,
    /// Marketplace seller id.
    pub seller_id: Box<str>,
    /// Marketplace seller name.
    pub seller_name: Box<str>,
    /// Store the line is picked up in, if any.
    pub store_id: Option<Box<str>>,
    /// These fields as they appear in a cart line's JSON (object members,
    /// each preceded by a comma), rendered once when the info is built.
    pub json: Box<str>,
    /// These fields as a serialized `messages.AddItem` holding only them
    /// ([`product_bytes`]), encoded once when the info is built.
    pub encoded: Bytes,
}

impl ItemInfo {
    /// The descriptive fields of an AddItem.
    pub fn from_add_item(m: &proto::AddItem) -> Self {
        let s = |v: &str| Box::<str>::from(v);
        let mut info = ItemInfo {
            item_id: m.item_id,
            sku: s(&m.sku),
            name: s(&m.name),
            image: s(&m.image),
            article_type: s(&m.article_type),
            brand: s(&m.brand),
            categories: [
                s(&m.category),
                s(&m.category2),
                s(&m.category3),
                s(&m.category4),
                s(&m.category5),
            ],
            outlet: s(&m.outlet),
            seller_id: s(&m.seller_id),
            seller_name: s(&m.seller_name),
            store_id: m.store_id.as_deref().map(s),
            json: Box::default(),
            encoded: Bytes::new(),
        };
        info.json = item_fields(&info);
        let mut encoded = Vec::new();
        product_bytes(m, &mut encoded);
        info.encoded = encoded.into();
        info
    }

    /// Whether `m` carries exactly this product information.
    pub fn describes(&self, m: &proto::AddItem) -> bool {
        with_product_bytes(m, |bytes| *self.encoded == *bytes)
    }
}

/// The product's text fields (store id aside): their `messages.AddItem` tag,
/// their name, their value. The one list of them: encoding and the length
/// limit both read it.
pub fn product_texts(m: &proto::AddItem) -> [(u32, &'static str, &String); 13] {
    [
        (5, "sku", &m.sku),
        (6, "name", &m.name),
        (7, "image", &m.image),
        (10, "brand", &m.brand),
        (11, "category", &m.category),
        (12, "category2", &m.category2),
        (13, "category3", &m.category3),
        (14, "category4", &m.category4),
        (15, "category5", &m.category5),
        (16, "outlet", &m.outlet),
        (17, "sellerId", &m.seller_id),
        (18, "sellerName", &m.seller_name),
        (19, "type", &m.article_type),
    ]
}

/// The first product text of `m` longer than [`crate::limits::MAX_TEXT_LEN`].
pub fn oversized_text(m: &proto::AddItem) -> Option<&'static str> {
    product_texts(m)
        .into_iter()
        .find(|(_, _, v)| v.len() > crate::limits::MAX_TEXT_LEN)
        .map(|(_, name, _)| name)
}

/// Appends the product facts of `m` (item id, SKU, name, image, type, brand,
/// categories, outlet, seller, store; not quantity, prices, stock, tax or
/// market) encoded exactly as prost encodes a `messages.AddItem` holding only
/// them.
pub fn product_bytes(m: &proto::AddItem, out: &mut Vec<u8>) {
    use prost::encoding::{int64, string};
    if m.item_id != 0 {
        int64::encode(1, &m.item_id, out);
    }
    for (tag, _, text) in product_texts(m) {
        if !text.is_empty() {
            string::encode(tag, text, out);
        }
    }
    if let Some(store) = &m.store_id {
        string::encode(22, store, out);
    }
}

thread_local! {
    /// A reused buffer for [`product_bytes`] on lookups, so finding a known
    /// product allocates nothing.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_product_bytes<T>(m: &proto::AddItem, f: impl FnOnce(&[u8]) -> T) -> T {
    SCRATCH.with(|scratch| {
        let (mut borrowed, mut fresh);
        // Never re-entered today; if it were, a fresh buffer is correct.
        let buf: &mut Vec<u8> = match scratch.try_borrow_mut() {
            Ok(b) => {
                borrowed = b;
                &mut borrowed
            }
            Err(_) => {
                fresh = Vec::new();
                &mut fresh
            }
        };
        buf.clear();
        product_bytes(m, buf);
        f(buf)
    })
}

fn is_empty(s: &&str) -> bool {
    s.is_empty()
}

/// The product fields of a line: everything an [`ItemInfo`] holds.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemFields<'a> {
    item_id: i64,
    sku: &'a str,
    name: &'a str,
    image: &'a str,
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

/// `info`'s fields as JSON object members, each preceded by a comma, ready
/// to be copied into a line object.
fn item_fields(info: &ItemInfo) -> Box<str> {
    let c = &info.categories;
    let fields = ItemFields {
        item_id: info.item_id,
        sku: &info.sku,
        name: &info.name,
        image: &info.image,
        article_type: &info.article_type,
        brand: &info.brand,
        category: &c[0],
        category2: &c[1],
        category3: &c[2],
        category4: &c[3],
        category5: &c[4],
        outlet: &info.outlet,
        seller_id: &info.seller_id,
        seller_name: &info.seller_name,
        store_id: info.store_id.as_deref(),
    };
    // Serialising strings and integers into memory cannot fail.
    let object = serde_json::to_string(&fields).unwrap_or_default();
    match object.strip_prefix('{').and_then(|o| o.strip_suffix('}')) {
        Some(members) => format!(",{members}").into(),
        None => Box::default(),
    }
}

fn key(product: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    product.hash(&mut h);
    h.finish()
}

/// A set of shared [`ItemInfo`]s: equal infos are stored once. Looking up an
/// info that exists allocates nothing.
#[derive(Debug, Default)]
pub struct ItemInterner {
    items: Mutex<HashMap<u64, Vec<Arc<ItemInfo>>>>,
}

impl ItemInterner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared info describing `m`, adding it if it is new.
    pub fn intern(&self, m: &proto::AddItem) -> Arc<ItemInfo> {
        with_product_bytes(m, |product| self.find_or_add(product, || ItemInfo::from_add_item(m)))
    }

    /// The shared info of a product as another node sent it
    /// ([`product_bytes`]); a known product is found by its bytes alone, an
    /// unknown one is decoded and added. Bytes that are not an AddItem are
    /// refused.
    pub fn intern_encoded(&self, product: &[u8]) -> Result<Arc<ItemInfo>, prost::DecodeError> {
        if let Some(known) = self.find(product) {
            return Ok(known);
        }
        Ok(self.intern(&proto::AddItem::decode(product)?))
    }

    fn find(&self, product: &[u8]) -> Option<Arc<ItemInfo>> {
        let items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        items.get(&key(product))?.iter().find(|i| *i.encoded == *product).cloned()
    }

    fn find_or_add(&self, product: &[u8], build: impl FnOnce() -> ItemInfo) -> Arc<ItemInfo> {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = items.entry(key(product)).or_default();
        if let Some(existing) = bucket.iter().find(|i| *i.encoded == *product) {
            return Arc::clone(existing);
        }
        let shared = Arc::new(build());
        bucket.push(Arc::clone(&shared));
        shared
    }

    /// Forgets infos no cart refers to any more; returns how many were dropped.
    pub fn sweep(&self) -> usize {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dropped = 0;
        items.retain(|_, bucket| {
            let before = bucket.len();
            bucket.retain(|item| Arc::strong_count(item) > 1);
            dropped += before - bucket.len();
            !bucket.is_empty()
        });
        dropped
    }

    /// How many distinct infos are held.
    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(PoisonError::into_inner).values().map(Vec::len).sum()
    }

    /// Whether no info is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_infos_share_one_allocation_and_sweep_frees_unused() {
        let interner = ItemInterner::new();
        let m = proto::AddItem { sku: "1".into(), name: "A".into(), ..Default::default() };
        let a = interner.intern(&m);
        let b = interner.intern(&m);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, ItemInfo::from_add_item(&m));
        let other = interner.intern(&proto::AddItem { name: "B".into(), ..m.clone() });
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(interner.len(), 2);
        drop(other);
        assert_eq!(interner.sweep(), 1);
        drop((a, b));
        assert_eq!(interner.sweep(), 1);
        assert!(interner.is_empty());
    }

    fn product(m: &proto::AddItem) -> proto::AddItem {
        proto::AddItem {
            item_id: m.item_id,
            sku: m.sku.clone(),
            name: m.name.clone(),
            image: m.image.clone(),
            brand: m.brand.clone(),
            category: m.category.clone(),
            category2: m.category2.clone(),
            category3: m.category3.clone(),
            category4: m.category4.clone(),
            category5: m.category5.clone(),
            outlet: m.outlet.clone(),
            seller_id: m.seller_id.clone(),
            seller_name: m.seller_name.clone(),
            article_type: m.article_type.clone(),
            store_id: m.store_id.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn product_bytes_are_an_add_item_of_the_product_facts_only() {
        let full = proto::AddItem {
            item_id: 861200,
            quantity: 3,
            price: 515_900,
            org_price: 600_000,
            sku: "861200".into(),
            name: "AMD Ryzen 7".into(),
            image: "/i.jpg".into(),
            stock: 2,
            tax: 2500,
            brand: "AMD".into(),
            category: "Datorkomponenter".into(),
            category3: "CPU".into(),
            seller_name: "Elkjop".into(),
            article_type: "CPU".into(),
            country: "se".into(),
            currency: "SEK".into(),
            store_id: Some(String::new()),
            ..Default::default()
        };
        let mut bytes = Vec::new();
        product_bytes(&full, &mut bytes);
        assert_eq!(bytes, product(&full).encode_to_vec());
        assert_eq!(proto::AddItem::decode(bytes.as_slice()).unwrap(), product(&full));
    }

    #[test]
    fn encoded_products_find_the_same_info_and_garbage_is_refused() {
        let interner = ItemInterner::new();
        let m =
            proto::AddItem { sku: "1".into(), name: "A".into(), price: 5, ..Default::default() };
        let local = interner.intern(&m);
        let sent = local.encoded.clone();
        let received = interner.intern_encoded(&sent).unwrap();
        assert!(Arc::ptr_eq(&local, &received), "a known product is found by its bytes");
        let other = ItemInterner::new().intern_encoded(&sent).unwrap();
        assert_eq!(other.json, local.json);
        assert!(local.describes(&m));
        assert!(!local.describes(&proto::AddItem { name: "B".into(), ..m.clone() }));
        assert!(interner.intern_encoded(&[0xff, 0xff, 0xff]).is_err());
    }
}
