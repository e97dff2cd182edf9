//! The Redis channel: client-side caching with RESP3 invalidation, on a connection that also
//! reads and commits.
//!
//! The cache opens a RESP3 connection of its own and turns on `CLIENT TRACKING ON NOLOOP`
//! (the default mode: the server remembers every key this connection reads). Every load and
//! epoch read the cache makes goes over this connection, so Redis pushes an `invalidate`
//! message naming each of those keys as soon as any other client changes it (or it expires,
//! or is evicted), whoever wrote it; only what this connection read may fill the cache. A
//! record key drops that record, an `…:epoch` key drops that user's epoch, a
//! `FLUSHDB`/`FLUSHALL` (an `invalidate` with no keys) or a key of another shape drops
//! everything.
//!
//! A commit whose record is cached is sent over this connection too: `NOLOOP` keeps Redis
//! from echoing the connection's own writes, so the committed record is written through to
//! the cache (see `CachedStore::apply`). The apply script reads the key again after writing
//! it (a write ends the server's tracking of a key for every client; the read renews it for
//! this one), so the next change by any other client is still pushed. Every other write of
//! this process goes through the store's own connection and comes back as an invalidation
//! like anyone else's.
//!
//! The connection is named `cloakroom-cache:<prefix>` (`CLIENT LIST`), is pinged every
//! [`HEARTBEAT`], and when it closes or a ping goes unanswered the cache is dropped and
//! bypassed (reads and commits go through the store) while a new connection is made (after
//! [`FIRST_RETRY`], doubling up to the heartbeat). The server holds one tracking entry per
//! key read (bounded by its `tracking-table-max-keys`; past that it drops entries and
//! pushes their invalidations, which is safe).

use std::sync::Arc;

use std::sync::Mutex;

use async_trait::async_trait;
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Applied, Changes, IdHash, Record};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{Cache, CachedStore, Channel, Via, FIRST_RETRY, HEARTBEAT};
use crate::RedisStore;

/// The name the tracking connection gives itself (`CLIENT SETNAME`): `cloakroom-cache:`
/// and the store's prefix, with spaces and control characters as `_`.
fn connection_name(prefix: &str) -> String {
    let name: String = prefix
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    format!("cloakroom-cache:{name}")
}

/// Pushed: invalidations are handled in the channel's task; loads, epoch reads and
/// write-through commits go over the tracking connection while it is up.
struct Tracking {
    store: RedisStore,
    /// The tracking connection while it is up (set before the cache goes online, cleared
    /// before it goes offline).
    conn: Mutex<Option<MultiplexedConnection>>,
}

/// Why a round trip on the tracking connection did not answer.
enum Failed {
    /// The server does not have the script loaded: nothing was run.
    NoScript,
    Other(Error),
}

impl Tracking {
    fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, conn: Option<MultiplexedConnection>) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    async fn round_trip(
        &self,
        mut conn: MultiplexedConnection,
        what: &str,
        cmd: Cmd,
        writes: bool,
    ) -> Result<Value, Failed> {
        let applied = if writes {
            ": the write may have been applied"
        } else {
            ""
        };
        let bound = self.store.round_trip_bound();
        match tokio::time::timeout(bound, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                Err(Failed::NoScript)
            }
            // Classified as the store classifies its own replies (a key of ours holding
            // another type is Corrupt, the rest Unavailable).
            Ok(Err(e)) => Err(Failed::Other(crate::redis::map_err(
                format!("Redis (the session cache's connection) failed {what}{applied}"),
                e,
            ))),
            Err(e) => Err(Failed::Other(Error::unavailable(
                format!(
                    "Redis (the session cache's connection) did not answer {what} in time{applied}"
                ),
                e,
            ))),
        }
    }
}

#[async_trait]
impl Channel for Tracking {
    fn reads_itself(&self) -> bool {
        true
    }

    fn writes_through(&self) -> bool {
        true
    }

