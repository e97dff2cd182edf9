//! [`Counters`] of a socket and the [`ReplySender`] workers queue replies through.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Multipart;
use crate::error::{Error, ErrorKind, Result};

/// Declares the counter cells and, for each, a getter on [`Counters`] with its doc.
macro_rules! counters {
    ($($(#[doc = $doc:expr])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        pub(super) struct CounterCells {
            $(pub(super) $name: AtomicU64,)*
        }

        impl Counters {
            $(
                $(#[doc = $doc])*
                pub fn $name(&self) -> u64 {
                    self.inner.$name.load(Ordering::Relaxed)
                }
            )*
        }
    };
}

/// Counters of one socket, readable from any task while the owner runs.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub(super) inner: Arc<CounterCells>,
}

counters! {
    /// Wakeups the descriptor missed: the safety timer found work that `ZMQ_FD` did not
    /// signal. With the rules kept this stays zero, but for a rare benign race: the check
    /// reads the descriptor and then `ZMQ_EVENTS`, so a message that arrives between the
    /// two is counted once. Misses that recur are a bug.
    missed_wakeups,
    /// Times the task was woken by the descriptor.
    fd_wakeups,
    /// Times `recv` yielded to the runtime because the drain budget was spent.
    budget_yields,
    /// Messages received.
    received,
    /// Messages sent (directly or from the reply queue).
    sent,
    /// Queued replies that could not be sent (unroutable, too large) and were dropped.
    dropped_replies,
    /// Queued replies dropped because their peer could take no more (libzmq said `EAGAIN`)
    /// and the replies already held for it, or for all such peers, were at their bound
    /// ([`SocketBuilder::held_replies`]). A peer that does not read loses replies; the
    /// others are not delayed by it.
    ///
    /// [`SocketBuilder::held_replies`]: super::SocketBuilder::held_replies
    shed_replies,
    /// Calls of [`ReplySender::send`] refused because the reply queue was full
    /// ([`ErrorKind::Full`]).
    refused_replies,
    /// Replies held right now for peers that cannot take them yet (a gauge, not a count):
    /// never more than the total of [`SocketBuilder::held_replies`].
    ///
    /// [`SocketBuilder::held_replies`]: super::SocketBuilder::held_replies
    held_replies,
}

impl Counters {
    pub(super) fn bump(cell: &AtomicU64) {
        cell.fetch_add(1, Ordering::Relaxed);
    }
}

/// A handle worker tasks use to hand messages (typically replies) to the task that owns a
/// [`Socket`]. Cheap to clone; the owner sends them while it waits in [`Socket::recv`] or
/// [`Socket::flush`].
///
/// The queue is bounded ([`SocketBuilder::reply_queue`], default 1024): [`ReplySender::send`]
/// refuses a reply when it is full, [`ReplySender::send_wait`] waits for room.
///
/// [`Socket`]: super::Socket
/// [`Socket::recv`]: super::Socket::recv
/// [`Socket::flush`]: super::Socket::flush
/// [`SocketBuilder::reply_queue`]: super::SocketBuilder::reply_queue
#[derive(Clone)]
pub struct ReplySender {
    pub(super) tx: mpsc::Sender<Multipart>,
    pub(super) counters: Counters,
}

impl fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySender")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl ReplySender {
    /// Queues `msg` for the owner to send. Never waits.
    ///
    /// # Errors
    /// [`ErrorKind::Full`] when the reply queue is full (the reply is dropped and counted in
    /// [`Counters::refused_replies`]); [`ErrorKind::Closed`] when the socket has been
    /// dropped.
    pub fn send(&self, msg: Multipart) -> Result<()> {
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Counters::bump(&self.counters.inner.refused_replies);
                Error::new(ErrorKind::Full, "reply queue")
            }
            mpsc::error::TrySendError::Closed(_) => Error::new(ErrorKind::Closed, "reply queue"),
        })
    }

    /// Queues `msg` for the owner to send, waiting while the reply queue is full: the
    /// back-pressure a worker should feel. Never call it from the task that owns the
    /// socket (it would wait for itself).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when the socket has been dropped.
    pub async fn send_wait(&self, msg: Multipart) -> Result<()> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "reply queue"))
    }
}
