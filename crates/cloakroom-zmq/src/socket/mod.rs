//! The async socket: one owner task, the rules of docs/zmq-event-loop.md.
//!
//! The loop, in the words of the rules (see `docs/zmq-event-loop.md` for the why):
//!
//! 1. `recv`: try `zmq_msg_recv(DONTWAIT)`; a message returns at once, unless the drain
//!    budget is spent, in which case the task yields to the runtime first and comes back
//!    *without* waiting on the descriptor (the libev idle watcher).
//! 2. `EAGAIN`: only now may the task sleep. libzmq has just handled all its pending
//!    commands, so this `EAGAIN` is the re-check; `Socket::sleep` waits on `ZMQ_FD`
//!    (registered READABLE only), on the reply queue and on the safety timer. Waits of
//!    `send` for room re-check `ZMQ_EVENTS` first (a send's `EAGAIN` is not fresh).
//! 3. When the descriptor wakes the task, tokio's readiness is cleared at once, before any
//!    re-check (`ZMQ_EVENTS`, or `recv`'s next DONTWAIT receive): an edge that fires after
//!    that point sets readiness again and cannot be lost.
//! 4. Replies queued by worker tasks are sent by the owner while it sleeps; sending makes
//!    libzmq process commands, which can swallow the edge of a message that arrived
//!    meanwhile, so after every send `ZMQ_EVENTS` is re-checked before sleeping again.
//! 5. The safety timer wakes a sleeping socket now and then; if `ZMQ_EVENTS` then shows
//!    work while `ZMQ_FD` is not readable, a wakeup was lost: it is counted
//!    ([`Counters::missed_wakeups`]) and the work is done anyway.
//!
//! Replies are bounded and never wait behind a slow peer: the reply queue has a capacity
//! ([`SocketBuilder::reply_queue`]); a reply libzmq cannot take (`EAGAIN`: that peer is at
//! its high-water mark) is held in a queue *of that peer* (bounded per peer and in total,
//! the excess dropped and counted in [`Counters::shed_replies`]), so replies to every other
//! peer go on; and sending replies spends the same drain budget as receiving, so a big
//! writer yields to the runtime like a big reader.

mod builder;
mod counters;
mod io;
mod replies;

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::error::{Error, ErrorKind, Result};

pub use self::builder::SocketBuilder;
pub use self::counters::{Counters, ReplySender};
use self::io::Wake;
use self::replies::Held;

/// One message: its frames in order.
pub type Multipart = Vec<zmq::Message>;

/// Default number of messages `recv` returns back to back before it yields to the runtime.
pub const DEFAULT_BUDGET: u32 = 64;

/// Default period of the safety timer that looks for lost wakeups.
pub const DEFAULT_SAFETY_INTERVAL: Duration = Duration::from_millis(500);

/// Default capacity of the reply queue ([`SocketBuilder::reply_queue`]).
pub const DEFAULT_REPLY_QUEUE: usize = 1024;

/// Default number of replies held for one peer that cannot take more
/// ([`SocketBuilder::held_replies`]).
pub const DEFAULT_HELD_PER_PEER: usize = 256;

/// Default number of replies held for all such peers together
/// ([`SocketBuilder::held_replies`]).
pub const DEFAULT_HELD_TOTAL: usize = 16_384;

/// Default limit on the size of one message, in bytes ([`SocketBuilder::max_message_size`]).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

const ROOM_BACKOFF_MIN: Duration = Duration::from_millis(1);
const ROOM_BACKOFF_MAX: Duration = Duration::from_millis(64);

/// The socket types this crate is tested with. Others that libzmq offers work through
/// [`SocketBuilder::raw`], under the same rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketKind {
    /// `ZMQ_ROUTER`, made with `ZMQ_ROUTER_MANDATORY` so an unroutable reply is an error.
    Router,
    /// `ZMQ_DEALER`.
    Dealer,
    /// `ZMQ_PUB`.
    Pub,
    /// `ZMQ_SUB`; subscribe with [`Socket::subscribe`].
    Sub,
}

