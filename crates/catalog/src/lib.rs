//! The product catalogue: turns an add-by-SKU request into a fully resolved
//! cart line before anything is persisted.
//!
//! [`Resolver`] combines a [`Catalog`] source (the HTTP catalogue service or
//! a JSON file) with the [`Markets`] table that gives each country its
//! currency and VAT rate, and the [`DeliveryOptions`] that price deliveries.

pub mod delivery;
pub mod file;
pub mod http;
pub mod item;
pub mod market;
mod resolver;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

pub use delivery::{DeliveryOption, DeliveryOptions};
pub use file::FileCatalog;
pub use http::{HttpCatalog, HttpCatalogOptions};
pub use item::CatalogItem;
pub use market::{Market, Markets};
pub use resolver::Resolver;

/// Why a SKU could not be resolved.
#[derive(Debug, Clone, Error)]
pub enum CatalogError {
    /// The catalogue does not know the SKU.
    #[error("unknown sku {0}")]
    UnknownSku(String),
    /// The product exists but cannot be bought (discontinued, not in store).
    #[error("{0} is not for sale")]
    NotForSale(String),
    /// The request names a country with no configured market.
    #[error("unknown country {0:?}")]
    UnknownCountry(String),
    /// The catalogue answered with something that is not a usable item.
    #[error("the catalogue answered badly: {0}")]
    BadResponse(String),
    /// The catalogue could not be reached in time.
    #[error("the catalogue is unavailable: {0}")]
    Unavailable(String),
    /// The request names a delivery provider this service does not offer.
    #[error("unknown delivery provider {0:?}")]
    UnknownProvider(String),
    /// The provider does not deliver to pickup points.
    #[error("{0} does not deliver to pickup points")]
    NoPickupPoints(String),
}

/// A source of catalogue items by SKU.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// The item with this SKU (shared: lookups are frequent, items immutable).
    async fn lookup(&self, sku: &str) -> Result<Arc<CatalogItem>, CatalogError>;
}
