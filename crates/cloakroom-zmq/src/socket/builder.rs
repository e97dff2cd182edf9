//! [`SocketBuilder`]: the options of a socket, and the making of one.

use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[cfg(feature = "broken-variants")]
use super::Broken;
use super::{
    Counters, Held, Socket, SocketKind, ZmqFd, DEFAULT_BUDGET, DEFAULT_HELD_PER_PEER,
    DEFAULT_HELD_TOTAL, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_REPLY_QUEUE, DEFAULT_SAFETY_INTERVAL,
    ROOM_BACKOFF_MIN,
};
use crate::error::{Error, ErrorKind, Result};

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
    ///
    /// [`ReplySender`]: super::ReplySender
    /// [`ReplySender::send`]: super::ReplySender::send
    /// [`ReplySender::send_wait`]: super::ReplySender::send_wait
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
