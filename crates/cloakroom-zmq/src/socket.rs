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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::error::{Error, ErrorKind, Result};

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

/// Counters of one socket, readable from any task while the owner runs.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    inner: Arc<CounterCells>,
}

#[derive(Debug, Default)]
struct CounterCells {
    missed_wakeups: AtomicU64,
    fd_wakeups: AtomicU64,
    budget_yields: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    dropped_replies: AtomicU64,
    shed_replies: AtomicU64,
    refused_replies: AtomicU64,
    held_replies: AtomicU64,
}

impl Counters {
    /// Wakeups the descriptor missed: the safety timer found work that `ZMQ_FD` did not
    /// signal. With the rules kept this stays zero; anything else is a bug.
    pub fn missed_wakeups(&self) -> u64 {
        self.inner.missed_wakeups.load(Ordering::Relaxed)
    }
    /// Times the task was woken by the descriptor.
    pub fn fd_wakeups(&self) -> u64 {
        self.inner.fd_wakeups.load(Ordering::Relaxed)
    }
    /// Times `recv` yielded to the runtime because the drain budget was spent.
    pub fn budget_yields(&self) -> u64 {
        self.inner.budget_yields.load(Ordering::Relaxed)
    }
    /// Messages received.
    pub fn received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }
    /// Messages sent (directly or from the reply queue).
    pub fn sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }
    /// Queued replies that could not be sent (unroutable, too large) and were dropped.
    pub fn dropped_replies(&self) -> u64 {
        self.inner.dropped_replies.load(Ordering::Relaxed)
    }
    /// Queued replies dropped because their peer could take no more (libzmq said `EAGAIN`)
    /// and the replies already held for it, or for all such peers, were at their bound
    /// ([`SocketBuilder::held_replies`]). A peer that does not read loses replies; the
    /// others are not delayed by it.
    pub fn shed_replies(&self) -> u64 {
        self.inner.shed_replies.load(Ordering::Relaxed)
    }
    /// Calls of [`ReplySender::send`] refused because the reply queue was full
    /// ([`ErrorKind::Full`]).
    pub fn refused_replies(&self) -> u64 {
        self.inner.refused_replies.load(Ordering::Relaxed)
    }
    /// Replies held right now for peers that cannot take them yet (a gauge, not a count):
    /// never more than the total of [`SocketBuilder::held_replies`].
    pub fn held_replies(&self) -> u64 {
        self.inner.held_replies.load(Ordering::Relaxed)
    }
    fn bump(cell: &AtomicU64) {
        cell.fetch_add(1, Ordering::Relaxed);
    }
}

/// A handle worker tasks use to hand messages (typically replies) to the task that owns a
/// [`Socket`]. Cheap to clone; the owner sends them while it waits in [`Socket::recv`] or
/// [`Socket::flush`].
///
/// The queue is bounded ([`SocketBuilder::reply_queue`], default 1024): [`ReplySender::send`]
/// refuses a reply when it is full, [`ReplySender::send_wait`] waits for room.
#[derive(Clone)]
pub struct ReplySender {
    tx: mpsc::Sender<Multipart>,
    counters: Counters,
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

/// Builds a [`Socket`]: the required choice (the kind) is the argument of
/// [`SocketBuilder::new`], the optional ones are methods.
#[derive(Debug, Clone)]
pub struct SocketBuilder {
    kind: zmq::SocketType,
    budget: u32,
    safety_interval: Duration,
    max_message_size: Option<usize>,
    linger: i32,
    hwm: Option<i32>,
    reply_queue: usize,
    held_per_peer: usize,
    held_total: usize,
    #[cfg(feature = "broken-variants")]
    broken: Broken,
}

impl SocketBuilder {
    /// A builder for a socket of this kind.
    pub fn new(kind: SocketKind) -> Self {
        Self::raw(kind.zmq())
    }

