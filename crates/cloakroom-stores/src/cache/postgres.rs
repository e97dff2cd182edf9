//! The PostgreSQL channel: `LISTEN`, fed by triggers on the store's tables.
//!
//! The cache installs (idempotently, under an advisory lock, when it starts and whenever it
//! reconnects) two row triggers in the store's schema: every `UPDATE` or `DELETE` of a
//! session row runs `pg_notify(<channel>, 'r' || hex(id))`, every change of a user's epoch
//! `pg_notify(<channel>, 'u' || user)` (`'*'`, meaning "drop everything", for a `TRUNCATE`
//! or a user id too long for a notification). Triggers fire for every writer, whoever it
//! is (another application process, another machine, the operator CLI, `psql`), and a
//! notification is delivered when its transaction commits. The channel is
//! `cloakroom_<schema>` (cut to PostgreSQL's 63 bytes). The cache listens on a connection
//! of its own (`application_name` `cloakroom-cache:<schema>`), pings it every [`HEARTBEAT`], and
//! when it closes or a ping goes unanswered drops the cache and bypasses it while it
//! reconnects (after [`FIRST_RETRY`], doubling up to the heartbeat).
//!
//! The triggers live with the tables rather than in the store's migrations so that they
//! exist wherever a cache runs, whatever version of the store created the schema; creating
//! them is a no-op when they are there.

use std::sync::Arc;

use cloakroom::store::{Error, ErrorKind};
use cloakroom::IdHash;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{Cache, CachedStore, Channel, FIRST_RETRY, HEARTBEAT};
use crate::PostgresStore;

/// Pushed: the work happens in the channel's task.
struct Listening;

impl Channel for Listening {}

fn channel_name(schema: &str) -> String {
    let mut name = format!("cloakroom_{schema}");
    // Schema names are ASCII ([a-z0-9_]), so any cut is on a character boundary.
    name.truncate(63);
    name
}

fn triggers(schema: &str, channel: &str) -> String {
    let s = schema;
    format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('{s}.cloakroom_cache'));
         CREATE OR REPLACE FUNCTION {s}.cloakroom_cache_session() RETURNS trigger
         LANGUAGE plpgsql AS $$
         BEGIN
           IF TG_OP = 'TRUNCATE' THEN
             PERFORM pg_notify('{channel}', '*');
           ELSE
             PERFORM pg_notify('{channel}', 'r' || encode(OLD.id, 'hex'));
           END IF;
           RETURN NULL;
         END $$;
         CREATE OR REPLACE FUNCTION {s}.cloakroom_cache_epoch() RETURNS trigger
         LANGUAGE plpgsql AS $$
         DECLARE u text;
         BEGIN
           IF TG_OP = 'TRUNCATE' THEN
             PERFORM pg_notify('{channel}', '*');
             RETURN NULL;
           END IF;
           u := CASE TG_OP WHEN 'DELETE' THEN OLD.user_id ELSE NEW.user_id END;
           IF octet_length(u) > 7000 THEN
             PERFORM pg_notify('{channel}', '*');
           ELSE
             PERFORM pg_notify('{channel}', 'u' || u);
           END IF;
           RETURN NULL;
         END $$;
         CREATE OR REPLACE TRIGGER cloakroom_cache AFTER UPDATE OR DELETE ON {s}.sessions
           FOR EACH ROW EXECUTE FUNCTION {s}.cloakroom_cache_session();
         CREATE OR REPLACE TRIGGER cloakroom_cache_truncate AFTER TRUNCATE ON {s}.sessions
           FOR EACH STATEMENT EXECUTE FUNCTION {s}.cloakroom_cache_session();
         CREATE OR REPLACE TRIGGER cloakroom_cache
           AFTER INSERT OR UPDATE OR DELETE ON {s}.user_epochs
           FOR EACH ROW EXECUTE FUNCTION {s}.cloakroom_cache_epoch();
         CREATE OR REPLACE TRIGGER cloakroom_cache_truncate AFTER TRUNCATE ON {s}.user_epochs
           FOR EACH STATEMENT EXECUTE FUNCTION {s}.cloakroom_cache_epoch();
         COMMIT;"
    )
}

