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

use std::collections::VecDeque;
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
    fn bump(cell: &AtomicU64) {
        cell.fetch_add(1, Ordering::Relaxed);
    }
}

/// A handle worker tasks use to hand messages (typically replies) to the task that owns a
/// [`Socket`]. Cheap to clone; the owner sends them while it waits in [`Socket::recv`] or
/// [`Socket::flush`].
#[derive(Clone)]
pub struct ReplySender {
    tx: mpsc::UnboundedSender<Multipart>,
    waiting: Arc<AtomicU64>,
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
    /// [`ErrorKind::Closed`] when the socket has been dropped.
    pub fn send(&self, msg: Multipart) -> Result<()> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.tx.send(msg).map_err(|_| {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            Error::new(ErrorKind::Closed, "reply queue")
        })
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
            max_message_size: None,
            linger: 0,
            hwm: None,
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

    /// Refuse messages larger than `bytes`: libzmq drops a peer that sends one
    /// (`ZMQ_MAXMSGSIZE`), and [`Socket::send`] refuses to send one.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
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
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Socket {
            fd,
            sock,
            is_router: self.kind == zmq::ROUTER,
            room_backoff: ROOM_BACKOFF_MIN,
            budget: self.budget,
            budget_max: self.budget,
            outbox_tx: tx,
            outbox_rx: rx,
            outbox_waiting: Arc::new(AtomicU64::new(0)),
            pending: VecDeque::new(),
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
    outbox_tx: mpsc::UnboundedSender<Multipart>,
    outbox_rx: mpsc::UnboundedReceiver<Multipart>,
    outbox_waiting: Arc<AtomicU64>,
    /// Replies taken from the queue that libzmq has not accepted yet (`EAGAIN`).
    pending: VecDeque<Multipart>,
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
            .field("pending", &self.pending.len())
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

    /// The counters of this socket (a handle that other tasks can keep).
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// A handle for worker tasks to queue messages that this socket's owner sends.
    pub fn reply_sender(&self) -> ReplySender {
        ReplySender {
            tx: self.outbox_tx.clone(),
            waiting: self.outbox_waiting.clone(),
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
            if !self.pending.is_empty() || self.outbox_waiting.load(Ordering::Relaxed) > 0 {
                self.flush_queued()?;
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
                    self.budget -= 1;
                    return Ok(m);
                }
                None => {
                    // EAGAIN: only now may we sleep. A fresh drain starts with a full budget.
                    self.budget = self.budget_max;
                    // With a reply still waiting for libzmq, wake for room to send too.
                    let want = if self.pending.is_empty() || self.is_router {
                        zmq::POLLIN
                    } else {
                        zmq::POLLIN | zmq::POLLOUT
                    };
                    match self.sleep(want, true).await? {
                        Wake::Ready => {}
                        Wake::Reply(m) => self.pending.push_back(m),
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
                        self.pending.push_back(m);
                    }
                }
            }
        }
    }

    /// Sends what worker tasks queued, without waiting. Returns how many messages are still
    /// waiting for libzmq to take them.
    ///
    /// # Errors
    /// libzmq's fatal errors (a closed context); a reply that cannot be sent is dropped
    /// and counted instead.
    pub fn flush(&mut self) -> Result<usize> {
        self.flush_queued()?;
        Ok(self.pending.len())
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

    /// Moves replies from the queue into libzmq until it would block.
    fn flush_queued(&mut self) -> Result<()> {
        loop {
            let msg = match self.pending.pop_front() {
                Some(m) => m,
                None => match self.outbox_rx.try_recv() {
                    Ok(m) => {
                        self.outbox_waiting.fetch_sub(1, Ordering::Relaxed);
                        m
                    }
                    Err(_) => return Ok(()),
                },
            };
            if self.check_size(&msg).is_err() {
                Counters::bump(&self.counters.inner.dropped_replies);
                continue;
            }
            match self.try_send(msg) {
                Ok(None) => {
                    Counters::bump(&self.counters.inner.sent);
                    self.room_backoff = ROOM_BACKOFF_MIN;
                }
                Ok(Some(back)) => {
                    self.pending.push_front(back);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Closed => return Err(e),
                Err(_) => Counters::bump(&self.counters.inner.dropped_replies),
            }
        }
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
        let room_wait = want.is_empty() || (self.is_router && !self.pending.is_empty());
        if room_wait {
            let at = Instant::now() + self.room_backoff;
            self.safety.as_mut().reset(at);
            self.room_backoff = (self.room_backoff * 2).min(ROOM_BACKOFF_MAX);
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
                    self.outbox_waiting.fetch_sub(1, Ordering::Relaxed);
                    return Poll::Ready(Ok(Woke::Reply(m)));
                }
                if self.safety.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Woke::Timer));
                }
                Poll::Pending
            })
            .await
            .map_err(|e| Error::io("wait on ZMQ_FD", e))?;
            match woke {
                Woke::Fd => {
                    Counters::bump(&self.counters.inner.fd_wakeups);
                    // From `recv`, whose next step is a DONTWAIT receive: that receive is the
                    // re-check (libzmq handles its commands first), and a cheaper one than
                    // ZMQ_EVENTS followed by the receive. Waiting to send on a ROUTER, or
                    // with a reply stuck in `pending`: any wakeup may mean room. Either way
                    // the caller tries, then comes back here.
                    if after_recv_eagain || want.is_empty() || !self.pending.is_empty() {
                        return Ok(Wake::Ready);
                    }
                }
                Woke::Reply(m) => {
                    if want.contains(zmq::POLLIN) {
                        // Send it now (and whatever else is queued), then re-check.
                        self.pending.push_back(m);
                        self.flush_queued()?;
                        if !self.pending.is_empty() {
                            // libzmq took not all of it: back to the caller's loop, which
                            // waits for room the right way for this socket type.
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
                    let at = Instant::now() + self.safety_interval;
                    self.safety.as_mut().reset(at);
                    return Ok(Wake::Ready);
                }
                Woke::Timer => {
                    self.check_missed(want)?;
                    self.safety
                        .as_mut()
                        .reset(Instant::now() + self.safety_interval);
                    if want.is_empty() || !self.pending.is_empty() {
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
