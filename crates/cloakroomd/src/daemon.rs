//! Starting a daemon: checks, key ring, store, sockets, tasks; and the running daemon's
//! handle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cloakroom::{Clock, KeyRing, Store, SystemClock};
use cloakroom_proto::{Limits, Reply, Request, RequestId, Status, Verb};
use cloakroom_zmq::{
    zmq, CurveKeyPair, ReplySender, Socket, SocketBuilder, SocketKind, ZapHandler,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::{CachedStore, Counted};
use crate::config::{read_file, Config, CurveConfig};
use crate::dispatch::{self, Keys, State};
use crate::endpoint::{self, Reach};
use crate::error::{Error, ErrorKind};
use crate::feed;
use crate::metrics::{self, Metrics};

/// The largest frame libzmq takes from a client (`ZMQ_MAXMSGSIZE`): above the protocol's
/// 1 MiB body limit, so a body a little too large is answered `TOO_LARGE` rather than the
/// connection being dropped; past this, libzmq drops the connection.
const MAX_FRAME: usize = 4 << 20;

/// While stopping: how long no request may have arrived before the sockets close.
const QUIET: Duration = Duration::from_millis(100);

/// How long a shutdown waits for requests in flight.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// A running daemon. Dropping it without [`Running::shutdown`] stops it abruptly.
pub struct Running {
    endpoints: Vec<String>,
    events: String,
    metrics_addr: Option<SocketAddr>,
    curve_public: Option<String>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    feed_task: Option<JoinHandle<()>>,
    others: Vec<JoinHandle<()>>,
    state: Option<Arc<StateHandle>>,
    metrics: Arc<Metrics>,
    keys_file: PathBuf,
    cookie_name: String,
    _ctx: zmq::Context,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("endpoints", &self.endpoints)
            .field("events", &self.events)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

/// The shared state, behind a Debug-able wrapper.
struct StateHandle(State);

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in self
            .servers
            .iter()
            .chain(&self.others)
            .chain(&self.feed_task)
        {
            t.abort();
        }
    }
}

impl Running {
    /// The request endpoints as bound (a `tcp://…:*` endpoint with its port).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The revocation feed's endpoint as bound.
    pub fn events_endpoint(&self) -> &str {
        &self.events
    }

    /// The metrics listener's address, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The daemon's CURVE public key (Z85), when CURVE is configured.
    pub fn curve_public_key(&self) -> Option<&str> {
        self.curve_public.as_deref()
    }

