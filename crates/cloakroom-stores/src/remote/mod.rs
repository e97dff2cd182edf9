//! The remote store: a client of the session daemon `cloakroomd`, speaking the store verbs of
//! CRP1 (docs/protocol.md) over one ZeroMQ DEALER socket.
//!
//! # How a call travels
//!
//! Every [`Store`] call takes the next request id (a counter), registers a one-shot waiter
//! under it, and hands the encoded frames to the socket's owner task. That task (one per
//! store, on the tokio runtime the store was built on) sends requests without waiting and
//! receives replies in a loop, handing each reply to the waiter whose request id it echoes;
//! so any number of requests are in flight at once, and replies may come in any order. A
//! reply nobody waits for (its caller gave up) is dropped.
//!
//! - **Timeouts.** A call that gets no reply within the timeout
//!   ([`RemoteStoreBuilder::with_timeout`], default 2 s) fails with
//!   [`ErrorKind::Unavailable`]: the daemon may be down, restarting, or may have dropped the
//!   message. Its waiter is removed, so a late reply is ignored.
//! - **No late writes.** The socket sets `ZMQ_IMMEDIATE`: a request is handed only to a
//!   connected daemon, never queued for one that is not there. Requests that find no
//!   connection wait in the owner task and are retried (every 1 ms, backing off to 32 ms)
//!   until their caller's timeout; one whose caller has given up is never sent. So a write
//!   reported `Unavailable` because nobody was connected cannot happen later behind the
//!   caller's back. (A request the daemon received before it died may still have been
//!   done: `Unavailable` after a timeout means "unknown", as with any network store.)
//! - **Reconnection** is libzmq's: when the daemon restarts, the DEALER connects again by
//!   itself (every 100 ms while it is away), and the same store carries on.
//!
//! # Statuses and error kinds
//!
//! | reply | [`ErrorKind`] |
//! |---|---|
//! | `OK` | the answer (`LOAD`'s `NOT_FOUND` is `Ok(None)`) |
//! | `NOT_FOUND` | `NotFound` (`UPDATE`, `APPLY`, `TOUCH`) |
//! | `CONFLICT` | `Conflict` (`CREATE` of a live id, `UPDATE` of an old version) |
//! | `CORRUPT` | `Corrupt`: the daemon's store holds a record it cannot decode |
//! | `UNAVAILABLE` | `Unavailable`: the daemon's own store failed |
//! | `TOO_LARGE` | `TooLarge`: the record exceeds the daemon's limits |
//! | `INTERNAL`, `BAD_REQUEST`, `BAD_VERSION`, `UNKNOWN_VERB`, `INVALID`, `EXPIRED`, an unknown status, a reply that does not decode | `Unavailable` |
//! | no reply within the timeout; the owner task gone | `Unavailable` |
//!
//! Every error carries a [`RemoteError`] as its `source()`, naming the verb, the status and
//! the daemon's message. The statuses that can only mean that this client and the daemon
//! disagree about the protocol (`BAD_REQUEST`, `BAD_VERSION`, `UNKNOWN_VERB`) are
//! `Unavailable` rather than a panic or a silent success: the session layer fails closed
//! (503) and the message in the log says which side to upgrade.
//!
//! The mapping reads statuses only, never the daemon's message text.
//!
//! A request body larger than [`RemoteStoreBuilder::with_max_request_size`] (default 1 MiB,
//! the daemon's default body limit) is refused before it is sent, with
//! [`ErrorKind::TooLarge`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Applied, Changes, IdHash, Record, Store};
use cloakroom_proto::{Limits, Reply, Request, RequestId, Status, Verb};
use cloakroom_zmq::{zmq, CurveKeyPair, Multipart, Socket, SocketBuilder, SocketKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::wire::{changes_to_wire, id_hash_to_wire, record_from_wire, record_to_wire};

mod builder;

pub use builder::RemoteStoreBuilder;

/// Default time a call waits for the daemon's reply.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(2);

/// Default limit on a reply: 16 MiB (a `SESSIONS_OF` of a user with thousands of sessions).
pub const DEFAULT_MAX_REPLY: usize = 16 << 20;

/// Default limit on a request body: 1 MiB, the daemon's default body limit.
pub const DEFAULT_MAX_REQUEST: usize = 1 << 20;

/// Requests queued for the owner task before callers wait for room.
const OUTBOX: usize = 4096;

const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(32);

/// The failure behind a remote store error: what the daemon answered, or why there was no
/// answer. Kept as the [`Error`]'s `source()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    verb: Verb,
    status: Option<Status>,
    message: String,
}

impl RemoteError {
    /// The verb of the request that failed.
    pub fn verb(&self) -> Verb {
        self.verb
    }

