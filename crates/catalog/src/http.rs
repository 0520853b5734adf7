//! The catalogue service over HTTP: `GET {base}/api/by-sku/{sku}`, with short
//! timeouts and a bounded TTL cache (`moka`): found items and unknown SKUs are
//! remembered, concurrent misses of one SKU share a single lookup, and a full
//! cache evicts by use, not all at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;

use crate::{Catalog, CatalogError, CatalogItem};

/// Settings of an [`HttpCatalog`].
#[derive(Debug, Clone)]
pub struct HttpCatalogOptions {
    /// Base URL of the catalogue, e.g. `http://slask-finder:8080`.
    pub base_url: String,
    /// Time allowed for one lookup, connection included.
    pub timeout: Duration,
    /// How long a found item is reused without asking again.
    pub ttl: Duration,
    /// How long an unknown SKU is remembered as unknown.
    pub negative_ttl: Duration,
    /// Most entries kept in the cache.
    pub max_entries: usize,
}

impl HttpCatalogOptions {
    /// Defaults for `base_url`: 1 s timeout, 60 s TTL, 10 s for unknown SKUs,
    /// 10 000 entries.
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpCatalogOptions {
            base_url: base_url.into(),
            timeout: Duration::from_secs(1),
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            max_entries: 10_000,
        }
    }
}

/// What the cache remembers of a SKU: its item, or that it is unknown.
type Cached = Result<Arc<CatalogItem>, CatalogError>;

/// Found items live `ttl`, unknown SKUs `negative_ttl`.
struct Ttls {
    found: Duration,
    unknown: Duration,
}

impl moka::Expiry<String, Cached> for Ttls {
    fn expire_after_create(&self, _: &String, value: &Cached, _: Instant) -> Option<Duration> {
        Some(if value.is_ok() { self.found } else { self.unknown })
    }
}

/// A catalogue reached over HTTP.
pub struct HttpCatalog {
    client: reqwest::Client,
    options: HttpCatalogOptions,
    cache: moka::future::Cache<String, Cached>,
}

impl HttpCatalog {
    /// A client for the catalogue at `options.base_url`.
    pub fn new(options: HttpCatalogOptions) -> Result<Self, CatalogError> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .build()
            .map_err(|e| CatalogError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        let cache = moka::future::Cache::builder()
            .max_capacity(options.max_entries as u64)
            .expire_after(Ttls { found: options.ttl, unknown: options.negative_ttl })
            .build();
        Ok(HttpCatalog { client, options, cache })
    }

    async fn fetch(&self, sku: &str) -> Result<Arc<CatalogItem>, CatalogError> {
        let url = format!(
            "{}/api/by-sku/{}",
            self.options.base_url.trim_end_matches('/'),
            encode_path_segment(sku)
        );
        let response = self.client.get(&url).send().await.map_err(|e| {
            let what = if e.is_timeout() { "timed out" } else { "unreachable" };
            tracing::warn!(%url, error = %e, "catalogue {what}");
            CatalogError::Unavailable(format!("lookup of {sku} {what}"))
        })?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(CatalogError::UnknownSku(sku.to_owned())),
            status if status.is_server_error() => {
                return Err(CatalogError::Unavailable(format!("catalogue answered {status}")));
            }
            status => {
                return Err(CatalogError::BadResponse(format!("catalogue answered {status}")));
            }
        }
        let body = read_limited(response, MAX_ITEM_BYTES).await.map_err(|e| match e {
            Limited::TooLarge => CatalogError::BadResponse(format!(
                "item {sku} is larger than {MAX_ITEM_BYTES} bytes"
            )),
            Limited::Failed(e) => {
                CatalogError::Unavailable(format!("reading the catalogue's answer failed: {e}"))
            }
        })?;
        let item: CatalogItem = serde_json::from_slice(&body)
            .map_err(|e| CatalogError::BadResponse(format!("item {sku} is malformed: {e}")))?;
        if item.sku != sku {
            return Err(CatalogError::BadResponse(format!("asked for {sku}, got {}", item.sku)));
        }
        Ok(Arc::new(item))
    }
}

/// Largest catalogue answer for one item read, in bytes.
pub const MAX_ITEM_BYTES: usize = 256 * 1024;

/// Why [`read_limited`] gave no body.
#[derive(Debug)]
pub enum Limited {
    /// The body is longer than the limit; reading stopped there.
    TooLarge,
    /// Reading failed.
    Failed(reqwest::Error),
}

/// A response body of at most `max` bytes, read as it arrives: a peer
/// cannot make this service hold more than `max` bytes for one answer.
pub async fn read_limited(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, Limited> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(Limited::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Limited::Failed)? {
        if body.len() + chunk.len() > max {
            return Err(Limited::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Percent-encodes everything but unreserved characters, so a SKU cannot
/// change the path it is looked up at.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Catalog for HttpCatalog {
    async fn lookup(&self, sku: &str) -> Result<Arc<CatalogItem>, CatalogError> {
        if let Some(hit) = self.cache.get(sku).await {
            return hit;
        }
        // Only answers worth remembering are cached; a failed lookup is
        // shared with the callers waiting on it, then forgotten.
        let remembered = self
            .cache
            .try_get_with(sku.to_owned(), async {
                match self.fetch(sku).await {
                    Err(e @ CatalogError::UnknownSku(_)) => Ok(Err(e)),
                    Err(e) => Err(e),
                    Ok(item) => Ok(Ok(item)),
                }
            })
            .await;
        match remembered {
            Ok(cached) => cached,
            Err(shared) => Err(CatalogError::clone(&shared)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::encode_path_segment;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode_path_segment("ab-1_2.x"), "ab-1_2.x");
        assert_eq!(encode_path_segment("../a b"), "..%2Fa%20b");
    }
}