    /// The daemon's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads the key ring again (`CLOAKROOM_KEYS` if set, else `<data_dir>/keys.toml`) and
    /// uses it for every request from now on. On error the old ring stays in use.
    ///
    /// # Errors
    /// [`ErrorKind::Keys`] if the ring cannot be read or is invalid.
    pub fn reload_keys(&self) -> Result<(), Error> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let state = &state.0;
        let ring = match KeyRing::from_env() {
            Ok(Some(ring)) => ring,
            Ok(None) => KeyRing::load(&self.keys_file).map_err(keys_error)?,
            Err(e) => return Err(keys_error(e)),
        };
        let keys = Keys::new(
            &ring,
            &self.cookie_name,
            state.store.clone(),
            state.clock.clone(),
        )
        .map_err(|e| {
            Error::new(ErrorKind::Keys, "cannot use the reloaded key ring").with_source(e)
        })?;
        state.replace_keys(keys);
        tracing::info!(
            keys = ring.keys().len(),
            primary = ring.primary().id().as_str(),
            "key ring reloaded"
        );
        Ok(())
    }

    /// Stops gracefully: stops accepting requests (unbinds), answers every request in
    /// flight (for at most 10 s), then closes the sockets.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.servers) {
            let _ = t.await;
        }
        // The feed task ends once every handle to it is gone (the last revocations sent).
        self.state = None;
        if let Some(t) = self.feed_task.take() {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

fn keys_error(e: cloakroom_token::Error) -> Error {
    Error::new(ErrorKind::Keys, "key ring").with_source(e)
}

/// Starts a daemon in the current tokio runtime (multi-threaded, with I/O and time).
///
/// In order: checks every endpoint (a non-loopback tcp endpoint without CURVE and a client
/// allow-list is [`ErrorKind::Insecure`]), creates the data directory, loads or creates the
/// key ring, opens the store, binds the sockets (ipc socket files 0600, or 0660 with
/// `socket_group`), and starts the tasks.
///
/// # Errors
/// [`ErrorKind::Insecure`], [`ErrorKind::Config`], [`ErrorKind::Keys`],
/// [`ErrorKind::Store`], [`ErrorKind::Socket`] or [`ErrorKind::Io`], naming what failed.
pub async fn start(config: Config) -> Result<Running, Error> {
    let binds = config.bind_endpoints();
    let events = config.events_endpoint();
    let mut network = false;
    for ep in binds.iter().chain(std::iter::once(&events)) {
        if endpoint::reach(ep)? == Reach::Network {
            network = true;
            let allowed = config
                .curve
                .as_ref()
                .is_some_and(|c| !c.allowed_clients.is_empty() || c.allowed_clients_file.is_some());
            if !allowed {
                return Err(endpoint::insecure(ep));
            }
        }
    }
    let group = config
        .socket_group
        .as_deref()
        .map(endpoint::group_id)
        .transpose()?;
    make_data_dir(&config.data_dir)?;

    let metrics = Arc::new(Metrics::new());
    let keys_file = config.keys_file();
    let ring = KeyRing::from_env_or_file(&keys_file).map_err(keys_error)?;
    let store: Arc<dyn Store> = match &config.store_instance {
        Some(s) => s.clone(),
        None => {
            let url = config.store_url();
            cloakroom_stores::open(&url).await.map_err(|e| {
                let kind = if e.kind() == cloakroom::store::ErrorKind::InvalidInput {
                    ErrorKind::Config
                } else {
                    ErrorKind::Store
                };
                Error::new(kind, "cannot open the store").with_source(e)
            })?
        }
    };
    let cache = config.effective_cache_size();
    let store: Arc<dyn Store> = if cache > 0 {
        Arc::new(CachedStore::new(store, cache, metrics.clone()))
    } else {
        Arc::new(Counted {
            inner: store,
            metrics: metrics.clone(),
        })
    };
    let clock: Arc<dyn Clock> = config
        .clock
        .clone()
        .unwrap_or_else(|| Arc::new(SystemClock));
    let cookie_name = config.cookie_name().to_owned();
    let keys = Keys::new(&ring, &cookie_name, store.clone(), clock.clone()).map_err(|e| {
        let kind = if e.kind() == cloakroom::ErrorKind::InvalidInput {
            ErrorKind::Config // a bad --cookie-name
        } else {
            ErrorKind::Keys
        };
        Error::new(kind, "cannot use the key ring and cookie name").with_source(e)
    })?;

    let ctx = zmq::Context::new();
    let socket_err = |what: String| {
        move |e: cloakroom_zmq::Error| Error::new(ErrorKind::Socket, what).with_source(e)
    };
    let curve = if network {
        Some(curve_setup(
            &ctx,
            config.curve.as_ref().unwrap_or(&CurveConfig::default()),
        )?)
    } else {
        None
    };

    // The feed first: requests publish on it.
    let mut pub_socket =
        feed::socket(&ctx).map_err(socket_err("cannot make the feed socket".into()))?;
    if endpoint::reach(&events)? == Reach::Network {
        if let Some((keys, zap)) = &curve {
            pub_socket
                .curve_server(keys, zap)
                .map_err(socket_err(format!("cannot set up CURVE on {events}")))?;
        }
    }
    let events_bound = bind(&pub_socket, &events, group)?;
    let (feed, feed_task) = feed::spawn(pub_socket, metrics.clone());

    let state = Arc::new(StateHandle(State {
        store,
        keys: RwLock::new(Arc::new(keys)),
        clock,
        feed,
        metrics: metrics.clone(),
    }));

    let (stop, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    let mut others = Vec::new();
    let mut endpoints = Vec::new();
    for (n, ep) in binds.iter().enumerate() {
        let mut router = SocketBuilder::new(SocketKind::Router)
            .max_message_size(MAX_FRAME)
            .build(&ctx)
            .map_err(socket_err(format!("cannot make a socket for {ep}")))?;
        if endpoint::reach(ep)? == Reach::Network {
            if let Some((keys, zap)) = &curve {
                router
                    .curve_server(keys, zap)
                    .map_err(socket_err(format!("cannot set up CURVE on {ep}")))?;
            }
        }
        if let Some(t) = monitor(&ctx, &router, n, metrics.clone()) {
            others.push(t);
        }
        let bound = bind(&router, ep, group)?;
        tracing::info!(endpoint = %bound, curve = curve.is_some() && endpoint::reach(ep)? == Reach::Network, "serving CRP1");
        endpoints.push(bound.clone());
        servers.push(tokio::spawn(serve(
            router,
            bound,
            state.clone(),
            stop_rx.clone(),
        )));
    }
    tracing::info!(endpoint = %events_bound, "publishing the revocation feed");

    let metrics_addr = match config.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr).await?;
            let local = listener.local_addr().ok();
            others.push(tokio::spawn(metrics::serve(listener, metrics.clone())));
            local
        }
        None => None,
    };

    Ok(Running {
        endpoints,
        events: events_bound,
        metrics_addr,
        curve_public: curve.as_ref().map(|(k, _)| k.public_z85()),
        stop,
        servers,
        feed_task: Some(feed_task),
        others,
        state: Some(state),
        metrics,
        keys_file,
        cookie_name,
        _ctx: ctx,
    })
}

