//! Why a mutation was refused.

use thiserror::Error;

/// A mutation the cart refused. The cart is unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CartError {
    /// A quantity outside the allowed range.
    #[error("quantity must be between {min} and {max}, got {got}")]
    InvalidQuantity {
        /// The quantity asked for.
        got: i64,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// The cart already holds the most lines it may.
    #[error("a cart holds at most {max} lines")]
    TooManyLines {
        /// The limit.
        max: usize,
    },
    /// The cart already holds the most deliveries it may.
    #[error("a cart holds at most {max} deliveries")]
    TooManyDeliveries {
        /// The limit.
        max: usize,
    },
    /// No line with this id.
    #[error("no line {0} in the cart")]
    LineNotFound(i64),
    /// No delivery with this id.
    #[error("no delivery {0} in the cart")]
    DeliveryNotFound(i64),
    /// A delivery must cover at least one line.
    #[error("a delivery must cover at least one line")]
    EmptyDelivery,
    /// An item whose market differs from the cart's.
    #[error("the cart is in {cart}, the item is in {item}")]
    CurrencyMismatch {
        /// The cart's currency.
        cart: String,
        /// The item's currency.
        item: String,
    },
    /// The cart would grow past its size limit.
    #[error("the cart would exceed {max_bytes} bytes; remove something first")]
    TooLarge {
        /// The limit.
        max_bytes: usize,
    },
    /// A field that is missing, too long or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Checkout is in progress: the amount must not change under it.
    #[error("checkout is in progress: leave checkout (DELETE /cart/checkout) to change the cart")]
    CheckoutInProgress,
    /// The cart's order is complete; it can no longer change.
    #[error("this cart's order is complete; start a new cart")]
    OrderAlreadyCompleted,
    /// The order named does not belong to this cart's checkout.
    #[error("order {0} is not this cart's checkout order")]
    OrderMismatch(String),
}
