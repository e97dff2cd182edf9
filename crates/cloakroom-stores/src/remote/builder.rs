//! [`RemoteStoreBuilder`]: how to reach the daemon.

use super::*;

/// How to reach the daemon: made by [`RemoteStore::builder`], finished by
/// [`RemoteStoreBuilder::build`] (no round trip) or [`RemoteStoreBuilder::connect`] (checks
/// the daemon answers `PING` first).
pub struct RemoteStoreBuilder {
    pub(super) endpoint: String,
    pub(super) timeout: Duration,
    pub(super) curve: Option<(CurveKeyPair, [u8; 32])>,
    pub(super) max_reply: usize,
    pub(super) max_request: usize,
}

impl fmt::Debug for RemoteStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            endpoint,
            timeout,
            curve,
            max_reply,
            max_request,
        } = self;
        f.debug_struct("RemoteStoreBuilder")
            .field("endpoint", endpoint)
            .field("timeout", timeout)
            .field("curve", &curve.as_ref().map(|(keys, _)| keys))
            .field("max_reply", max_reply)
            .field("max_request", max_request)
            .finish()
    }
}

impl RemoteStoreBuilder {
    /// How long a call waits for its reply before it fails with `Unavailable` (default 2 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Authenticate and encrypt with CURVE: this client's key pair (whose public key the
    /// daemon allow-lists) and the daemon's public key. Required by a daemon on a
    /// non-loopback address.
    #[must_use]
    pub fn with_curve(mut self, client: CurveKeyPair, server_public: [u8; 32]) -> Self {
        self.curve = Some((client, server_public));
        self
    }

    /// The largest reply accepted, in bytes (default 16 MiB). A larger reply makes libzmq
    /// drop the connection (and the call time out).
    #[must_use]
    pub fn with_max_reply_size(mut self, bytes: usize) -> Self {
        self.max_reply = bytes;
        self
    }

    /// The largest request body sent, in bytes (default 1 MiB, the daemon's default body
    /// limit). A larger one is refused with `InvalidInput` before it is sent.
    #[must_use]
    pub fn with_max_request_size(mut self, bytes: usize) -> Self {
        self.max_request = bytes;
        self
    }

    /// Makes the socket, starts connecting and returns at once; the daemon need not be up
    /// yet. Must be called inside a tokio runtime (with I/O and time enabled): the socket's
    /// owner task runs on it, and the store stops working when that runtime shuts down.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an endpoint that is not `ipc://…` or `tcp://…`, or
    /// that libzmq refuses; [`ErrorKind::Unavailable`] outside a tokio runtime, or when
    /// libzmq cannot make the socket or set CURVE up (a libzmq without CURVE).
    pub fn build(self) -> Result<RemoteStore, Error> {
        if !(self.endpoint.starts_with("ipc://") || self.endpoint.starts_with("tcp://")) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "cloakroomd endpoint `{}` is neither ipc://PATH nor tcp://HOST:PORT",
                    self.endpoint
                ),
            ));
        }
        let ctx = zmq::Context::new();
        let socket = SocketBuilder::new(SocketKind::Dealer)
            .max_message_size(self.max_reply)
            .build(&ctx)
            .map_err(|e| Error::unavailable("cannot make the cloakroomd client socket", e))?;
        let raw = socket.get_ref();
        let setup = |what: &'static str, r: Result<(), zmq::Error>| {
            r.map_err(|e| Error::unavailable(format!("cannot set {what} on the client socket"), e))
        };
        setup("ZMQ_IMMEDIATE", raw.set_immediate(true))?;
        setup("ZMQ_RECONNECT_IVL", raw.set_reconnect_ivl(100))?;
        // Over tcp, notice a daemon that vanished without closing the connection.
        setup("ZMQ_HEARTBEAT_IVL", raw.set_heartbeat_ivl(1000))?;
        setup("ZMQ_HEARTBEAT_TIMEOUT", raw.set_heartbeat_timeout(3000))?;
        if let Some((keys, server)) = &self.curve {
            socket
                .curve_client(keys, server)
                .map_err(|e| Error::unavailable("cannot set CURVE up on the client socket", e))?;
        }
        socket.connect(&self.endpoint).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("cannot connect to cloakroomd at `{}`", self.endpoint),
            )
            .with_source(e)
        })?;
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            waiters: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::channel(OUTBOX);
        tokio::spawn(owner(ctx, socket, rx, Arc::clone(&shared)));
        let limits = Limits::default()
            .with_max_body(self.max_reply)
            .with_max_values(self.max_reply)
            // A record inside `SESSIONS_OF` sits two levels deeper than inside `CREATE`.
            .with_max_depth(Limits::DEFAULT_MAX_DEPTH + 4);
        Ok(RemoteStore {
            endpoint: self.endpoint,
            timeout: self.timeout,
            max_request: self.max_request,
            limits,
            outbox: tx,
            shared,
        })
    }

    /// [`build`](Self::build), then a `PING` round trip, so a wrong endpoint or a daemon
    /// that is down is reported now rather than at the first request.
    ///
    /// # Errors
    /// As [`build`](Self::build); [`ErrorKind::Unavailable`] when the daemon does not answer
    /// `PING` within the timeout.
    pub async fn connect(self) -> Result<RemoteStore, Error> {
        let store = self.build()?;
        store.ping().await?;
        Ok(store)
    }
}