    /// A builder for any libzmq socket type. Only the kinds of [`SocketKind`] are tested.
    pub fn raw(kind: zmq::SocketType) -> Self {
        SocketBuilder {
            kind,
            budget: DEFAULT_BUDGET,
            safety_interval: DEFAULT_SAFETY_INTERVAL,
            max_message_size: Some(DEFAULT_MAX_MESSAGE_SIZE),
            linger: 0,
            hwm: None,
            reply_queue: DEFAULT_REPLY_QUEUE,
            held_per_peer: DEFAULT_HELD_PER_PEER,
            held_total: DEFAULT_HELD_TOTAL,
            #[cfg(feature = "broken-variants")]
            broken: Broken::None,
        }
    }

    /// Messages `recv` returns back to back before it yields to the runtime (default 64,
    /// at least 1).
    pub fn budget(mut self, budget: u32) -> Self {
        self.budget = budget.max(1);
        self
    }

    /// Period of the safety timer that counts lost wakeups (default 500 ms).
    pub fn safety_interval(mut self, every: Duration) -> Self {
        self.safety_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Refuse messages larger than `bytes` (default 1 MiB, [`DEFAULT_MAX_MESSAGE_SIZE`]):
    /// libzmq drops a peer that sends a frame larger than that (`ZMQ_MAXMSGSIZE`, checked
    /// per frame as it arrives), and [`Socket::send`] refuses to send a message whose frames
    /// add up to more (a queued reply that does is dropped and counted in
    /// [`Counters::dropped_replies`]).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
        self
    }

    /// No limit on the size of a message: a peer may make this socket allocate as much as
    /// it likes. Only for sockets whose peers are all trusted.
    pub fn unlimited_message_size(mut self) -> Self {
        self.max_message_size = None;
        self
    }

    /// Capacity of the queue between [`ReplySender`]s and the owner, in messages (default
    /// 1024, [`DEFAULT_REPLY_QUEUE`]; at least 1). When it is full, [`ReplySender::send`]
    /// refuses and [`ReplySender::send_wait`] waits.
    pub fn reply_queue(mut self, capacity: usize) -> Self {
        self.reply_queue = capacity.max(1);
        self
    }

    /// How many queued replies the owner holds for peers that cannot take them yet (libzmq
    /// answered `EAGAIN`: for a ROUTER, that one peer is at its high-water mark): at most
    /// `per_peer` for one peer (default 256) and `total` for all of them (default 16,384).
    /// A reply past either bound is dropped and counted in [`Counters::shed_replies`].
    /// Held replies are not in libzmq yet; `high_water_mark` bounds what is.
    pub fn held_replies(mut self, per_peer: usize, total: usize) -> Self {
        self.held_per_peer = per_peer;
        self.held_total = total;
        self
    }

    /// `ZMQ_LINGER` in milliseconds (default 0: unsent messages are dropped on close, so
    /// dropping a socket never blocks).
    pub fn linger(mut self, ms: i32) -> Self {
        self.linger = ms;
        self
    }

    /// Both high-water marks (`ZMQ_SNDHWM`, `ZMQ_RCVHWM`), in messages.
    pub fn high_water_mark(mut self, messages: i32) -> Self {
        self.hwm = Some(messages);
        self
    }

    #[cfg(feature = "broken-variants")]
    #[doc(hidden)]
    pub fn broken(mut self, variant: Broken) -> Self {
        self.broken = variant;
        self
    }

