//! The descriptive part of a cart line, shared between carts.
//!
//! Most carts hold the same popular products. A line keeps its per-cart
//! numbers (quantity, price) inline and points at one shared [`ItemInfo`] for
//! the strings, so a resident cart costs a few dozen bytes per line instead of
//! a few hundred.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

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
        };
        info.json = item_fields(&info);
        info
    }

    fn texts(&self) -> [&str; 13] {
        let c = &self.categories;
        [
            &self.sku,
            &self.name,
            &self.image,
            &self.article_type,
            &self.brand,
            &c[0],
            &c[1],
            &c[2],
            &c[3],
            &c[4],
            &self.outlet,
            &self.seller_id,
            &self.seller_name,
        ]
    }

    /// Whether `m` carries exactly this product information.
    pub fn describes(&self, m: &proto::AddItem) -> bool {
        self.item_id == m.item_id
            && self.store_id.as_deref() == m.store_id.as_deref()
            && self.texts() == add_item_texts(m)
    }
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

fn add_item_texts(m: &proto::AddItem) -> [&str; 13] {
    [
        &m.sku,
        &m.name,
        &m.image,
        &m.article_type,
        &m.brand,
        &m.category,
        &m.category2,
        &m.category3,
        &m.category4,
        &m.category5,
        &m.outlet,
        &m.seller_id,
        &m.seller_name,
    ]
}

fn fingerprint(m: &proto::AddItem) -> u64 {
    let mut h = DefaultHasher::new();
    m.item_id.hash(&mut h);
    m.store_id.hash(&mut h);
    add_item_texts(m).hash(&mut h);
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
        let key = fingerprint(m);
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = items.entry(key).or_default();
        if let Some(existing) = bucket.iter().find(|i| i.describes(m)) {
            return Arc::clone(existing);
        }
        let shared = Arc::new(ItemInfo::from_add_item(m));
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
}
