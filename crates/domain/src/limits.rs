//! Hard limits on what a cart may hold. They bound memory and keep bad input
//! from growing state without end.

/// Smallest quantity a line may have.
pub const MIN_QUANTITY: u32 = 1;
/// Largest quantity a line may have.
pub const MAX_QUANTITY: u32 = 999;
/// Most lines one cart may hold.
pub const MAX_LINES: usize = 500;
/// Most deliveries one cart may hold.
pub const MAX_DELIVERIES: usize = 50;
/// Longest SKU accepted, in bytes.
pub const MAX_SKU_LEN: usize = 64;
/// Longest free-text field (provider, pickup point fields, order ids), in bytes.
pub const MAX_TEXT_LEN: usize = 512;
/// Largest unit price or delivery fee accepted, in minor units (ten billion
/// in major units): far above any real product, far below overflow.
pub const MAX_PRICE: i64 = 1_000_000_000_000;
/// Largest VAT rate accepted, in basis points (100 %).
pub const MAX_TAX_RATE: u32 = 10_000;
/// Longest store id accepted, in bytes.
pub const MAX_STORE_ID_LEN: usize = 64;
/// Longest country code accepted, in bytes.
pub const MAX_COUNTRY_LEN: usize = 8;
/// Largest a cart may grow, measured as its JSON (what every answer
/// carries), in bytes: about 1,500 ordinary lines' worth, so only abuse
/// reaches it (500 lines of catalogue text at the field limits would not
/// fit). A mutation that would pass it is refused.
pub const MAX_CART_JSON_BYTES: usize = 512 * 1024;
