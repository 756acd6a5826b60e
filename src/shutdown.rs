//! Graceful shutdown, as in mini-redis: a broadcast tells every task to stop; each task holds a
//! clone of a completion sender, and the server waits until all of them are dropped.

use tokio::sync::broadcast;

/// Listens for the shutdown signal. Once received, `recv` returns at once forever after.
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    pub fn new(notify: broadcast::Receiver<()>) -> Shutdown {
        Shutdown { is_shutdown: false, notify }
    }

    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
