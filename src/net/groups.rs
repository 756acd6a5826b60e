//! Where connections run once they are set up: a few group tasks, each polling many connections'
//! futures, instead of a tokio task per connection.
//!
//! A room's fan-out wakes every member's session. With a task per session that is one tokio
//! wake-up per member (a run-queue push, often a sleeping worker thread woken, a task poll of its
//! own). In a group, a session's wake-up queues the session in its group and wakes the group's task
//! only if it is not already awake, so one tokio wake-up serves every member of the group the
//! fan-out reached, and the group polls them one after another in one turn, as the C daemons'
//! event loops write many sockets in one turn. Each session is still its own future with its own
//! wakers: a group polls only the sessions that were woken.
//!
//! What a task per connection gave is kept: a panic ends only the connection that panicked (it is
//! caught and logged), and a session that always has work yields like a task, as tokio's budget
//! applies to the group's turn (see `yield_if_out_of_budget`).

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A handle on the group tasks; connections are spread over them in turn.
pub struct Groups {
    groups: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl Groups {
    /// Starts `n` group tasks (at least one) on the current runtime.
    pub fn start(n: usize) -> Groups {
        let groups = (0..n.max(1))
            .map(|_| {
                // Unbounded: what comes in is bounded by the connections admitted (the gate's limits).
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(rx));
                tx
            })
            .collect();
        Groups { groups, next: AtomicUsize::new(0) }
    }

    /// Two groups per worker thread: each fan-out wakes few tasks, and a worker with nothing to do
    /// still finds a group to take from a busy one.
    pub fn per_worker() -> Groups {
        Groups::start(2 * tokio::runtime::Handle::current().metrics().num_workers())
    }

    /// Runs a connection's future in the next group.
    pub fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.groups.len();
        let job: Job = Box::pin(connection);
        if let Err(mpsc::error::SendError(job)) = self.groups[i].send(job) {
            // The group is gone (the runtime is shutting down): a task of its own, as before.
            tokio::spawn(job);
        }
    }
}

/// A group's task: takes new connections and polls those that were woken, until no more can come
/// and all have ended.
async fn run(mut incoming: mpsc::UnboundedReceiver<Job>) {
    let mut connections = FuturesUnordered::new();
    let mut open = true;
    poll_fn(|cx| {
        while open {
            match incoming.poll_recv(cx) {
                Poll::Ready(Some(job)) => connections.push(AssertUnwindSafe(job).catch_unwind()),
                Poll::Ready(None) => open = false,
                Poll::Pending => break,
            }
        }
        loop {
            match connections.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(()))) => {}
                Poll::Ready(Some(Err(_))) => tracing::error!("a connection's task panicked; it was closed"),
                Poll::Ready(None) if open => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// After an I/O poll came back `Pending`: if that was tokio's budget running out (the group's turn
/// has done its share), waits for the next turn and says so (`true`), so the caller polls again
/// rather than treating the socket as blocked.
pub async fn yield_if_out_of_budget() -> bool {
    if tokio::task::coop::has_budget_remaining() {
        return false;
    }
    tokio::task::yield_now().await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_connections_in_few_groups_each_run_and_a_panic_ends_only_its_own() {
        let groups = Groups::start(2);
        let go = Arc::new(Semaphore::new(0));
        let (done_tx, mut done_rx) = mpsc::channel::<usize>(100);
        for i in 0..50 {
            let (go, done) = (go.clone(), done_tx.clone());
            groups.spawn(async move {
                let _go = go.acquire().await.unwrap();
                if i == 7 {
                    panic!("connection 7 fails");
                }
                done.send(i).await.unwrap();
            });
        }
        drop(done_tx);
        go.add_permits(50);
        let mut finished = Vec::new();
        while let Some(i) = tokio::time::timeout(std::time::Duration::from_secs(10), done_rx.recv()).await.unwrap() {
            finished.push(i);
        }
        finished.sort();
        let expected: Vec<usize> = (0..50).filter(|i| *i != 7).collect();
        assert_eq!(finished, expected, "every connection but the one that panicked finished");
    }
}
