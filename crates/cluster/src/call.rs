//! What every node-to-node call shares: its deadline and when its payload is
//! compressed.

use std::time::Duration;

/// Payloads larger than this are compressed.
pub const COMPRESS_ABOVE_BYTES: usize = 8 * 1024;

/// A request carrying `deadline` as its gRPC timeout.
pub fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}
