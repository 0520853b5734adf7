//! Resolves an AddRequest into an AddItem: catalogue item plus market.

use std::sync::Arc;

use cart_domain::proto::{AddItem, AddRequest};

use crate::{Catalog, CatalogError, Markets};

/// The catalogue and markets together: what the grain runtime asks to turn an
/// add-by-SKU into a persisted line.
#[derive(Clone)]
pub struct Resolver {
    catalog: Arc<dyn Catalog>,
    markets: Arc<Markets>,
}

impl Resolver {
    /// A resolver over `catalog` and `markets`.
    pub fn new(catalog: Arc<dyn Catalog>, markets: Markets) -> Self {
        Resolver { catalog, markets: Arc::new(markets) }
    }

    /// The line an AddRequest asks for. Quantity is checked by the cart.
    pub async fn resolve(&self, request: &AddRequest) -> Result<AddItem, CatalogError> {
        let country = request.country.as_deref().filter(|c| !c.is_empty());
        let market = self
            .markets
            .get(country)
            .ok_or_else(|| CatalogError::UnknownCountry(country.unwrap_or_default().to_owned()))?;
        let item = self.catalog.lookup(&request.sku).await?;
        let store = request.store_id.as_deref().filter(|s| !s.is_empty());
        item.to_add_item(request.quantity, store, market)
    }
}
