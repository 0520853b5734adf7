//! The catalogue's item JSON (slask-finder `DataItem`) and its mapping onto a
//! cart line.

use std::collections::HashMap;
use std::sync::OnceLock;

use cart_domain::proto::AddItem;
use serde::Deserialize;
use serde_json::Value;

use crate::CatalogError;
use crate::market::Market;

/// A catalogue item, as `GET /api/by-sku/{sku}` returns it. Facet values sit
/// in `values`, keyed by numeric field id.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogItem {
    /// Product id.
    pub id: i64,
    /// SKU.
    pub sku: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Image path or URL.
    #[serde(default)]
    pub img: String,
    /// Store id to stock count (as a string).
    #[serde(default)]
    pub stock: HashMap<String, String>,
    /// Whether it can be bought online.
    #[serde(default)]
    pub buyable: Option<bool>,
    /// Whether it can be bought in a store.
    #[serde(default)]
    pub buyable_in_store: Option<bool>,
    /// Article type.
    #[serde(default)]
    pub article_type: String,
    /// Facet values by field id.
    #[serde(default)]
    pub values: HashMap<String, Value>,
    /// What a cart line takes from `values`, read once per item.
    #[serde(skip)]
    facets: OnceLock<Facets>,
}

/// The facet values a cart line uses.
#[derive(Debug, Clone)]
struct Facets {
    price: Option<i64>,
    previous_price: Option<i64>,
    brand: String,
    categories: [String; 4],
    outlet: String,
    seller_id: String,
    seller_name: String,
    web_stock: i32,
}

/// Facet field ids (storefront contract section 5.2).
mod field {
    pub const BRAND: &str = "2";
    pub const STOCK_LEVEL: &str = "3";
    pub const PRICE: &str = "4";
    pub const PREVIOUS_PRICE: &str = "5";
    pub const SELLER_NAME: &str = "9";
    pub const CATEGORIES: [&str; 4] = ["10", "11", "12", "13"];
    pub const OUTLET: &str = "20";
    pub const SELLER_ID: &str = "24";
}

impl CatalogItem {
    fn facets(&self) -> &Facets {
        self.facets.get_or_init(|| Facets {
            price: self.amount(field::PRICE),
            previous_price: self.amount(field::PREVIOUS_PRICE),
            brand: self.text(field::BRAND),
            categories: field::CATEGORIES.map(|f| self.text(f)),
            outlet: self.text(field::OUTLET),
            seller_id: self.text(field::SELLER_ID),
            seller_name: self.text(field::SELLER_NAME),
            web_stock: stock_count(&self.text(field::STOCK_LEVEL)),
        })
    }

    fn text(&self, field: &str) -> String {
        match self.values.get(field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    }

    fn amount(&self, field: &str) -> Option<i64> {
        match self.values.get(field)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The stock level for a store, or the web stock level.
    fn stock_level(&self, store_id: Option<&str>) -> i32 {
        match store_id {
            Some(store) => self.stock.get(store).map_or(0, |s| stock_count(s)),
            None => self.facets().web_stock,
        }
    }

    /// The cart line for `quantity` of this item in `market`.
    pub fn to_add_item(
        &self,
        quantity: i32,
        store_id: Option<&str>,
        market: &Market,
    ) -> Result<AddItem, CatalogError> {
        let for_sale = match store_id {
            Some(_) => self.buyable_in_store,
            None => self.buyable,
        };
        if for_sale == Some(false) {
            return Err(CatalogError::NotForSale(self.sku.clone()));
        }
        let facets = self.facets();
        let price = facets
            .price
            .filter(|p| *p >= 0)
            .ok_or_else(|| CatalogError::BadResponse(format!("item {} has no price", self.sku)))?;
        let [category, category2, category3, category4] = facets.categories.clone();
        let item = AddItem {
            item_id: self.id,
            quantity,
            price,
            org_price: facets.previous_price.filter(|p| *p > price).unwrap_or(0),
            sku: self.sku.clone(),
            name: self.title.clone(),
            image: self.img.clone(),
            stock: self.stock_level(store_id),
            tax: i32::try_from(market.vat_rate).unwrap_or(0),
            brand: facets.brand.clone(),
            category,
            category2,
            category3,
            category4,
            category5: String::new(),
            outlet: facets.outlet.clone(),
            seller_id: facets.seller_id.clone(),
            seller_name: facets.seller_name.clone(),
            article_type: self.article_type.clone(),
            country: market.country.clone(),
            currency: market.currency.clone(),
            store_id: store_id.map(str::to_owned),
        };
        if let Some(field) = cart_domain::item::oversized_text(&item) {
            return Err(CatalogError::BadResponse(format!(
                "item {}: {field} is longer than {} bytes",
                self.sku,
                cart_domain::limits::MAX_TEXT_LEN
            )));
        }
        Ok(item)
    }
}

/// A stock count as the catalogue writes it: its leading digits ("10+"
/// reads 10); anything else reads 0.
fn stock_count(raw: &str) -> i32 {
    let raw = raw.trim();
    let digits = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    raw[..digits].parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market() -> Market {
        Market { country: "se".into(), currency: "SEK".into(), vat_rate: 2500 }
    }

    fn item(json: serde_json::Value) -> CatalogItem {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn maps_field_ids_onto_the_line() {
        let i = item(serde_json::json!({
            "id": 861201, "sku": "861201", "title": "CPU", "img": "/image/cpu.jpg",
            "articleType": "CPU", "stock": {"2001": "3"},
            "values": {"2": "AMD", "3": "10+", "4": 515900, "5": 549900, "9": "Seller",
                       "10": "A", "11": "B", "12": "C", "20": "B-grade", "24": "001071"}
        }));
        let web = i.to_add_item(2, None, &market()).unwrap();
        assert_eq!((web.price, web.org_price, web.stock, web.tax), (515900, 549900, 10, 2500));
        assert_eq!((web.brand.as_str(), web.category3.as_str()), ("AMD", "C"));
        assert_eq!((web.seller_id.as_str(), web.outlet.as_str()), ("001071", "B-grade"));
        assert_eq!((web.currency.as_str(), web.quantity), ("SEK", 2));
        let store = i.to_add_item(1, Some("2001"), &market()).unwrap();
        assert_eq!(store.stock, 3);
        assert_eq!(store.store_id.as_deref(), Some("2001"));
    }

    #[test]
    fn stock_counts_read_their_leading_digits() {
        let counts = ["10+", " 7 st", "", "many", "99999999999", "3"].map(stock_count);
        assert_eq!(counts, [10, 7, 0, 0, 0, 3]);
    }

    #[test]
    fn a_previous_price_below_the_price_is_no_discount() {
        let i = item(serde_json::json!({"id": 1, "sku": "1", "values": {"4": 100, "5": 90}}));
        assert_eq!(i.to_add_item(1, None, &market()).unwrap().org_price, 0);
    }

    #[test]
    fn refuses_unbuyable_and_priceless_items() {
        let gone =
            item(serde_json::json!({"id": 1, "sku": "1", "buyable": false, "values": {"4": 1}}));
        assert!(matches!(gone.to_add_item(1, None, &market()), Err(CatalogError::NotForSale(_))));
        let priceless = item(serde_json::json!({"id": 1, "sku": "1", "values": {}}));
        assert!(matches!(
            priceless.to_add_item(1, None, &market()),
            Err(CatalogError::BadResponse(_))
        ));
    }
}