fn notified(cache: &Cache, payload: &str) {
    if let Some(hex) = payload.strip_prefix('r') {
        match IdHash::from_hex(hex) {
            Ok(id) => cache.invalidate_record(&id),
            Err(_) => cache.invalidate_all(),
        }
    } else if let Some(user) = payload.strip_prefix('u') {
        cache.invalidate_user(user);
    } else {
        cache.invalidate_all();
    }
}

struct Setup {
    config: tokio_postgres::Config,
    schema: String,
    channel: String,
}

/// Connects, installs the triggers, listens. Returns the client and the task that drives
/// the connection (and handles notifications); the task ends when the connection does.
async fn connect(
    setup: &Setup,
    cache: &Arc<Cache>,
) -> Result<(Client, tokio::task::JoinHandle<String>), tokio_postgres::Error> {
    let (client, mut connection) = setup.config.connect(NoTls).await?;
    let driver = {
        let cache = Arc::clone(cache);
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => notified(&cache, n.payload()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e.to_string(),
                    None => return "the connection closed".to_owned(),
                }
            }
        })
    };
    let listen = async {
        client
            .batch_execute(&triggers(&setup.schema, &setup.channel))
            .await?;
        client
            .batch_execute(&format!("LISTEN \"{}\"", setup.channel))
            .await
    };
    match listen.await {
        Ok(()) => Ok((client, driver)),
        Err(e) => {
            driver.abort();
            Err(e)
        }
    }
}

/// Watches one connection until it is lost.
async fn serve(client: Client, mut driver: tokio::task::JoinHandle<String>) {
    let heartbeat = async {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            match tokio::time::timeout(HEARTBEAT, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("ping failed: {e}"),
                Err(_) => return "ping unanswered".to_owned(),
            }
        }
    };
    let why = tokio::select! {
        why = &mut driver => why.unwrap_or_else(|e| e.to_string()),
        why = heartbeat => why,
    };
    driver.abort();
    tracing::warn!(%why, "session cache: the PostgreSQL LISTEN connection is lost; bypassing the cache");
}

async fn run(cache: Arc<Cache>, setup: Setup) {
    let mut delay = FIRST_RETRY;
    loop {
        tokio::time::sleep(delay).await;
        match tokio::time::timeout(HEARTBEAT * 2, connect(&setup, &cache)).await {
            Ok(Ok((client, driver))) => {
                cache.online();
                delay = FIRST_RETRY;
                serve(client, driver).await;
                cache.offline();
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "session cache: cannot LISTEN on PostgreSQL");
                cache.offline();
                delay = (delay * 2).min(HEARTBEAT);
            }
            Err(_) => {
                cache.offline();
                delay = (delay * 2).min(HEARTBEAT);
            }
        }
    }
}

impl CachedStore<PostgresStore> {
    /// A cache of up to `capacity` records (and as many user epochs) in front of `store`,
    /// kept coherent with every writer of its tables by `LISTEN`/`NOTIFY` on a connection of
    /// its own to `url` (the store's server and database), fed by triggers it installs in
    /// the store's schema (module documentation of [`CachedStore`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a capacity of 0 or a bad URL;
    /// [`ErrorKind::Unavailable`] if the server cannot be reached or the triggers cannot be
    /// created (the role must own the tables).
    pub async fn postgres(store: PostgresStore, url: &str, capacity: usize) -> Result<Self, Error> {
        super::check_capacity(capacity)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "invalid PostgreSQL URL").with_source(e)
        })?;
        config.connect_timeout(HEARTBEAT);
        config.application_name(format!("cloakroom-cache:{}", store.schema()));
        let setup = Setup {
            config,
            schema: store.schema().to_owned(),
            channel: channel_name(store.schema()),
        };
        let cache = Arc::new(Cache::new(capacity));
        let (client, driver) = tokio::time::timeout(HEARTBEAT * 2, connect(&setup, &cache))
            .await
            .map_err(|e| {
                Error::unavailable("session cache: connecting to PostgreSQL timed out", e)
            })?
            .map_err(|e| {
                Error::unavailable("session cache: cannot LISTEN for PostgreSQL changes", e)
            })?;
        cache.online();
        let task = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                serve(client, driver).await;
                cache.offline();
                run(cache, setup).await;
            })
        };
        Ok(Self::with_channel(
            store,
            cache,
            Arc::new(Listening),
            Some(task),
        ))
    }
}