impl SocketKind {
    fn zmq(self) -> zmq::SocketType {
        match self {
            SocketKind::Router => zmq::ROUTER,
            SocketKind::Dealer => zmq::DEALER,
            SocketKind::Pub => zmq::PUB,
            SocketKind::Sub => zmq::SUB,
        }
    }
}

/// A deliberately broken event loop, for the test suite only: each one breaks one rule of
/// docs/zmq-event-loop.md so the tests can show they fail when the rule is broken.
#[cfg(feature = "broken-variants")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Broken {
    /// The correct loop.
    #[default]
    None,
    /// The seed's failure: read one message per descriptor wakeup, then wait on the
    /// descriptor again without draining.
    OneMessagePerWakeup,
    /// Drain without a budget: never yield while messages keep coming.
    NoBudget,
    /// Never clear tokio's readiness: the descriptor "stays ready" and the task spins.
    NoClear,
    /// After sending, look at `ZMQ_EVENTS` only for POLLOUT (which handles libzmq's
    /// commands and so eats the read edge) and go back to sleep without re-checking POLLIN.
    NoRecheckAfterSend,
    /// The reply queue of before: one queue for all peers, a reply that meets `EAGAIN` goes
    /// back to its head and blocks every reply behind it, held replies are never bounded,
    /// and sending replies spends no drain budget.
    OldReplyQueue,
    /// CURVE as before: `Socket::curve_server` only borrows the ZAP handler and leaves
    /// `ZMQ_ZAP_ENFORCE_DOMAIN` off, so without a handler libzmq admits every client.
    CurveFailsOpen,
}

/// The number libzmq hands out as `ZMQ_FD`; owned by the libzmq socket, never closed here.
#[derive(Debug)]
struct ZmqFd(RawFd);

