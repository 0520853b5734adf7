//! Markets: which currency and VAT rate a country trades in.

use std::collections::HashMap;
use std::str::FromStr;

/// One market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    /// Lower-case country code, as the storefront sends it (`se`, `no`).
    pub country: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Standard VAT rate in basis points.
    pub vat_rate: u32,
}

/// The configured markets and the one used when a request names none.
#[derive(Debug, Clone)]
pub struct Markets {
    by_country: HashMap<String, Market>,
    default_country: String,
}

impl Markets {
    /// Markets from a list; `default_country` must be one of them.
    pub fn new(markets: Vec<Market>, default_country: &str) -> Result<Self, String> {
        let by_country: HashMap<String, Market> =
            markets.into_iter().map(|m| (m.country.clone(), m)).collect();
        let default_country = default_country.to_ascii_lowercase();
        if !by_country.contains_key(&default_country) {
            return Err(format!("default country {default_country:?} is not a configured market"));
        }
        Ok(Markets { by_country, default_country })
    }

    /// The market of `country`, or the default market when `None`.
    pub fn get(&self, country: Option<&str>) -> Option<&Market> {
        match country {
            Some(c) => self.by_country.get(&c.to_ascii_lowercase()),
            None => self.by_country.get(&self.default_country),
        }
    }
}

impl Default for Markets {
    /// Sweden (SEK, 25 %) as the default, and Norway (NOK, 25 %).
    fn default() -> Self {
        let list = "se:SEK:2500,no:NOK:2500".parse::<MarketList>().map(|l| l.0).unwrap_or_default();
        let by_country = list.into_iter().map(|m| (m.country.clone(), m)).collect();
        Markets { by_country, default_country: "se".into() }
    }
}

/// A comma-separated list of `country:CURRENCY:vat_basis_points`, as given on
/// the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketList(pub Vec<Market>);

impl FromStr for MarketList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(|entry| {
                let parts: Vec<&str> = entry.trim().split(':').collect();
                match parts.as_slice() {
                    [country, currency, rate] if !country.is_empty() && currency.len() == 3 => {
                        let vat_rate = rate
                            .parse::<u32>()
                            .ok()
                            .filter(|r| *r <= 10_000)
                            .ok_or_else(|| format!("bad VAT rate {rate:?} in {entry:?}"))?;
                        Ok(Market {
                            country: country.to_ascii_lowercase(),
                            currency: currency.to_ascii_uppercase(),
                            vat_rate,
                        })
                    }
                    _ => {
                        Err(format!("bad market {entry:?}: use country:CURRENCY:vat_basis_points"))
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(MarketList)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markets_and_picks_the_default() {
        let list: MarketList = "se:SEK:2500, DK:dkk:2500".parse().unwrap();
        let markets = Markets::new(list.0, "se").unwrap();
        assert_eq!(markets.get(None).unwrap().currency, "SEK");
        assert_eq!(markets.get(Some("dk")).unwrap().currency, "DKK");
        assert!(markets.get(Some("fi")).is_none());
        assert!("se:SEK".parse::<MarketList>().is_err());
        assert!("se:SEK:20000".parse::<MarketList>().is_err());
    }

    #[test]
    fn default_markets_are_sweden_and_norway() {
        let m = Markets::default();
        assert_eq!(m.get(None).unwrap().country, "se");
        assert_eq!(m.get(Some("no")).unwrap().currency, "NOK");
    }
}