    /// The status the daemon answered, or `None` when there was no usable reply (a timeout,
    /// a reply that did not decode, the connection task gone).
    pub fn status(&self) -> Option<Status> {
        self.status
    }

    /// The daemon's one-line message, or this side's description of what went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(
                f,
                "cloakroomd answered {} with {status}: {}",
                self.verb, self.message
            ),
            None => write!(f, "{}: {}", self.verb, self.message),
        }
    }
}

impl std::error::Error for RemoteError {}

/// What the callers and the owner task share: the request id counter and the waiters.
#[derive(Debug)]
struct Shared {
    next_id: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Multipart>>>,
}

impl Shared {
    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Multipart>>> {
        // A panic while holding the lock leaves the map consistent (inserts and removes
        // only), so a poisoned lock is used as it is.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a call's waiter however the call ends (reply, timeout, or a dropped future).
struct Waiting<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.waiters().remove(&self.id);
    }
}

/// One request on its way to the owner task.
struct Outgoing {
    id: u64,
    frames: Vec<Vec<u8>>,
}

/// A [`Store`] kept by the session daemon `cloakroomd`, reached over CRP1 (see the module
/// documentation for timeouts, reconnection and the error kinds).
///
/// ```no_run
/// # async fn demo() -> Result<(), cloakroom::Error> {
/// use std::{sync::Arc, time::Duration};
/// use cloakroom_stores::RemoteStore;
///
/// let store = RemoteStore::builder("ipc:///var/run/cloakroomd/cloakroomd.sock")
///     .with_timeout(Duration::from_millis(500))
///     .connect()
///     .await?;
/// let store: Arc<dyn cloakroom::Store> = Arc::new(store);
/// # let _ = store; Ok(()) }
/// ```
pub struct RemoteStore {
    endpoint: String,
    timeout: Duration,
    max_request: usize,
    limits: Limits,
    outbox: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStore")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl RemoteStore {
    /// A builder for a store kept by the daemon at `endpoint` (`ipc:///path/cloakroomd.sock`
    /// or `tcp://host:port`).
    pub fn builder(endpoint: impl Into<String>) -> RemoteStoreBuilder {
        RemoteStoreBuilder {
            endpoint: endpoint.into(),
            timeout: DEFAULT_REMOTE_TIMEOUT,
            curve: None,
            max_reply: DEFAULT_MAX_REPLY,
            max_request: DEFAULT_MAX_REQUEST,
        }
    }

    /// A store on the daemon at `endpoint` with the default settings, after a `PING`.
    ///
    /// # Errors
    /// As [`RemoteStoreBuilder::connect`].
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, Error> {
        Self::builder(endpoint).connect().await
    }

    /// The endpoint this store connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Requests sent and not yet answered or timed out.
    pub fn in_flight(&self) -> usize {
        self.shared.waiters().len()
    }

    /// Asks the daemon for its version (`PING`).
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when it does not answer in time.
    pub async fn ping(&self) -> Result<String, Error> {
        match self.call(Request::Ping).await? {
            Reply::Pong { version, .. } => Ok(version),
            other => Err(unexpected(Verb::Ping, &other)),
        }
    }

    /// One round trip: the reply, or the error its status maps to.
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        let verb = request.verb();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frames = request.encode(RequestId::from_u64(id));
        let body = frames.last().map_or(0, Vec::len);
        if body > self.max_request {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "{verb} body of {body} bytes exceeds the limit of {} bytes",
                    self.max_request
                ),
            ));
        }
        let (tx, rx) = oneshot::channel();
        self.shared.waiters().insert(id, tx);
        let _waiting = Waiting {
            shared: &self.shared,
            id,
        };
        let gone = || {
            no_reply(verb, "the request could not be sent, or the connection task has stopped (its runtime shut down)")
        };
        let round_trip = async {
            self.outbox
                .send(Outgoing { id, frames })
                .await
                .map_err(|_| gone())?;
            rx.await.map_err(|_| gone())
        };
        let reply = match tokio::time::timeout(self.timeout, round_trip).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(no_reply(
                    verb,
                    &format!(
                        "no reply from cloakroomd at {} within {:?}",
                        self.endpoint, self.timeout
                    ),
                ))
            }
        };
        let slices: Vec<&[u8]> = reply.iter().map(|m| &m[..]).collect();
        match Reply::decode(&slices, verb, &self.limits) {
            Ok((_, Reply::Error { status, message })) => Err(status_error(verb, status, message)),
            Ok((_, reply)) => Ok(reply),
            Err(e) => Err(Error::unavailable(
                format!("cloakroomd sent a broken reply to {verb}"),
                e,
            )),
        }
    }
}

