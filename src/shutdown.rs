//! Graceful shutdown. One `CancellationToken` is the signal; every task holds a `Shutdown` made
//! from a child of it (as in mini-redis, each task also holds a clone of a completion sender, and
//! the server waits until all of them are dropped). A child token has its own waiter list, so the
//! thousands of sessions waiting on it never contend on one lock.

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Listens for the shutdown signal. Once signalled, `recv` returns at once forever after.
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A listener on `signal`: cancelling `signal` reaches it.
    pub fn new(signal: &CancellationToken) -> Shutdown {
        Shutdown { token: signal.child_token() }
    }

    pub async fn recv(&self) {
        self.token.cancelled().await
    }

    /// A future that resolves at shutdown and can be kept across the iterations of a loop (it
    /// registers its waker once, not on every turn).
    pub fn signalled(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }
}
