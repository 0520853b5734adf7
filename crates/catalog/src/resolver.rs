//! Resolves an AddRequest into an AddItem: catalogue item plus market.

use std::sync::Arc;

use cart_domain::proto::{AddItem, AddRequest, SetDelivery};

use crate::{Catalog, CatalogError, DeliveryOptions, Markets};

/// The catalogue and markets together: what the grain runtime asks to turn an
/// add-by-SKU into a persisted line.
#[derive(Clone)]
pub struct Resolver {
    catalog: Arc<dyn Catalog>,
    markets: Arc<Markets>,
    deliveries: Arc<DeliveryOptions>,
}

impl Resolver {
    /// A resolver over `catalog` and `markets`, pricing deliveries with
    /// the default [`DeliveryOptions`].
    pub fn new(catalog: Arc<dyn Catalog>, markets: Markets) -> Self {
        Resolver { catalog, markets: Arc::new(markets), deliveries: Arc::default() }
    }

    /// The same resolver pricing deliveries with `deliveries`.
    pub fn with_deliveries(mut self, deliveries: DeliveryOptions) -> Self {
        self.deliveries = Arc::new(deliveries);
        self
    }

    /// A client's delivery with this service's terms: the provider's fee
    /// and VAT rate replace whatever the request said. Refuses a provider
    /// this service does not offer, and a pickup point for one that does
    /// not deliver to them.
    pub fn price_delivery(&self, mut delivery: SetDelivery) -> Result<SetDelivery, CatalogError> {
        let option = self
            .deliveries
            .get(&delivery.provider)
            .ok_or_else(|| CatalogError::UnknownProvider(delivery.provider.clone()))?;
        if delivery.pickup_point.is_some() && !option.pickup_points {
            return Err(CatalogError::NoPickupPoints(option.provider.clone()));
        }
        delivery.provider.clone_from(&option.provider);
        delivery.price = option.fee;
        delivery.tax = option.vat_rate.map(|r| i32::try_from(r).unwrap_or(i32::MAX));
        Ok(delivery)
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