fn make_data_dir(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot create the data directory {}", dir.display()),
            )
            .with_source(e)
        })
}

/// Binds `socket` to `ep`, secures an ipc socket file, and returns the endpoint as bound.
fn bind(socket: &Socket, ep: &str, group: Option<u32>) -> Result<String, Error> {
    let reach = endpoint::reach(ep)?;
    if let Reach::Ipc(path) = &reach {
        // A socket file left by a daemon that was killed: libzmq would bind over it anyway;
        // remove it first so the new file gets our mode, not a stale one.
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            let _ = std::fs::remove_file(path);
        }
    }
    socket
        .bind(ep)
        .map_err(|e| Error::new(ErrorKind::Socket, format!("cannot bind {ep}")).with_source(e))?;
    if let Reach::Ipc(path) = &reach {
        endpoint::secure_socket_file(path, group)?;
    }
    socket.last_endpoint().map_err(|e| {
        Error::new(
            ErrorKind::Socket,
            format!("cannot read the endpoint bound for {ep}"),
        )
        .with_source(e)
    })
}

/// The daemon's CURVE key pair (from `secret_key_file`, created if missing) and a ZAP
/// handler admitting the allowed clients.
fn curve_setup(ctx: &zmq::Context, c: &CurveConfig) -> Result<(CurveKeyPair, ZapHandler), Error> {
    if !cloakroom_zmq::curve_available() {
        return Err(Error::new(
            ErrorKind::Insecure,
            "a non-loopback endpoint needs CURVE, and the linked libzmq has none (install a libzmq built with libsodium, e.g. Debian's libzmq5)",
        ));
    }
    let Some(path) = &c.secret_key_file else {
        return Err(Error::new(
            ErrorKind::Config,
            "[curve] needs secret_key_file (the daemon's CURVE secret key; created on first start)",
        ));
    };
    let keys = if path.exists() {
        let text =
            cloakroom_token::read_private_file(path, "CURVE secret key file").map_err(|e| {
                Error::new(ErrorKind::Keys, "cannot read the CURVE secret key").with_source(e)
            })?;
        let text = std::str::from_utf8(&text).unwrap_or_default().trim();
        let secret: [u8; 32] = zmq::z85_decode(text)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Keys,
                    format!(
                        "{}: not a CURVE secret key (40 Z85 characters)",
                        path.display()
                    ),
                )
            })?;
        CurveKeyPair::from_secret_key(secret)
            .map_err(|e| Error::new(ErrorKind::Keys, "CURVE secret key").with_source(e))?
    } else {
        let keys = CurveKeyPair::generate().map_err(|e| {
            Error::new(ErrorKind::Keys, "cannot generate a CURVE key").with_source(e)
        })?;
        write_private(path, keys.secret_z85().as_bytes())?;
        eprintln!(
            "cloakroomd: generated a CURVE key pair; secret key in {} (mode 0600); clients set ZMQ_CURVE_SERVERKEY to {}",
            path.display(),
            keys.public_z85()
        );
        keys
    };
    let mut allowed = Vec::new();
    let mut add = |text: &str, whence: &str| -> Result<(), Error> {
        let key: [u8; 32] = zmq::z85_decode(text.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{whence}: `{}` is not a CURVE public key (40 Z85 characters)",
                        text.trim()
                    ),
                )
            })?;
        allowed.push(key);
        Ok(())
    };
    for (i, k) in c.allowed_clients.iter().enumerate() {
        add(k, &format!("[curve] allowed_clients[{i}]"))?;
    }
    if let Some(file) = &c.allowed_clients_file {
        let text = read_file(file, "allowed_clients_file")?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if !line.is_empty() {
                add(line, &format!("{} line {}", file.display(), n + 1))?;
            }
        }
    }
    if allowed.is_empty() {
        return Err(Error::new(
            ErrorKind::Insecure,
            "[curve] allows no client: list their public keys in allowed_clients or allowed_clients_file",
        ));
    }
    let zap = ZapHandler::spawn(ctx, allowed).map_err(|e| {
        Error::new(ErrorKind::Socket, "cannot start the ZAP handler").with_source(e)
    })?;
    Ok((keys, zap))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| {
        Error::new(ErrorKind::Io, format!("cannot write {}", path.display())).with_source(e)
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)
}