fn no_reply(verb: Verb, message: &str) -> Error {
    let source = RemoteError {
        verb,
        status: None,
        message: message.to_owned(),
    };
    Error::unavailable(format!("cloakroomd did not answer {verb}"), source)
}

fn unexpected(verb: Verb, reply: &Reply) -> Error {
    let source = RemoteError {
        verb,
        status: Some(reply.status()),
        message: "a reply of another verb's shape".into(),
    };
    Error::unavailable(format!("cloakroomd answered {verb} unexpectedly"), source)
}

/// The error an error status maps to (the table in the module documentation).
fn status_error(verb: Verb, status: Status, message: String) -> Error {
    let kind = match status {
        Status::NotFound => ErrorKind::NotFound,
        Status::Conflict => ErrorKind::Conflict,
        Status::TooLarge => ErrorKind::TooLarge,
        Status::Corrupt => ErrorKind::Corrupt,
        Status::Unsupported => ErrorKind::Unsupported,
        _ => ErrorKind::Unavailable,
    };
    let what = match kind {
        ErrorKind::NotFound => "session not found",
        ErrorKind::Conflict => "session changed concurrently or already exists",
        ErrorKind::TooLarge => "request exceeds the daemon's limits",
        ErrorKind::Corrupt => "stored record does not decode",
        ErrorKind::Unsupported => "the daemon's store cannot do this",
        _ => "cloakroomd could not do the request",
    };
    Error::new(kind, format!("{what} ({verb})")).with_source(RemoteError {
        verb,
        status: Some(status),
        message,
    })
}

/// The socket's owner: sends what callers queue, hands replies to their waiters.
async fn owner(
    ctx: zmq::Context,
    mut socket: Socket,
    mut outbox: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) {
    // Requests that met no connected daemon, oldest first, retried until their callers give
    // up (ZMQ_IMMEDIATE: libzmq queues nothing for a peer that is not connected).
    let mut unsent: VecDeque<Outgoing> = VecDeque::new();
    let mut retry_in = RETRY_MIN;
    let mut retry_at = Instant::now();
    loop {
        tokio::select! {
            biased;
            next = outbox.recv() => {
                let Some(first) = next else { break };
                let mut next = Some(first);
                while let Some(out) = next {
                    if unsent.is_empty() {
                        match send_now(&socket, &out.frames) {
                            Ok(true) => {}
                            Ok(false) => {
                                unsent.push_back(out);
                                retry_in = RETRY_MIN;
                                retry_at = Instant::now() + retry_in;
                            }
                            Err(e) => fail(&shared, out.id, &e),
                        }
                    } else {
                        // Keep the order: behind the ones already waiting.
                        unsent.push_back(out);
                    }
                    next = outbox.try_recv().ok();
                }
            }
            () = tokio::time::sleep_until(retry_at), if !unsent.is_empty() => {
                while let Some(out) = unsent.front() {
                    if !shared.waiters().contains_key(&out.id) {
                        // Its caller gave up: never send it.
                        unsent.pop_front();
                        continue;
                    }
                    match send_now(&socket, &out.frames) {
                        Ok(true) => {
                            unsent.pop_front();
                        }
                        Ok(false) => break,
                        Err(e) => {
                            fail(&shared, out.id, &e);
                            unsent.pop_front();
                        }
                    }
                }
                retry_in = if unsent.is_empty() { RETRY_MIN } else { (retry_in * 2).min(RETRY_MAX) };
                retry_at = Instant::now() + retry_in;
            }
            received = socket.recv() => match received {
                Ok(reply) => deliver(&shared, reply),
                Err(e) => {
                    tracing::error!(error = %e, "cloakroomd client socket failed; the remote store stops");
                    break;
                }
            },
        }
    }
    // Callers waiting now see their sender dropped: "the connection task has stopped".
    shared.waiters().clear();
    drop(socket);
    drop(ctx);
}

