//! Money arithmetic. Amounts are integer minor units (öre, cents) including
//! VAT; VAT rates are basis points (2500 = 25 %).
//!
//! Rounding rule, used everywhere: the net amount of a VAT-inclusive total is
//! `total * 10000 / (10000 + rate)` truncated towards zero, and the VAT is the
//! rest, `total - net`. This is Klarna's `total_tax_amount` formula evaluated
//! in integer arithmetic, so cart totals and checkout lines always agree.

/// The VAT contained in a VAT-inclusive `total` at `rate_bp` basis points.
pub fn vat_included(total: i64, rate_bp: u32) -> i64 {
    let total = i128::from(total);
    let rate = i128::from(rate_bp);
    let net = total * 10_000 / (10_000 + rate);
    // The result is at most `total`, which came from an i64.
    i64::try_from(total - net).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_five_percent_of_a_round_amount() {
        assert_eq!(vat_included(12_500, 2500), 2_500);
    }

    #[test]
    fn zero_rate_has_no_vat() {
        assert_eq!(vat_included(999, 0), 0);
    }

    #[test]
    fn truncated_net_puts_the_remainder_in_vat() {
        // 100 * 10000 / 12500 = 80 exactly; 101 -> net 80.8 -> 80, vat 21.
        assert_eq!(vat_included(101, 2500), 21);
        // 6 % rate: 1000 * 10000 / 10600 = 943.39 -> 943, vat 57.
        assert_eq!(vat_included(1000, 600), 57);
    }
}