/// Counts client connections of a ROUTER through a libzmq socket monitor.
fn monitor(
    ctx: &zmq::Context,
    router: &Socket,
    n: usize,
    metrics: Arc<Metrics>,
) -> Option<JoinHandle<()>> {
    static NEXT: AtomicI64 = AtomicI64::new(0);
    let addr = format!(
        "inproc://cloakroomd-monitor-{}-{n}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let events = zmq::SocketEvent::ACCEPTED as i32 | zmq::SocketEvent::DISCONNECTED as i32;
    router.get_ref().monitor(&addr, events).ok()?;
    let mut pair = SocketBuilder::raw(zmq::PAIR).build(ctx).ok()?;
    pair.connect(&addr).ok()?;
    Some(tokio::spawn(async move {
        while let Ok(msg) = pair.recv().await {
            let Some(head) = msg.first() else { continue };
            if head.len() < 2 {
                continue;
            }
            let event = u16::from_le_bytes([head[0], head[1]]);
            if event == zmq::SocketEvent::ACCEPTED as u16 {
                metrics.client_connected(1);
            } else if event == zmq::SocketEvent::DISCONNECTED as u16 {
                metrics.client_connected(-1);
            }
        }
    }))
}

/// Requests in flight on one socket.
#[derive(Default)]
struct InFlight(AtomicI64);

/// Answers `INTERNAL` if a request's task ends without replying (a panic in a store), and
/// counts the request out of flight.
struct Pending {
    routing: Option<zmq::Message>,
    id: RequestId,
    verb: Verb,
    replies: ReplySender,
    in_flight: Arc<InFlight>,
    state: Arc<StateHandle>,
    started: Instant,
}

impl Pending {
    async fn reply(mut self, reply: Reply) {
        let status = reply.status();
        self.state
            .0
            .metrics
            .request(Some(self.verb), status, self.started.elapsed());
        if status != Status::Ok {
            tracing::debug!(verb = %self.verb, %status, "request answered with an error");
        }
        if let Some(routing) = self.routing.take() {
            let msg = frames(routing, reply.encode(self.id));
            if self.replies.send_wait(msg).await.is_err() {
                self.state.0.metrics.reply_refused();
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(routing) = self.routing.take() {
            tracing::error!(verb = %self.verb, "a request's task ended without a reply; answering INTERNAL");
            let reply = Reply::error(Status::Internal, "the daemon failed on this request");
            self.state
                .0
                .metrics
                .request(Some(self.verb), Status::Internal, self.started.elapsed());
            if self
                .replies
                .send(frames(routing, reply.encode(self.id)))
                .is_err()
            {
                self.state.0.metrics.reply_refused();
            }
        }
        self.in_flight.0.fetch_sub(1, Ordering::AcqRel);
        self.state.0.metrics.in_flight(-1);
    }
}

fn frames(routing: zmq::Message, body: Vec<Vec<u8>>) -> Vec<zmq::Message> {
    let mut msg = Vec::with_capacity(body.len() + 1);
    msg.push(routing);
    msg.extend(body.into_iter().map(zmq::Message::from));
    msg
}

/// One ROUTER's loop: receive, decode, hand each request to a task of its own.
async fn serve(
    mut router: Socket,
    endpoint: String,
    state: Arc<StateHandle>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = Limits::default();
    let replies = router.reply_sender();
    let in_flight = Arc::new(InFlight::default());
    let mut stopping: Option<Instant> = None;
    let mut last_message = Instant::now();
    loop {
        if let Some(since) = stopping {
            let waiting = router.flush().unwrap_or(0);
            // Done when nothing is in flight, every reply is out, and the clients' queued
            // requests have been read (each answered UNAVAILABLE): quiet for a moment.
            if (in_flight.0.load(Ordering::Acquire) == 0
                && waiting == 0
                && last_message.elapsed() > QUIET)
                || since.elapsed() > DRAIN_DEADLINE
            {
                break;
            }
        }
        let msg = tokio::select! {
            m = router.recv() => m,
            _ = stop.changed(), if stopping.is_none() => {
                // Stop accepting work: every request from now on is answered UNAVAILABLE.
                // (Not zmq_unbind: it also closes the connections accepted on the endpoint,
                // losing the requests they have queued.) An ipc socket file is removed, so
                // no new client connects.
                if let Ok(Reach::Ipc(path)) = endpoint::reach(&endpoint) {
                    let _ = std::fs::remove_file(path);
                }
                stopping = Some(Instant::now());
                tracing::info!(endpoint = %endpoint, "stopping: answering the requests in flight");
                continue;
            }
            _ = tokio::time::sleep(Duration::from_millis(5)), if stopping.is_some() => continue,
        };
        let mut msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "receive failed");
                if e.kind() == cloakroom_zmq::ErrorKind::Closed {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let started = Instant::now();
        last_message = started;
        if msg.is_empty() {
            state.0.metrics.bad_frame();
            continue;
        }
        let routing = msg.remove(0);
        let parts: Vec<&[u8]> = msg.iter().map(|m| &m[..]).collect();
        let decoded = Request::decode(&parts, &limits);
        let (id, request) = match decoded {
            Ok(ok) => ok,
            Err(e) => {
                match e.reply() {
                    Some((id, reply)) => {
                        let verb = parts.get(3).and_then(|w| Verb::from_bytes(w));
                        state
                            .0
                            .metrics
                            .request(verb, reply.status(), started.elapsed());
                        if replies.send(frames(routing, reply.encode(id))).is_err() {
                            state.0.metrics.reply_refused();
                        }
                    }
                    None => state.0.metrics.bad_frame(),
                }
                continue;
            }
        };
        let verb = request.verb();
        if stopping.is_some() {
            let reply = Reply::error(Status::Unavailable, "the daemon is shutting down");
            state
                .0
                .metrics
                .request(Some(verb), Status::Unavailable, started.elapsed());
            if replies.send(frames(routing, reply.encode(id))).is_err() {
                state.0.metrics.reply_refused();
            }
            continue;
        }
        in_flight.0.fetch_add(1, Ordering::AcqRel);
        state.0.metrics.in_flight(1);
        let pending = Pending {
            routing: Some(routing),
            id,
            verb,
            replies: replies.clone(),
            in_flight: in_flight.clone(),
            state: state.clone(),
            started,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let reply = dispatch::handle(&state.0, request).await;
            pending.reply(reply).await;
        });
    }
    // The last replies may still be in libzmq's pipes: give them time to reach the wire
    // when the socket closes (its linger is 0 while serving).
    let _ = router.get_ref().set_linger(2000);
}