impl AsRawFd for ZmqFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A libzmq socket driven by the tokio runtime. One task owns it (`&mut self` everywhere);
/// other tasks hand it messages through [`Socket::reply_sender`].
pub struct Socket {
    // Field order matters: `fd` must be dropped (deregistered) before `sock` closes the
    // descriptor it refers to.
    fd: AsyncFd<ZmqFd>,
    sock: zmq::Socket,
    /// ROUTER's POLLOUT means "some peer can take a message", not the one we want.
    is_router: bool,
    /// Next retry delay while a ROUTER peer has no room (see `sleep`).
    room_backoff: Duration,
    budget: u32,
    budget_max: u32,
    outbox_tx: mpsc::Sender<Multipart>,
    outbox_rx: mpsc::Receiver<Multipart>,
    /// Replies taken from the queue that libzmq has not accepted yet (`EAGAIN`), per peer.
    held: Held,
    held_per_peer: usize,
    held_total: usize,
    /// Something may have made room for a held reply (a descriptor wakeup, the retry timer,
    /// replies held without a try): the next flush retries the held queues.
    retry_due: bool,
    /// When held replies are retried anyway: a "room again" command can be handled (and its
    /// descriptor edge eaten) by any libzmq call, so retries cannot wait for a wakeup alone.
    next_retry: Instant,
    /// The ZAP handler of a CURVE server socket: kept alive at least as long as this socket.
    zap: Option<crate::curve::ZapGuard>,
    safety: Pin<Box<Sleep>>,
    safety_interval: Duration,
    max_message_size: Option<usize>,
    counters: Counters,
    #[cfg(feature = "broken-variants")]
    broken: Broken,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd.get_ref().0)
            .field("held", &self.held.len)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Socket {
    /// Shorthand for `SocketBuilder::new(kind).build(ctx)`.
    ///
    /// # Errors
    /// As [`SocketBuilder::build`].
    pub fn new(ctx: &zmq::Context, kind: SocketKind) -> Result<Self> {
        SocketBuilder::new(kind).build(ctx)
    }

    /// The libzmq socket, for options this crate does not wrap (CURVE keys, identities).
    /// Receiving or sending through it directly is allowed: the loop re-checks
    /// `ZMQ_EVENTS` before every sleep, so it cannot lose a wakeup because of it.
    pub fn get_ref(&self) -> &zmq::Socket {
        &self.sock
    }

    /// Binds to an endpoint (`tcp://127.0.0.1:*`, `ipc://...`, `inproc://...`).
    ///
    /// # Errors
    /// libzmq's.
    pub fn bind(&self, endpoint: &str) -> Result<()> {
        self.sock.bind(endpoint).map_err(|e| Error::zmq("bind", e))
    }

    /// Connects to an endpoint.
    ///
    /// # Errors
    /// libzmq's.
    pub fn connect(&self, endpoint: &str) -> Result<()> {
        self.sock
            .connect(endpoint)
            .map_err(|e| Error::zmq("connect", e))
    }

    /// The endpoint last bound (with the port chosen for `tcp://...:*`).
    ///
    /// # Errors
    /// libzmq's, or [`ErrorKind::Invalid`] when nothing is bound.
    pub fn last_endpoint(&self) -> Result<String> {
        self.sock
            .get_last_endpoint()
            .map_err(|e| Error::zmq("ZMQ_LAST_ENDPOINT", e))?
            .map_err(|_| Error::new(ErrorKind::Invalid, "ZMQ_LAST_ENDPOINT"))
    }

    /// Subscribes a SUB socket to a topic prefix (`b""` for everything).
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] on other socket types.
    pub fn subscribe(&self, prefix: &[u8]) -> Result<()> {
        self.sock
            .set_subscribe(prefix)
            .map_err(|e| Error::zmq("ZMQ_SUBSCRIBE", e))
    }

    /// The raw libzmq socket, for the options the `zmq` crate does not wrap.
    pub(crate) fn raw_socket(&mut self) -> *mut std::os::raw::c_void {
        self.sock.as_mut_ptr()
    }

    /// Keeps a ZAP handler running at least as long as this socket.
    pub(crate) fn keep_zap(&mut self, guard: crate::curve::ZapGuard) {
        self.zap = Some(guard);
    }

    #[cfg(feature = "broken-variants")]
    pub(crate) fn broken(&self) -> Broken {
        self.broken
    }

    /// The counters of this socket (a handle that other tasks can keep).
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// A handle for worker tasks to queue messages that this socket's owner sends.
    pub fn reply_sender(&self) -> ReplySender {
        ReplySender {
            tx: self.outbox_tx.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Receives one whole message. While it waits, it sends what worker tasks queued.
    ///
    /// Returns at most the budget of messages back to back; then it yields to the runtime
    /// once, so a flooded socket cannot starve the other tasks of its runtime.
    ///
    /// # Errors
    /// libzmq's (for example [`ErrorKind::Closed`] when the context is terminated).
    /// Failures to send queued replies are not returned here: they are counted in
    /// [`Counters::dropped_replies`].
    ///
    /// # Cancel safety
    /// Cancel-safe: a message is either returned or left in libzmq.
    pub async fn recv(&mut self) -> Result<Multipart> {
        loop {
            if self.budget == 0 {
                self.budget = self.budget_max;
                Counters::bump(&self.counters.inner.budget_yields);
                // The seed's idle watcher: let the other tasks run, then come back to the
                // socket without waiting on the descriptor (there may be no new edge).
                tokio::task::yield_now().await;
            }
            if self.held.len > 0 || !self.outbox_rx.is_empty() {
                // Replies spend the same budget as requests (a big writer yields too).
                let used = self.flush_queued(self.budget)?;
                self.spend_on_replies(used);
            }
            #[cfg(feature = "broken-variants")]
            if self.broken == Broken::OneMessagePerWakeup {
                // Wait for an edge first, then read exactly one message.
                self.wait_fd_only().await?;
                match self.try_recv()? {
                    Some(m) => return Ok(m),
                    None => continue,
                }
            }
            match self.try_recv()? {
                Some(m) => {
                    #[cfg(feature = "broken-variants")]
                    if self.broken == Broken::NoBudget {
                        return Ok(m);
                    }
                    self.spend(1);
                    return Ok(m);
                }
                None => {
                    // EAGAIN: only now may we sleep. The budget is refilled once the task has
                    // really waited (in `sleep`), not here: replies sent since the last
                    // yield still count.
                    #[cfg(feature = "broken-variants")]
                    if self.broken == Broken::OldReplyQueue {
                        self.budget = self.budget_max;
                    }
                    // With a reply still waiting for libzmq, wake for room to send too.
                    let want = if self.held.len == 0 || self.is_router {
                        zmq::POLLIN
                    } else {
                        zmq::POLLIN | zmq::POLLOUT
                    };
                    match self.sleep(want, true).await? {
                        Wake::Ready => {}
                        Wake::Reply(m) => {
                            self.hold(m);
                            self.retry_due = true;
                        }
                    }
                }
            }
        }
    }

    /// Sends one whole message, waiting while libzmq cannot take it (high-water mark).
    ///
    /// # Errors
    /// [`ErrorKind::Unroutable`] for a ROUTER message whose first frame names no connected
    /// peer; [`ErrorKind::TooLarge`] over the configured limit; libzmq's otherwise.
    ///
    /// # Cancel safety
    /// Not cancel-safe once it has waited: the message is dropped if the future is.
    pub async fn send(&mut self, msg: Multipart) -> Result<()> {
        self.check_size(&msg)?;
        let mut msg = msg;
        loop {
            match self.try_send(msg)? {
                None => {
                    Counters::bump(&self.counters.inner.sent);
                    self.room_backoff = ROOM_BACKOFF_MIN;
                    return Ok(());
                }
                Some(back) => {
                    msg = back;
                    let wake = if self.is_router {
                        // A ROUTER shows POLLOUT while *any* peer has room, so POLLOUT cannot
                        // say when this peer has. Let libzmq handle its commands (a pending
                        // "room again" among them), retry once, then wait for a wakeup or
                        // a short, growing backoff: never a spin.
                        self.events()?;
                        match self.try_send(msg)? {
                            None => {
                                Counters::bump(&self.counters.inner.sent);
                                self.room_backoff = ROOM_BACKOFF_MIN;
                                return Ok(());
                            }
                            Some(back) => msg = back,
                        }
                        self.sleep(zmq::PollEvents::empty(), true).await?
                    } else {
                        self.sleep(zmq::POLLOUT, false).await?
                    };
                    if let Wake::Reply(m) = wake {
                        // Behind this message, in its peer's queue: sent by the next flush.
                        self.hold(m);
                        self.retry_due = true;
                    }
                }
            }
        }
    }

    /// Sends what worker tasks queued, without waiting, at most one budget of messages (64
    /// by default). Returns how many messages are still waiting: held for peers that cannot
    /// take them yet, plus those still in the reply queue.
    ///
    /// # Errors
    /// libzmq's fatal errors (a closed context); a reply that cannot be sent is dropped
    /// and counted instead.
    pub fn flush(&mut self) -> Result<usize> {
        self.flush_queued(self.budget_max)?;
        Ok(self.held.len + self.outbox_rx.len())
    }

    fn spend(&mut self, units: u32) {
        #[cfg(feature = "broken-variants")]
        if self.broken == Broken::NoBudget {
            return;
        }
        self.budget = self.budget.saturating_sub(units);
    }

    fn spend_on_replies(&mut self, units: u32) {
        #[cfg(feature = "broken-variants")]
        if self.broken == Broken::OldReplyQueue {
            return;
        }
        self.spend(units);
    }

    fn check_size(&self, msg: &Multipart) -> Result<()> {
        if let Some(max) = self.max_message_size {
            let total: usize = msg.iter().map(|f| f.len()).sum();
            if total > max {
                return Err(Error::new(ErrorKind::TooLarge, "send"));
            }
        }
        Ok(())
    }
}

/// `Socket` must stay `Send` (owner tasks are spawned) and `Unpin` (`recv` borrows it across
/// awaits); a field change that breaks either fails to compile here.
const _: fn() = || {
    fn unpin<T: Unpin + Send>() {}
    unpin::<Socket>();
};
