//! A catalogue read from a JSON file (an array of catalogue items).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Catalog, CatalogError, CatalogItem};

/// The sample catalogue shipped with cart-actor, used by the default run.
pub const SAMPLE: &str = include_str!("../sample-catalog.json");

/// An in-memory catalogue loaded from JSON.
#[derive(Debug, Clone)]
pub struct FileCatalog {
    by_sku: HashMap<String, Arc<CatalogItem>>,
}

impl FileCatalog {
    /// Parses a JSON array of catalogue items.
    pub fn from_json(json: &str) -> Result<Self, CatalogError> {
        let items: Vec<CatalogItem> = serde_json::from_str(json)
            .map_err(|e| CatalogError::BadResponse(format!("catalogue file: {e}")))?;
        Ok(FileCatalog {
            by_sku: items.into_iter().map(|i| (i.sku.clone(), Arc::new(i))).collect(),
        })
    }

    /// Reads and parses a catalogue file.
    pub fn from_path(path: &Path) -> Result<Self, CatalogError> {
        let json = std::fs::read_to_string(path).map_err(|e| {
            CatalogError::Unavailable(format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_json(&json)
    }

    /// The shipped sample catalogue.
    pub fn sample() -> Result<Self, CatalogError> {
        Self::from_json(SAMPLE)
    }

    /// All SKUs, for load generators and demos.
    pub fn skus(&self) -> Vec<String> {
        let mut skus: Vec<String> = self.by_sku.keys().cloned().collect();
        skus.sort();
        skus
    }
}

#[async_trait]
impl Catalog for FileCatalog {
    async fn lookup(&self, sku: &str) -> Result<Arc<CatalogItem>, CatalogError> {
        self.by_sku.get(sku).cloned().ok_or_else(|| CatalogError::UnknownSku(sku.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sample_catalogue_parses_and_resolves() {
        let c = FileCatalog::sample().unwrap();
        assert!(c.skus().len() >= 30);
        let item = c.lookup("861200").await.unwrap();
        assert!(item.title.contains("Ryzen"));
        assert!(matches!(c.lookup("nope").await, Err(CatalogError::UnknownSku(_))));
    }
}