    /// Makes the socket in `ctx` and registers its `ZMQ_FD` with the current tokio runtime.
    /// Bind, connect and set further options through [`Socket::get_ref`] or the helpers.
    ///
    /// # Errors
    /// [`ErrorKind::NoRuntime`] outside a tokio runtime, or in one built without I/O or
    /// time; libzmq errors otherwise.
    pub fn build(self, ctx: &zmq::Context) -> Result<Socket> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(ErrorKind::NoRuntime, "Socket::build"));
        }
        let sock = ctx.socket(self.kind).map_err(|e| Error::zmq("socket", e))?;
        sock.set_linger(self.linger)
            .map_err(|e| Error::zmq("ZMQ_LINGER", e))?;
        if self.kind == zmq::ROUTER {
            sock.set_router_mandatory(true)
                .map_err(|e| Error::zmq("ZMQ_ROUTER_MANDATORY", e))?;
        }
        if let Some(max) = self.max_message_size {
            let max = i64::try_from(max).map_err(|_| Error::new(ErrorKind::Invalid, "max size"))?;
            sock.set_maxmsgsize(max)
                .map_err(|e| Error::zmq("ZMQ_MAXMSGSIZE", e))?;
        }
        if let Some(hwm) = self.hwm {
            sock.set_sndhwm(hwm)
                .map_err(|e| Error::zmq("ZMQ_SNDHWM", e))?;
            sock.set_rcvhwm(hwm)
                .map_err(|e| Error::zmq("ZMQ_RCVHWM", e))?;
        }
        let raw = sock.get_fd().map_err(|e| Error::zmq("ZMQ_FD", e))?;
        // SAFETY: `raw` is libzmq's signalling descriptor of `sock`. It stays open and refers
        // to the same file description until `sock` is closed, and `Socket` declares `fd`
        // before `sock`, so the AsyncFd (and its epoll registration) is dropped first.
        // `ZmqFd::as_raw_fd` always returns this same number.
        let register =
            || unsafe { AsyncFd::register_with_interest(ZmqFd(raw), Interest::READABLE) };
        // tokio panics, rather than erring, in a runtime built without I/O or time; nothing
        // is half-done when it does (ZmqFd is a plain number), so the panic becomes an error.
        let fd = std::panic::catch_unwind(register)
            .map_err(|_| Error::new(ErrorKind::NoRuntime, "tokio I/O driver not enabled"))?
            .map_err(|e| Error::io("register ZMQ_FD", e.into_parts().1))?;
        let safety =
            std::panic::catch_unwind(|| Box::pin(tokio::time::sleep(self.safety_interval)))
                .map_err(|_| Error::new(ErrorKind::NoRuntime, "tokio time driver not enabled"))?;
        let (tx, rx) = mpsc::channel(self.reply_queue);
        Ok(Socket {
            fd,
            sock,
            is_router: self.kind == zmq::ROUTER,
            room_backoff: ROOM_BACKOFF_MIN,
            budget: self.budget,
            budget_max: self.budget,
            outbox_tx: tx,
            outbox_rx: rx,
            held: Held::default(),
            held_per_peer: self.held_per_peer,
            held_total: self.held_total,
            retry_due: false,
            next_retry: Instant::now(),
            zap: None,
            safety,
            safety_interval: self.safety_interval,
            max_message_size: self.max_message_size,
            counters: Counters::default(),
            #[cfg(feature = "broken-variants")]
            broken: self.broken,
        })
    }
}

/// The number libzmq hands out as `ZMQ_FD`; owned by the libzmq socket, never closed here.
#[derive(Debug)]
struct ZmqFd(RawFd);