    async fn load(&self, id: &IdHash, now: u64) -> Via<Result<Option<Record>, Error>> {
        let Some(conn) = self.conn() else {
            return Via::Store;
        };
        match self
            .round_trip(conn, "load", self.store.hgetall(id), false)
            .await
        {
            Ok(reply) => Via::Channel(self.store.decode(id, &reply, now)),
            Err(Failed::Other(e)) => Via::Channel(Err(e)),
            Err(Failed::NoScript) => Via::Store,
        }
    }

    async fn user_epoch(&self, user: &str) -> Via<Result<u64, Error>> {
        let Some(conn) = self.conn() else {
            return Via::Store;
        };
        let cmd = self.store.epoch_command(user);
        match self.round_trip(conn, "user_epoch", cmd, false).await {
            Ok(reply) => Via::Channel(crate::redis::epoch_reply(&reply)),
            Err(Failed::Other(e)) => Via::Channel(Err(e)),
            Err(Failed::NoScript) => Via::Store,
        }
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Via<Result<Applied, Error>> {
        let Some(conn) = self.conn() else {
            return Via::Store;
        };
        let cmd = match self.store.apply_command(id, changes, now, idle_deadline) {
            Ok(cmd) => cmd,
            Err(e) => return Via::Channel(Err(e)),
        };
        match self.round_trip(conn, "apply", cmd, true).await {
            Ok(reply) => match self.store.apply_reply(id, &reply) {
                Ok(Some(applied)) => Via::Channel(Ok(applied)),
                // An older layout (converted by the store's compare-and-swap commit): the
                // script wrote nothing.
                Ok(None) => Via::Store,
                Err(e) => Via::Channel(Err(e)),
            },
            // The store loads the scripts again; nothing was run.
            Err(Failed::NoScript) => Via::Store,
            Err(Failed::Other(e)) => Via::Channel(Err(e)),
        }
    }
}

struct Keys {
    records: Vec<u8>,
    users: Vec<u8>,
    name: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            records: format!("{prefix}{{r:").into_bytes(),
            users: format!("{prefix}{{u:").into_bytes(),
            name: connection_name(prefix),
        }
    }

    /// Drops what the changed `key` names.
    fn invalidate(&self, cache: &Cache, key: &[u8]) {
        if let Some(rest) = key.strip_prefix(self.records.as_slice()) {
            let id = rest
                .strip_suffix(b"}")
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| IdHash::from_hex(hex).ok());
            match id {
                Some(id) => cache.invalidate_record(&id),
                None => cache.invalidate_all(),
            }
        } else if let Some(rest) = key.strip_prefix(self.users.as_slice()) {
            if let Some(user) = rest.strip_suffix(b"}:epoch") {
                match std::str::from_utf8(user) {
                    Ok(user) => cache.invalidate_user(user),
                    Err(_) => cache.invalidate_all(),
                }
            } else if !rest.ends_with(b"}:sessions") {
                // Not a key this store writes: be safe.
                cache.invalidate_all();
            }
            // A user's index changes with every login; the cache keeps no index.
        } else {
            cache.invalidate_all();
        }
    }

    fn push(&self, cache: &Cache, push: PushInfo) -> bool {
        match push.kind {
            PushKind::Invalidate => {
                for value in push.data {
                    match value {
                        Value::Array(keys) | Value::Set(keys) => {
                            for key in keys {
                                match key {
                                    Value::BulkString(key) => self.invalidate(cache, &key),
                                    Value::SimpleString(key) => {
                                        self.invalidate(cache, key.as_bytes());
                                    }
                                    _ => cache.invalidate_all(),
                                }
                            }
                        }
                        // FLUSHDB, FLUSHALL (or a shape we do not know).
                        _ => cache.invalidate_all(),
                    }
                }
                true
            }
            PushKind::Disconnection => false,
            _ => true,
        }
    }
}

async fn connect(
    client: &redis::Client,
    keys: &Keys,
) -> redis::RedisResult<(
    redis::aio::MultiplexedConnection,
    UnboundedReceiver<PushInfo>,
)> {
    let (tx, rx) = unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(HEARTBEAT))
        .set_response_timeout(Some(HEARTBEAT))
        .set_push_sender(tx);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&keys.name)
        .exec_async(&mut conn)
        .await?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("NOLOOP")
        .exec_async(&mut conn)
        .await?;
    Ok((conn, rx))
}

