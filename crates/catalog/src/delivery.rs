//! Delivery options: what each carrier's delivery costs, decided by this
//! service. A storefront names a provider; its fee, VAT rate and whether it
//! delivers to pickup points come from here, never from the request.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Longest provider name accepted.
pub const MAX_PROVIDER_LEN: usize = 32;
/// Highest fee accepted, in minor units (100,000.00).
pub const MAX_FEE: i64 = 10_000_000;

/// One delivery provider's terms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryOption {
    /// Lower-case name the storefront sends (`postnord`).
    pub provider: String,
    /// Fee including VAT, in minor units of the cart's currency.
    pub fee: i64,
    /// VAT rate of the fee in basis points; the cart's market rate when
    /// absent.
    #[serde(default)]
    pub vat_rate: Option<u32>,
    /// Whether it delivers to pickup points (a pickup point may be set).
    #[serde(default)]
    pub pickup_points: bool,
}

/// The providers this service delivers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOptions {
    by_provider: BTreeMap<String, DeliveryOption>,
}

/// The documented defaults: what `--delivery-options` is when not given.
pub const DEFAULT_DELIVERY_OPTIONS: &str =
    "postnord:4900:pickup,budbee:5900,dhl:6900:pickup,instabox:3900:pickup";

impl DeliveryOptions {
    /// Options from a list, checking each.
    pub fn new(options: Vec<DeliveryOption>) -> Result<Self, String> {
        let mut by_provider = BTreeMap::new();
        for mut option in options {
            option.provider = option.provider.to_ascii_lowercase();
            check(&option)?;
            if by_provider.insert(option.provider.clone(), option).is_some() {
                return Err("a provider is listed twice".into());
            }
        }
        if by_provider.is_empty() {
            return Err("no delivery options".into());
        }
        Ok(DeliveryOptions { by_provider })
    }

    /// The terms of `provider`, if this service delivers with it.
    pub fn get(&self, provider: &str) -> Option<&DeliveryOption> {
        if provider.len() > MAX_PROVIDER_LEN {
            return None;
        }
        self.by_provider.get(&provider.to_ascii_lowercase())
    }

    /// The configured provider names, sorted.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.by_provider.keys().map(String::as_str)
    }

    /// Parses `--delivery-options`: a comma-separated list of
    /// `provider:fee[:vat_basis_points][:pickup]`, or (a value without `:`)
    /// the path of a JSON file holding an array of
    /// `{"provider", "fee", "vatRate"?, "pickupPoints"?}`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        if spec.contains(':') {
            return Self::new(spec.split(',').map(entry).collect::<Result<_, _>>()?);
        }
        Self::from_file(Path::new(spec))
    }

    /// Options from a JSON file (see [`DeliveryOptions::parse`]).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read delivery options {}: {e}", path.display()))?;
        let options: Vec<DeliveryOption> = serde_json::from_str(&text)
            .map_err(|e| format!("bad delivery options in {}: {e}", path.display()))?;
        Self::new(options)
    }
}

impl Default for DeliveryOptions {
    /// [`DEFAULT_DELIVERY_OPTIONS`].
    fn default() -> Self {
        let options = DEFAULT_DELIVERY_OPTIONS.split(',').filter_map(|e| entry(e).ok()).collect();
        DeliveryOptions::new(options).unwrap_or(DeliveryOptions { by_provider: BTreeMap::new() })
    }
}

fn entry(text: &str) -> Result<DeliveryOption, String> {
    let bad =
        || format!("bad delivery option {text:?}: use provider:fee[:vat_basis_points][:pickup]");
    let mut parts = text.trim().split(':');
    let provider = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?.to_owned();
    let fee = parts.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    let mut option = DeliveryOption { provider, fee, vat_rate: None, pickup_points: false };
    for part in parts {
        match part {
            "pickup" if !option.pickup_points => option.pickup_points = true,
            rate if option.vat_rate.is_none() && !option.pickup_points => {
                option.vat_rate = Some(rate.parse().map_err(|_| bad())?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(option)
}

fn check(option: &DeliveryOption) -> Result<(), String> {
    let name = &option.provider;
    let valid_name = !name.is_empty()
        && name.len() <= MAX_PROVIDER_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(format!("bad provider name {name:?}: 1 to {MAX_PROVIDER_LEN} of a-z 0-9 - _"));
    }
    if !(0..=MAX_FEE).contains(&option.fee) {
        return Err(format!("{name}: fee must be 0 to {MAX_FEE} minor units"));
    }
    if option.vat_rate.is_some_and(|r| r > 10_000) {
        return Err(format!("{name}: VAT rate is in basis points, at most 10000"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_fees_for_the_storefronts_providers() {
        let d = DeliveryOptions::default();
        let postnord = d.get("postnord").unwrap();
        assert_eq!((postnord.fee, postnord.pickup_points), (4900, true));
        assert!(d.get("budbee").unwrap().fee > 0);
        assert!(!d.get("budbee").unwrap().pickup_points);
        assert!(d.get("PostNord").is_some(), "names are case-insensitive");
        assert!(d.get("teleport").is_none());
        assert_eq!(d.providers().count(), 4);
    }

    #[test]
    fn lists_and_files_parse_and_bad_ones_are_refused() {
        let d = DeliveryOptions::parse("postnord:4900:2500:pickup, budbee:0").unwrap();
        assert_eq!(d.get("postnord").unwrap().vat_rate, Some(2500));
        assert_eq!(d.get("budbee").unwrap().fee, 0);
        for bad in [
            "postnord",
            "postnord:-1",
            "postnord:abc",
            "postnord:100:pickup:2500",
            "postnord:100:20000",
            "a b:100",
            "x:1,x:2",
            "postnord:99999999999",
        ] {
            assert!(DeliveryOptions::parse(bad).is_err(), "{bad}");
        }
        let dir = std::env::temp_dir().join(format!("delivery-{}", std::process::id()));
        std::fs::write(&dir, r#"[{"provider":"budbee","fee":5900,"vatRate":600}]"#).unwrap();
        let d = DeliveryOptions::parse(dir.to_str().unwrap()).unwrap();
        assert_eq!(d.get("budbee").unwrap().vat_rate, Some(600));
        std::fs::write(&dir, r#"[{"provider":"budbee","fee":5900,"price":1}]"#).unwrap();
        assert!(DeliveryOptions::parse(dir.to_str().unwrap()).is_err(), "unknown fields refused");
        let _ = std::fs::remove_file(&dir);
        assert!(DeliveryOptions::parse("/nonexistent/file.json").is_err());
    }
}