impl AsRawFd for ZmqFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Replies libzmq could not take yet (`EAGAIN`), one queue per peer (per routing id for a
/// ROUTER; one queue for the other socket types, whose `EAGAIN` is not about one peer).
#[derive(Default)]
struct Held {
    by_peer: HashMap<Vec<u8>, VecDeque<Multipart>>,
    /// Peers with held replies, in the order they are retried (round robin).
    order: VecDeque<Vec<u8>>,
    len: usize,
}

/// What woke a sleeping socket.
enum Wake {
    /// `ZMQ_EVENTS` shows what we want.
    Ready,
    /// A queued reply was taken from the reply queue.
    Reply(Multipart),
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

    /// The queue a message is held in: its routing id on a ROUTER, one queue otherwise.
    fn peer_key(&self, msg: &Multipart) -> Vec<u8> {
        #[cfg(feature = "broken-variants")]
        if self.broken == Broken::OldReplyQueue {
            return Vec::new();
        }
        match msg.first() {
            Some(id) if self.is_router => id.to_vec(),
            _ => Vec::new(),
        }
    }

    fn set_held_gauge(&self) {
        let held = self.held.len as u64;
        self.counters
            .inner
            .held_replies
            .store(held, Ordering::Relaxed);
    }

    /// Holds `msg` at the back of its peer's queue without trying to send it, or drops and
    /// counts it when that queue or all of them are at their bound.
    fn hold(&mut self, msg: Multipart) {
        if self.check_size(&msg).is_err() {
            Counters::bump(&self.counters.inner.dropped_replies);
            return;
        }
        let key = self.peer_key(&msg);
        let queue_len = self.held.by_peer.get(&key).map_or(0, VecDeque::len);
        let bounded = {
            #[cfg(feature = "broken-variants")]
            {
                self.broken != Broken::OldReplyQueue
            }
            #[cfg(not(feature = "broken-variants"))]
            {
                true
            }
        };
        if bounded && (queue_len >= self.held_per_peer || self.held.len >= self.held_total) {
            Counters::bump(&self.counters.inner.shed_replies);
            return;
        }
        if queue_len == 0 {
            self.held.order.push_back(key.clone());
        }
        self.held.by_peer.entry(key).or_default().push_back(msg);
        self.held.len += 1;
        self.set_held_gauge();
    }

    /// Takes one reply from the queue: sends it at once, unless its peer already has
    /// replies held (then it goes behind them, keeping that peer's order) or libzmq cannot
    /// take it (then it is held).
    fn send_or_hold(&mut self, msg: Multipart) -> Result<()> {
        if self.check_size(&msg).is_err() {
            Counters::bump(&self.counters.inner.dropped_replies);
            return Ok(());
        }
        if self.held.len > 0 && self.held.by_peer.contains_key(&self.peer_key(&msg)) {
            self.hold(msg);
            return Ok(());
        }
        match self.try_send(msg) {
            Ok(None) => {
                Counters::bump(&self.counters.inner.sent);
                Ok(())
            }
            Ok(Some(back)) => {
                self.hold(back);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Closed => Err(e),
            Err(_) => {
                Counters::bump(&self.counters.inner.dropped_replies);
                Ok(())
            }
        }
    }

    /// Retries the held replies (each peer in turn, round robin), then moves replies from
    /// the queue into libzmq, trying at most `limit` messages in all. Returns how many it
    /// tried: the caller charges them to the drain budget.
    fn flush_queued(&mut self, limit: u32) -> Result<u32> {
        #[cfg(feature = "broken-variants")]
        if self.broken == Broken::OldReplyQueue {
            self.flush_old()?;
            return Ok(0);
        }
        let mut used = 0u32;
        // Held queues are retried only when room may have appeared, and take at most half
        // the batch while new replies wait: many stuck peers cannot crowd out the others.
        let retry_limit = if self.outbox_rx.is_empty() {
            limit
        } else {
            (limit / 2).max(1)
        };
        // A non-ROUTER socket woke for POLLOUT has room: always due (one queue, one try).
        let now = Instant::now();
        let due = self.retry_due || !self.is_router || now >= self.next_retry;
        let peers = if due { self.held.order.len() } else { 0 };
        let mut any_blocked = false;
        let mut visited = 0;
        let mut cut_short = false;
        for _ in 0..peers {
            if used >= retry_limit {
                break;
            }
            visited += 1;
            let Some(peer) = self.held.order.pop_front() else {
                break;
            };
            let Some(mut queue) = self.held.by_peer.remove(&peer) else {
                continue;
            };
            let before = queue.len();
            let (mut gone, mut blocked) = (false, false);
            while used < retry_limit {
                let Some(msg) = queue.pop_front() else { break };
                used += 1;
                match self.try_send(msg) {
                    Ok(None) => {
                        Counters::bump(&self.counters.inner.sent);
                        self.room_backoff = ROOM_BACKOFF_MIN;
                    }
                    Ok(Some(back)) => {
                        queue.push_front(back);
                        blocked = true;
                        any_blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Closed => {
                        self.held.len -= before - queue.len();
                        self.set_held_gauge();
                        return Err(e);
                    }
                    Err(_) => {
                        // The peer is gone (unroutable): so are the rest of its replies.
                        Counters::bump(&self.counters.inner.dropped_replies);
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                for _ in 0..queue.len() {
                    Counters::bump(&self.counters.inner.dropped_replies);
                }
                queue.clear();
            }
            self.held.len -= before - queue.len();
            cut_short |= !queue.is_empty() && !blocked;
            if !queue.is_empty() {
                self.held.by_peer.insert(peer.clone(), queue);
                self.held.order.push_back(peer);
            }
        }
        self.retry_due = cut_short || visited < peers;
        if any_blocked {
            // Next retry after a backoff (1 ms doubling to 64 ms, reset by a success).
            self.next_retry = now + self.room_backoff;
            self.room_backoff = (self.room_backoff * 2).min(ROOM_BACKOFF_MAX);
        }
        self.set_held_gauge();
        while used < limit {
            let Ok(msg) = self.outbox_rx.try_recv() else {
                break;
            };
            used += 1;
            self.send_or_hold(msg)?;
        }
        Ok(used)
    }

    /// Broken variant only: the reply queue of before (see [`Broken::OldReplyQueue`]).
    #[cfg(feature = "broken-variants")]
    fn flush_old(&mut self) -> Result<()> {
        loop {
            let msg = match self
                .held
                .by_peer
                .get_mut(&Vec::new())
                .and_then(VecDeque::pop_front)
            {
                Some(m) => {
                    self.held.len -= 1;
                    m
                }
                None => match self.outbox_rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            match self.try_send(msg) {
                Ok(None) => {
                    Counters::bump(&self.counters.inner.sent);
                    self.room_backoff = ROOM_BACKOFF_MIN;
                }
                Ok(Some(back)) => {
                    let queue = self.held.by_peer.entry(Vec::new()).or_default();
                    queue.push_front(back);
                    self.held.len += 1;
                    self.next_retry = Instant::now() + self.room_backoff;
                    self.room_backoff = (self.room_backoff * 2).min(ROOM_BACKOFF_MAX);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Closed => return Err(e),
                Err(_) => Counters::bump(&self.counters.inner.dropped_replies),
            }
        }
        if self.held.len == 0 {
            self.held.by_peer.clear();
            self.held.order.clear();
        }
        self.set_held_gauge();
        Ok(())
    }

    /// One non-blocking receive of a whole message; `None` on `EAGAIN`.
    fn try_recv(&mut self) -> Result<Option<Multipart>> {
        let mut first = zmq::Message::new();
        match self.sock.recv(&mut first, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(e) => return Err(Error::zmq("recv", e)),
        }
        let mut parts = Vec::with_capacity(4);
        parts.push(first);
        // libzmq delivers a message whole: once its first frame is here, so are the rest.
        while self
            .sock
            .get_rcvmore()
            .map_err(|e| Error::zmq("ZMQ_RCVMORE", e))?
        {
            let mut part = zmq::Message::new();
            // Never blocks: the rest of a message is there; DONTWAIT makes that a checked
            // fact, not an assumption that could stall the runtime.
            self.sock
                .recv(&mut part, zmq::DONTWAIT)
                .map_err(|e| Error::zmq("recv", e))?;
            parts.push(part);
        }
        Counters::bump(&self.counters.inner.received);
        Ok(Some(parts))
    }

    /// One non-blocking send of a whole message; gives it back on `EAGAIN`.
    fn try_send(&mut self, msg: Multipart) -> Result<Option<Multipart>> {
        let n = msg.len();
        if n == 0 {
            return Err(Error::new(ErrorKind::Invalid, "send of an empty multipart"));
        }
        let more = |i: usize| if i + 1 < n { zmq::SNDMORE } else { 0 };
        // The first frame goes as a copy, so that on EAGAIN the message is still ours
        // (zmq 0.10 drops a moved Message whose send fails). Once libzmq has taken the
        // first frame it takes the rest (a message is atomic), so those move, zero-copy.
        match self.sock.send(&msg[0][..], zmq::DONTWAIT | more(0)) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(Some(msg)),
            Err(e) => return Err(Error::zmq("send", e)),
        }
        for (i, frame) in msg.into_iter().enumerate().skip(1) {
            self.sock
                .send(frame, zmq::DONTWAIT | more(i))
                .map_err(|e| Error::zmq("send", e))?;
        }
        Ok(None)
    }

    fn events(&self) -> Result<zmq::PollEvents> {
        self.sock
            .get_events()
            .map_err(|e| Error::zmq("ZMQ_EVENTS", e))
    }

    /// Sleeps until `ZMQ_EVENTS` shows `want`, or a queued reply arrives. The only place
    /// that waits on the descriptor (apart from the broken variants).
    ///
    /// `after_recv_eagain`: the caller's last call on the socket was a non-blocking receive
    /// that returned `EAGAIN`. libzmq handles all its pending commands before it answers
    /// that (`process_commands` with a zero timeout, unthrottled), so the answer is as good
    /// as a fresh `ZMQ_EVENTS` check and the first check is skipped (it costs a `poll(2)`).
    /// For the same reason a descriptor wakeup returns at once (readiness cleared) and the
    /// caller's next DONTWAIT receive is the re-check. A send's `EAGAIN` is not as good:
    /// libzmq throttles command handling on the send path, so send waits re-check here.
    async fn sleep(&mut self, want: zmq::PollEvents, after_recv_eagain: bool) -> Result<Wake> {
        let mut recheck = !after_recv_eagain;
        // Waiting for room at one ROUTER peer: no event says when, so the timer doubles as
        // a retry backoff (1 ms doubling to 64 ms) beside the descriptor.
        let room_wait = want.is_empty() || (self.is_router && self.held.len > 0);
        if want.is_empty() {
            let at = Instant::now() + self.room_backoff;
            self.safety.as_mut().reset(at);
            self.room_backoff = (self.room_backoff * 2).min(ROOM_BACKOFF_MAX);
        } else if room_wait {
            // Replies held for ROUTER peers: wake when their retry is due (set by the last
            // retry that found a peer still full), whatever cancelled earlier waits.
            let at = self.next_retry.max(Instant::now() + ROOM_BACKOFF_MIN);
            self.safety.as_mut().reset(at);
        }
        loop {
            // Rule: re-check ZMQ_EVENTS before every sleep (after EAGAIN, after a wakeup,
            // after any send). This also makes libzmq handle its pending commands.
            if recheck && self.events()?.intersects(want) {
                return Ok(Wake::Ready);
            }
            recheck = true;
            enum Woke {
                Fd,
                Reply(Multipart),
                Timer,
            }
            let mut waited = false;
            let woke = poll_fn(|cx| {
                match self.fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        // Rule: clear tokio's readiness right after the wait returns and
                        // before re-checking ZMQ_EVENTS. An edge that comes after this
                        // point sets it again, so it cannot be lost.
                        #[cfg(feature = "broken-variants")]
                        if self.broken == Broken::NoClear {
                            guard.retain_ready();
                            return Poll::Ready(Ok(Woke::Fd));
                        }
                        guard.clear_ready();
                        return Poll::Ready(Ok(Woke::Fd));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
                if let Poll::Ready(Some(m)) = self.outbox_rx.poll_recv(cx) {
                    return Poll::Ready(Ok(Woke::Reply(m)));
                }
                if self.safety.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Woke::Timer));
                }
                waited = true;
                Poll::Pending
            })
            .await
            .map_err(|e| Error::io("wait on ZMQ_FD", e))?;
            if waited {
                // The task really waited: the runtime has run the others. A fresh budget.
                self.budget = self.budget_max;
            }
            match woke {
                Woke::Fd => {
                    Counters::bump(&self.counters.inner.fd_wakeups);
                    self.retry_due = true;
                    // From `recv`, whose next step is a DONTWAIT receive: that receive is the
                    // re-check (libzmq handles its commands first), and a cheaper one than
                    // ZMQ_EVENTS followed by the receive. Waiting to send on a ROUTER, or
                    // with replies held for a peer: any wakeup may mean room. Either way
                    // the caller tries, then comes back here.
                    if after_recv_eagain || want.is_empty() || self.held.len > 0 {
                        return Ok(Wake::Ready);
                    }
                }
                Woke::Reply(m) => {
                    if want.contains(zmq::POLLIN) {
                        // Send it now (and whatever else is queued, within the budget), then
                        // re-check.
                        self.spend_on_replies(1);
                        self.send_or_hold(m)?;
                        let used = self.flush_queued(self.budget)?;
                        self.spend_on_replies(used);
                        if self.held.len > 0 || self.budget == 0 {
                            // libzmq took not all of it, or the budget is spent: back to the
                            // caller's loop, which waits for room the right way for this
                            // socket type, or yields to the runtime.
                            return Ok(Wake::Ready);
                        }
                        #[cfg(feature = "broken-variants")]
                        if self.broken == Broken::NoRecheckAfterSend {
                            let _pollout = self.events()?.contains(zmq::POLLOUT);
                            recheck = false;
                        }
                    } else {
                        // A `send` is waiting for POLLOUT: queued replies go after it.
                        return Ok(Wake::Reply(m));
                    }
                }
                Woke::Timer if room_wait => {
                    self.retry_due = true;
                    let at = Instant::now() + self.safety_interval;
                    self.safety.as_mut().reset(at);
                    return Ok(Wake::Ready);
                }
                Woke::Timer => {
                    self.check_missed(want)?;
                    self.safety
                        .as_mut()
                        .reset(Instant::now() + self.safety_interval);
                    if want.is_empty() || self.held.len > 0 {
                        return Ok(Wake::Ready);
                    }
                }
            }
        }
    }

    /// The safety timer fired while asleep: if the descriptor is not readable but libzmq
    /// has what we wait for, the edge was lost. Count it; the caller's re-check recovers.
    fn check_missed(&self, want: zmq::PollEvents) -> Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.get_ref().0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, initialised pollfd on our stack, the count is 1, and
        // a zero timeout makes the call return at once. The descriptor is open (see build).
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc < 0 {
            return Err(Error::io("poll ZMQ_FD", std::io::Error::last_os_error()));
        }
        let fd_readable = rc > 0 && (pfd.revents & libc::POLLIN) != 0;
        if !fd_readable && self.events()?.intersects(want) {
            Counters::bump(&self.counters.inner.missed_wakeups);
        }
        Ok(())
    }

    /// Broken variant only: wait for a descriptor edge, with no `ZMQ_EVENTS` re-check first.
    #[cfg(feature = "broken-variants")]
    async fn wait_fd_only(&mut self) -> Result<()> {
        loop {
            let timer = poll_fn(|cx| {
                if let Poll::Ready(r) = self.fd.poll_read_ready(cx) {
                    let mut guard = r?;
                    guard.clear_ready();
                    return Poll::Ready(Ok::<bool, std::io::Error>(false));
                }
                if self.safety.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(true));
                }
                Poll::Pending
            })
            .await
            .map_err(|e| Error::io("wait on ZMQ_FD", e))?;
            if !timer {
                Counters::bump(&self.counters.inner.fd_wakeups);
                return Ok(());
            }
            self.check_missed(zmq::POLLIN)?;
            self.safety
                .as_mut()
                .reset(Instant::now() + self.safety_interval);
            if self.events()?.contains(zmq::POLLIN) {
                return Ok(());
            }
        }
    }
}

/// `Socket` must stay `Send` (owner tasks are spawned) and `Unpin` (`recv` borrows it across
/// awaits); a field change that breaks either fails to compile here.
const _: fn() = || {
    fn unpin<T: Unpin + Send>() {}
    unpin::<Socket>();
};
