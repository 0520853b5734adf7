//! The closed set of ways a cart request can fail, as every layer and the
//! wire name them, and the one mapping of a kind to its HTTP status.

/// Why a cart request failed, as a client needs to know it. The numbers are
/// the wire's `ErrorKind` values (`proto/cart_actor.proto`) and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorKind {
    /// The request is malformed or breaks a limit.
    Invalid = 1,
    /// No such cart, line, delivery or SKU.
    NotFound = 2,
    /// The cart cannot take it (another currency, not for sale, another
    /// order).
    Conflict = 3,
    /// `If-Match` named another version.
    PreconditionFailed = 4,
    /// Checkout is in progress: the amount may not change.
    CheckoutLocked = 5,
    /// The cart's order is complete: it no longer changes.
    Completed = 6,
    /// The idempotency key was used for another request.
    IdempotencyKeyReused = 7,
    /// Another writer or node wrote the cart first; nothing was applied.
    /// The cluster retries it; a client sees it only when retries ran out.
    Fenced = 8,
    /// (Node to node) this node cannot serve the forwarded request: ask the
    /// next node. Never shown to a client.
    Misdirected = 9,
    /// The service cannot answer now (storage, catalogue, owner unreachable,
    /// overloaded, shutting down); retry shortly.
    Unavailable = 10,
    /// The catalogue answered something unusable.
    BadGateway = 11,
    /// Stored data is damaged; nothing was changed.
    Internal = 12,
}

impl ErrorKind {
    /// Every kind, in wire order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::PreconditionFailed,
        ErrorKind::CheckoutLocked,
        ErrorKind::Completed,
        ErrorKind::IdempotencyKeyReused,
        ErrorKind::Fenced,
        ErrorKind::Misdirected,
        ErrorKind::Unavailable,
        ErrorKind::BadGateway,
        ErrorKind::Internal,
    ];

    /// The wire value.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The kind with this wire value (`None` for 0, "no error", and values
    /// this version does not know).
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The HTTP status of this kind: the one place it is decided, for the
    /// HTTP API and for the wire's `status_code`.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict | ErrorKind::CheckoutLocked | ErrorKind::Completed => 409,
            ErrorKind::PreconditionFailed => 412,
            ErrorKind::Misdirected => 421,
            ErrorKind::IdempotencyKeyReused => 422,
            ErrorKind::Internal => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Fenced | ErrorKind::Unavailable => 503,
        }
    }

    /// The kind a peer that sends only a status code (an older version)
    /// means by it.
    pub fn from_http_status(status: i32) -> Self {
        match status {
            400 | 413 => ErrorKind::Invalid,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            412 => ErrorKind::PreconditionFailed,
            421 => ErrorKind::Misdirected,
            422 => ErrorKind::IdempotencyKeyReused,
            502 => ErrorKind::BadGateway,
            503 | 504 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }

    /// Whether the service failed (a 5xx), rather than the request being
    /// refused.
    pub fn is_failure(self) -> bool {
        self.http_status() >= 500
    }

    /// Seconds a client should wait before retrying, when retrying helps.
    pub fn retry_after(self) -> Option<u32> {
        (self.http_status() == 503).then_some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_round_trip() {
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.code(), i32::try_from(i + 1).unwrap());
            assert_eq!(ErrorKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ErrorKind::from_code(0), None);
        assert_eq!(ErrorKind::from_code(13), None);
    }

    #[test]
    fn an_older_peers_status_means_the_same_kind() {
        for kind in ErrorKind::ALL {
            let back = ErrorKind::from_http_status(i32::from(kind.http_status()));
            assert_eq!(back.http_status(), kind.http_status(), "{kind:?}");
        }
    }
}
