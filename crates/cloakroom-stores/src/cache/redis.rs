//! The Redis channel: client-side caching with RESP3 invalidation.
//!
//! The cache opens a RESP3 connection of its own and turns on `CLIENT TRACKING ON BCAST`
//! for the store's record keys (`<prefix>{r:`) and user keys (`<prefix>{u:`): from then on
//! Redis pushes an `invalidate` message naming every such key any client changes (or lets
//! expire, or evicts), whoever wrote it. A record key drops that record, an `…:epoch` key
//! drops that user's epoch, a `FLUSHDB`/`FLUSHALL` (an `invalidate` with no keys) drops
//! everything. The connection is named `cloakroom-cache:<prefix>` (`CLIENT LIST`), is pinged every
//! [`HEARTBEAT`], and when it closes or a ping goes unanswered the cache is dropped and
//! bypassed while a new connection is made (after [`FIRST_RETRY`], doubling up to the
//! heartbeat).

use std::sync::Arc;

use cloakroom::store::{Error, ErrorKind};
use cloakroom::IdHash;
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{Cache, CachedStore, Channel, FIRST_RETRY, HEARTBEAT};
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

/// Pushed: the work happens in the channel's task.
struct Tracking;

impl Channel for Tracking {}

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
        .arg("BCAST")
        .arg("PREFIX")
        .arg(&keys.records)
        .arg("PREFIX")
        .arg(&keys.users)
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

async fn run(cache: Arc<Cache>, client: redis::Client, keys: Keys) {
    let mut delay = FIRST_RETRY;
    loop {
        tokio::time::sleep(delay).await;
        match connect(&client, &keys).await {
            Ok((conn, rx)) => {
                cache.online();
                delay = FIRST_RETRY;
                serve(&cache, &keys, conn, rx).await;
                cache.offline();
            }
            Err(e) => {
                tracing::debug!(error = %e, "session cache: cannot reach Redis to track keys");
                cache.offline();
                delay = (delay * 2).min(HEARTBEAT);
            }
        }
    }
}

impl CachedStore<RedisStore> {
    /// A cache of up to `capacity` records (and as many user epochs) in front of `store`,
    /// kept coherent with every writer of its keys by Redis client-side caching on a
    /// connection of its own to `url` (the store's server; RESP3 is turned on here, Redis 6 or
    /// newer).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a capacity of 0 or a bad URL;
    /// [`ErrorKind::Unavailable`] if the tracking connection cannot be made (a server older
    /// than Redis 6 refuses RESP3).
    pub async fn redis(store: RedisStore, url: &str, capacity: usize) -> Result<Self, Error> {
        super::check_capacity(capacity)?;
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
        cache.online();
        let task = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                serve(&cache, &keys, conn, rx).await;
                cache.offline();
                run(cache, client, keys).await;
            })
        };
        Ok(Self::with_channel(
            store,
            cache,
            Arc::new(Tracking),
            Some(task),
        ))
    }
}