/// Serves one connection until it is lost.
async fn serve(
    cache: &Cache,
    keys: &Keys,
    mut conn: redis::aio::MultiplexedConnection,
    mut rx: UnboundedReceiver<PushInfo>,
) {
    let heartbeat = async {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let ping = redis::cmd("PING");
            match tokio::time::timeout(HEARTBEAT, ping.exec_async(&mut conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return format!("PING failed: {e}"),
                Err(_) => return "PING unanswered".to_owned(),
            }
        }
    };
    tokio::pin!(heartbeat);
    loop {
        tokio::select! {
            biased;
            push = rx.recv() => match push {
                Some(push) => {
                    if !keys.push(cache, push) {
                        tracing::warn!("session cache: the Redis tracking connection closed; bypassing the cache");
                        return;
                    }
                }
                None => return,
            },
            why = &mut heartbeat => {
                tracing::warn!(%why, "session cache: the Redis tracking connection is lost; bypassing the cache");
                return;
            }
        }
    }
}

async fn run(cache: Arc<Cache>, tracking: Arc<Tracking>, client: redis::Client, keys: Keys) {
    let mut delay = FIRST_RETRY;
    loop {
        tokio::time::sleep(delay).await;
        match connect(&client, &keys).await {
            Ok((conn, rx)) => {
                tracking.set(Some(conn.clone()));
                cache.online();
                delay = FIRST_RETRY;
                serve(&cache, &keys, conn, rx).await;
                tracking.set(None);
                cache.offline();
            }
            Err(e) => {
                tracing::debug!(error = %e, "session cache: cannot reach Redis to track keys");
                tracking.set(None);
                cache.offline();
                delay = (delay * 2).min(HEARTBEAT);
            }
        }
    }
}

impl CachedStore<RedisStore> {
    /// A cache of up to `capacity` records (and as many user epochs) in front of `store`,
    /// kept coherent with every writer of its keys by Redis client-side caching on a
    /// connection of its own to `url`, which must name the store's server and database
    /// (RESP3 is turned on here, Redis 6 or newer). The cache's loads, epoch reads and
    /// write-through commits go over that connection (module documentation).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a capacity of 0, a bad URL or a Redis Cluster store
    /// (one connection cannot track a cluster's keys); [`ErrorKind::Unavailable`] if the
    /// tracking connection cannot be made (a server older than Redis 6 refuses RESP3).
    pub async fn redis(store: RedisStore, url: &str, capacity: usize) -> Result<Self, Error> {
        super::check_capacity(capacity)?;
        if store.is_cluster() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "no session cache over Redis Cluster: one tracking connection cannot see \
                 every node's writes; open the store without a cache",
            ));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, "invalid Redis URL").with_source(e))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| Error::new(ErrorKind::InvalidInput, "invalid Redis URL").with_source(e))?;
        let keys = Keys::new(store.prefix());
        // The first connection is made here, so a store that cannot be tracked is an error
        // now rather than a cache that is never used.
        let (conn, rx) = tokio::time::timeout(HEARTBEAT * 2, connect(&client, &keys))
            .await
            .map_err(|e| Error::unavailable("session cache: connecting to Redis timed out", e))?
            .map_err(|e| {
                Error::unavailable("session cache: cannot turn on Redis client tracking", e)
            })?;
        let cache = Arc::new(Cache::new(capacity));
        let tracking = Arc::new(Tracking {
            store: store.clone(),
            conn: Mutex::new(Some(conn.clone())),
        });
        cache.online();
        let task = {
            let cache = Arc::clone(&cache);
            let tracking = Arc::clone(&tracking);
            tokio::spawn(async move {
                serve(&cache, &keys, conn, rx).await;
                tracking.set(None);
                cache.offline();
                run(cache, tracking, client, keys).await;
            })
        };
        Ok(Self::with_channel(store, cache, tracking, Some(task)))
    }
}