/// Sends one request without waiting. `Ok(false)`: no connected daemon (or it is at its
/// high-water mark), nothing was sent.
fn send_now(socket: &Socket, frames: &[Vec<u8>]) -> Result<bool, zmq::Error> {
    let s = socket.get_ref();
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.iter().enumerate() {
        let more = if i < last { zmq::SNDMORE } else { 0 };
        match s.send(&frame[..], zmq::DONTWAIT | more) {
            Ok(()) => {}
            // libzmq accepts a multipart message whole or not at all: only the first frame
            // can meet EAGAIN.
            Err(zmq::Error::EAGAIN) if i == 0 => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A send that failed for good: its caller learns at once (its waiter is dropped).
fn fail(shared: &Shared, id: u64, e: &zmq::Error) {
    tracing::warn!(error = %e, "cannot send a request to cloakroomd");
    shared.waiters().remove(&id);
}

/// Hands a reply to the caller waiting for its request id; drops it if nobody is.
fn deliver(shared: &Shared, reply: Multipart) {
    let id = match &reply[..] {
        [a, b, c, d, e] => Reply::peek_id(&[&a[..], &b[..], &c[..], &d[..], &e[..]]),
        _ => None,
    };
    let Some(id) = id else {
        tracing::debug!(
            frames = reply.len(),
            "dropped an unreadable reply from cloakroomd"
        );
        return;
    };
    let waiter = shared.waiters().remove(&id.to_u64());
    if let Some(waiter) = waiter {
        // The caller may have given up this instant; then the reply is dropped.
        let _ = waiter.send(reply);
    }
}

#[async_trait]
impl Store for RemoteStore {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        let request = Request::Create {
            record: record_to_wire(record.clone()),
            now: Some(now),
        };
        match self.call(request).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(Verb::Create, &other)),
        }
    }

    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        let request = Request::Load {
            id_hash: id_hash_to_wire(id),
            now,
        };
        match self.call(request).await {
            Ok(Reply::Record(record)) => Ok(Some(record_from_wire(*record))),
            Ok(other) => Err(unexpected(Verb::Load, &other)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        let request = Request::Update {
            record: record_to_wire(record.clone()),
            now,
        };
        match self.call(request).await? {
            Reply::Version(v) => Ok(v),
            other => Err(unexpected(Verb::Update, &other)),
        }
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let request = Request::Apply {
            id_hash: id_hash_to_wire(id),
            changes: changes_to_wire(changes),
            now,
            idle_deadline,
        };
        match self.call(request).await? {
            Reply::Applied {
                version,
                idle_deadline,
            } => Ok(Applied::new(version, idle_deadline)),
            other => Err(unexpected(Verb::Apply, &other)),
        }
    }

    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        let request = Request::Touch {
            id_hash: id_hash_to_wire(id),
            now,
            idle_deadline,
        };
        match self.call(request).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(Verb::Touch, &other)),
        }
    }

    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        let request = Request::Delete {
            id_hash: id_hash_to_wire(id),
        };
        match self.call(request).await? {
            Reply::Deleted(b) => Ok(b),
            other => Err(unexpected(Verb::Delete, &other)),
        }
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        let request = Request::SessionsOf {
            user_id: user.to_owned(),
            now: Some(now),
        };
        match self.call(request).await? {
            Reply::Sessions(records) => Ok(records.into_iter().map(record_from_wire).collect()),
            other => Err(unexpected(Verb::SessionsOf, &other)),
        }
    }

    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        let request = Request::RevokeUserSessions {
            user_id: user.to_owned(),
            except: except.map(id_hash_to_wire),
        };
        match self.call(request).await? {
            Reply::Revoked(n) => Ok(n),
            other => Err(unexpected(Verb::RevokeUserSessions, &other)),
        }
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        let request = Request::UserEpoch {
            user_id: user.to_owned(),
        };
        match self.call(request).await? {
            Reply::Epoch(n) => Ok(n),
            other => Err(unexpected(Verb::UserEpoch, &other)),
        }
    }

    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let request = Request::BumpUserEpoch {
            user_id: user.to_owned(),
        };
        match self.call(request).await? {
            Reply::Epoch(n) => Ok(n),
            other => Err(unexpected(Verb::BumpUserEpoch, &other)),
        }
    }

    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        let request = Request::PurgeExpired {
            now,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        };
        match self.call(request).await? {
            Reply::Purged(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            other => Err(unexpected(Verb::PurgeExpired, &other)),
        }
    }

    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        // Checked here too, so a bad prefix is `InvalidInput` as from any store.
        cloakroom::check_id_prefix(prefix)?;
        let request = Request::FindPrefix {
            prefix: prefix.to_owned(),
            now: Some(now),
        };
        match self.call(request).await? {
            Reply::Sessions(records) => Ok(records.into_iter().map(record_from_wire).collect()),
            other => Err(unexpected(Verb::FindPrefix, &other)),
        }
    }

    async fn stats(&self, now: u64) -> Result<cloakroom::Stats, Error> {
        match self.call(Request::Stats { now: Some(now) }).await? {
            Reply::Stats {
                live,
                expired_not_purged,
                bytes,
            } => Ok(cloakroom::Stats::new(live, expired_not_purged, bytes)),
            other => Err(unexpected(Verb::Stats, &other)),
        }
    }

    fn store_name(&self) -> &'static str {
        "cloakroomd"
    }
}
