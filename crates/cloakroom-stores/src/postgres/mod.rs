//! The PostgreSQL store (feature `postgres`): one table of records, CAS as a conditional
//! `UPDATE`, a pool of connections.
//!
//! # Schema
//!
//! The store creates and migrates its schema itself (default `cloakroom`; one schema per
//! application, or per test), recording the applied migrations in `schema_version`:
//!
//! ```sql
//! CREATE TABLE cloakroom.sessions (
//!     id                bytea  PRIMARY KEY,   -- SHA-256 of the session id
//!     user_id           text,                 -- indexed (partial: logged-in sessions)
//!     version           bigint NOT NULL,
//!     last_seen         bigint NOT NULL,      -- touch writes these three columns alone
//!     idle_deadline     bigint NOT NULL,
//!     absolute_deadline bigint NOT NULL,
//!     expires_at        bigint NOT NULL,      -- the earlier deadline; indexed, for purge
//!     record            bytea  NOT NULL       -- Record::encode
//! );
//! CREATE TABLE cloakroom.user_epochs (user_id text PRIMARY KEY, epoch bigint NOT NULL);
//! ```
//!
//! Migrations run in one transaction under an advisory lock, so many nodes starting at once
//! migrate once.
//!
//! # Guarantees
//!
//! - [`Store::update`] is `UPDATE … WHERE id = $1 AND version = $2 AND expires_at > $now`,
//!   one statement that also says, from the same snapshot, whether a miss was a conflict or
//!   a dead record: one round trip.
//! - [`Store::apply`] (a request's commit) is one transaction: `SELECT … FOR UPDATE` of the
//!   live row, the changed keys merged into the record here, `UPDATE`, `COMMIT`. The row
//!   lock orders overlapping commits of one session: the second waits for the first and then
//!   merges onto what it wrote, so none fails and there is no retry loop. Commits of one
//!   session in one process take turns before they take a pooled connection, so a burst of
//!   them holds one connection, not the pool. A deleted or
//!   expired row is not selected, so it is never written back. (The record is MessagePack,
//!   which SQL cannot merge; that costs four round trips instead of one.)
//! - [`Store::load`] is one `SELECT` by primary key: one round trip (statements are prepared
//!   once per connection).
//! - [`Store::purge_expired`] deletes at most `limit` rows per statement
//!   (`FOR UPDATE SKIP LOCKED`), so it never holds locks for more than one batch.
//! - Durability is PostgreSQL's: a write that returned `Ok` was committed.
//!
//! # TLS
//!
//! Connections use TLS (rustls, verifying the server's certificate and name) when the URL
//! says `sslmode=require`, when a CA file is named (`ca=PATH` in the URL or
//! [`PostgresStoreBuilder::with_ca_file`]), or when any host is not this machine; without a
//! CA file the system's trusted CAs are used. To a host that is not this machine TLS is
//! required (no plaintext fallback): `sslmode=disable` there, or a server without TLS, is
//! refused unless `allow_plaintext_to_remote_host` is set (URL option or
//! [`PostgresStoreBuilder::allow_plaintext_to_remote_host`]). To a loopback host or a Unix
//! socket, without `sslmode=require` or a CA file, connections are plaintext, as before.
//!
//! # Connections
//!
//! A [`deadpool_postgres`] pool (default 16 connections). Connecting, waiting for a pooled
//! connection and each statement are bounded by the connect and command timeouts (1 s each
//! by default); when the server is away every operation answers [`ErrorKind::Unavailable`],
//! and broken connections are replaced once it is back.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Applied, Changes, IdHash, Record, Store};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::transport;

mod builder;

pub use builder::PostgresStoreBuilder;

const DEFAULT_SCHEMA: &str = "cloakroom";

/// The migrations, in order; `schema_version` holds how many were applied. `{s}` is the
/// schema.
const MIGRATIONS: &[&str] = &[
    // 1: sessions and epochs.
    "CREATE TABLE {s}.sessions (
        id bytea PRIMARY KEY,
        user_id text,
        version bigint NOT NULL,
        last_seen bigint NOT NULL,
        idle_deadline bigint NOT NULL,
        absolute_deadline bigint NOT NULL,
        expires_at bigint NOT NULL,
        record bytea NOT NULL
    );
    CREATE INDEX sessions_user_id ON {s}.sessions (user_id) WHERE user_id IS NOT NULL;
    CREATE INDEX sessions_expires_at ON {s}.sessions (expires_at);
    CREATE TABLE {s}.user_epochs (user_id text PRIMARY KEY, epoch bigint NOT NULL);",
];

struct Sql {
    load: String,
    create: String,
    update: String,
    apply_read: String,
    apply_write: String,
    touch: String,
    delete: String,
    sessions_of: String,
    revoke: String,
    epoch: String,
    bump: String,
    purge: String,
}

/// Sessions in PostgreSQL. Cheap to clone: clones share one pool.
///
/// ```no_run
/// # async fn example() -> Result<(), cloakroom::Error> {
/// use cloakroom_stores::PostgresStore;
///
/// let store = PostgresStore::builder("postgres://app@127.0.0.1:5432/app")
///     .with_schema("sessions")
///     .with_pool_size(8)
///     .connect()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Commits of one session in this process take turns (see `stripes`).
    stripes: std::sync::Arc<crate::stripes::Stripes>,
    schema: String,
    bound: Duration,
    sql: std::sync::Arc<Sql>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            pool,
            stripes: _,
            schema,
            bound,
            sql: _,
        } = self;
        f.debug_struct("PostgresStore")
            .field("schema", schema)
            .field("pool_size", &pool.status().max_size)
            .field("round_trip_bound", bound)
            .finish_non_exhaustive()
    }
}

fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| Error::unavailable(what, e)
}

/// The verbs that only read: a timeout of any other may have left its write committed.
const READS: &[&str] = &[
    "load",
    "sessions_of",
    "user_epoch",
    "find_by_prefix",
    "stats",
];

/// No answer within the round-trip bound. A write may still have been committed (the
/// server may have run the commit whose answer never came), and the error says so.
fn timed_out(what: &str, e: tokio::time::error::Elapsed) -> Error {
    let message = if READS.contains(&what) {
        format!("PostgreSQL did not answer {what} in time")
    } else {
        format!(
            "PostgreSQL did not answer {what} in time: the write may or may not have been \
             committed"
        )
    };
    Error::unavailable(message, e)
}

/// Whether `e` says a prepared statement no longer fits the table.
fn stale_statement(e: &Error) -> bool {
    use tokio_postgres::error::SqlState;
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| {
            *c == SqlState::FEATURE_NOT_SUPPORTED || *c == SqlState::INVALID_SQL_STATEMENT_NAME
        })
}

/// A column whose type is not the one this store created (an operator's `ALTER`): the
/// table is not usable, so every operation on it fails closed, never panics.
fn column_type(e: tokio_postgres::Error) -> Error {
    Error::unavailable(
        "a PostgreSQL column does not have the type this store expects",
        e,
    )
}

fn i64_of(what: &str, v: u64) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{what} {v} does not fit PostgreSQL's bigint"),
        )
    })
}

fn u64_of(v: i64) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::new(ErrorKind::Corrupt, "a negative stored number"))
}

impl PostgresStore {
    /// A builder for a store on `url` (`postgres://user:password@host:port/database`).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: crate::options::DEFAULT_POOL_SIZE,
            net: crate::options::NetOptions::default(),
        }
    }

    /// A store on `url` with the default schema, pool size and timeouts.
    ///
    /// # Errors
    /// As [`PostgresStoreBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// The schema this store's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Runs `f` with a pooled connection, the whole bounded by the connect plus command
    /// timeout.
    async fn with<T, F>(&self, what: &'static str, f: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, Error> + Clone,
    {
        let work = async {
            let client = self.pool.get().await.map_err(|e| {
                Error::unavailable(format!("no PostgreSQL connection for {what}"), e)
            })?;
            match f.clone()(&client).await {
                // The table changed under a statement prepared before (a migration by a newer
                // node, an operator's ALTER): prepare again, once.
                Err(e) if stale_statement(&e) => {
                    client.statement_cache.clear();
                    f(&client).await
                }
                other => other,
            }
        };
        tokio::time::timeout(self.bound, work)
            .await
            .map_err(|e| timed_out(what, e))?
    }

    /// Runs the statement `sql` (prepared once per connection) and returns its rows.
    async fn rows(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.with(what, async |c| {
            let st = c.prepare_cached(sql).await.map_err(db(what))?;
            c.query(&st, params).await.map_err(db(what))
        })
        .await
    }

    /// Runs the statement `sql` (prepared once per connection) and returns how many rows it
    /// changed.
    async fn exec(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.with(what, async |c| {
            let st = c.prepare_cached(sql).await.map_err(db(what))?;
            c.execute(&st, params).await.map_err(db(what))
        })
        .await
    }

    /// The one row `sql` returns (an error if it returns none).
    async fn row(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.rows(what, sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("PostgreSQL returned no row for {what}"),
                )
            })
    }

    async fn migrate(&self) -> Result<(), Error> {
        let s = self.schema.clone();
        let mut client = tokio::time::timeout(self.bound, self.pool.get())
            .await
            .map_err(|e| Error::unavailable("PostgreSQL did not answer in time", e))?
            .map_err(|e| Error::unavailable("cannot connect to PostgreSQL", e))?;
        let work = async {
            let tx = client.transaction().await.map_err(db("migration"))?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('cloakroom schema ' || $1))",
                &[&s],
            )
            .await
            .map_err(db("migration lock"))?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL);"
            ))
            .await
            .map_err(db("creating the schema"))?;
            let row = tx
                .query_one(
                    &format!("SELECT coalesce(max(version), 0) FROM {s}.schema_version"),
                    &[],
                )
                .await
                .map_err(db("reading the schema version"))?;
            let applied: i32 = row.try_get(0).map_err(column_type)?;
            let applied = usize::try_from(applied).unwrap_or(0);
            if applied > MIGRATIONS.len() {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the PostgreSQL schema {s} is at version {applied}, newer than this \
                         store knows ({})",
                        MIGRATIONS.len()
                    ),
                ));
            }
            for (n, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
                tx.batch_execute(&migration.replace("{s}", &s))
                    .await
                    .map_err(db("migrating the schema"))?;
                let version = i32::try_from(n + 1).unwrap_or(i32::MAX);
                tx.execute(
                    &format!("INSERT INTO {s}.schema_version (version) VALUES ($1)"),
                    &[&version],
                )
                .await
                .map_err(db("recording the schema version"))?;
            }
            tx.commit().await.map_err(db("migration commit"))
        };
        tokio::time::timeout(self.bound * 10, work)
            .await
            .map_err(|e| Error::unavailable("the PostgreSQL migration timed out", e))?
    }

    /// [`Store::apply`] on one connection: lock the live row, merge, write, commit.
    async fn apply_on(
        &self,
        client: &mut deadpool_postgres::Client,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let key = id.as_bytes().as_slice();
        let now_i = i64_of("now", now)?;
        // Dropped without `commit` (an error, a timeout): rolled back.
        let tx = client.transaction().await.map_err(db("apply"))?;
        let read = tx
            .prepare_cached(&self.sql.apply_read)
            .await
            .map_err(db("apply"))?;
        let Some(row) = tx
            .query_opt(&read, &[&key, &now_i])
            .await
            .map_err(db("apply"))?
        else {
            return Err(Error::not_found());
        };
        let current = Self::decode(&row)?;
        if current.id_hash != *id {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "a PostgreSQL row holds another session's record",
            ));
        }
        if !current.is_live(now) {
            return Err(Error::not_found());
        }
        let next = cloakroom::apply_changes(current, changes, now, idle_deadline)?;
        let bytes = next.encode()?;
        let version = i64_of("version", next.version)?;
        let last_seen = i64_of("last_seen", next.last_seen)?;
        let idle = i64_of("idle deadline", next.idle_deadline)?;
        let expires = i64_of("expiry", next.expires_at())?;
        let write = tx
            .prepare_cached(&self.sql.apply_write)
            .await
            .map_err(db("apply"))?;
        let params: [&(dyn ToSql + Sync); 6] =
            [&key, &version, &last_seen, &idle, &expires, &bytes];
        tx.execute(&write, &params).await.map_err(db("apply"))?;
        tx.commit().await.map_err(db("apply"))?;
        Ok(Applied::new(next.version, next.idle_deadline))
    }

    fn decode(row: &Row) -> Result<Record, Error> {
        let bytes: Vec<u8> = row.try_get(0).map_err(column_type)?;
        let last_seen: i64 = row.try_get(1).map_err(column_type)?;
        let idle: i64 = row.try_get(2).map_err(column_type)?;
        let mut record = Record::decode(&bytes)?;
        // `touch` writes these columns alone, without rewriting the record.
        record.last_seen = u64_of(last_seen)?;
        record.idle_deadline = u64_of(idle)?;
        Ok(record)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create(&self, record: &Record, _now: u64) -> Result<(), Error> {
        let bytes = record.encode()?;
        let id = record.id_hash.as_bytes().as_slice();
        let version = i64_of("version", record.version)?;
        let last_seen = i64_of("last_seen", record.last_seen)?;
        let idle = i64_of("idle deadline", record.idle_deadline)?;
        let absolute = i64_of("absolute deadline", record.absolute_deadline)?;
        let expires = i64_of("expiry", record.expires_at())?;
        let user = record.user_id.as_deref();
        let params: [&(dyn ToSql + Sync); 8] = [
            &id, &user, &version, &last_seen, &idle, &absolute, &expires, &bytes,
        ];
        let n = self.exec("create", &self.sql.create, &params).await?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::conflict())
        }
    }

    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        let now = i64_of("now", now)?;
        let key = id.as_bytes().as_slice();
        let rows = self.rows("load", &self.sql.load, &[&key, &now]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let record = Self::decode(row)?;
        if record.id_hash != *id {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "a PostgreSQL row holds another session's record",
            ));
        }
        Ok(Some(record))
    }

    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        let next = record.version.saturating_add(1);
        let mut stored = record.clone();
        stored.version = next;
        let bytes = stored.encode()?;
        let id = record.id_hash.as_bytes().as_slice();
        let expected = i64_of("version", record.version)?;
        let next_i = i64_of("version", next)?;
        let last_seen = i64_of("last_seen", record.last_seen)?;
        let idle = i64_of("idle deadline", record.idle_deadline)?;
        let absolute = i64_of("absolute deadline", record.absolute_deadline)?;
        let expires = i64_of("expiry", record.expires_at())?;
        let now = i64_of("now", now)?;
        let user = record.user_id.as_deref();
        let params: [&(dyn ToSql + Sync); 10] = [
            &id, &expected, &user, &next_i, &last_seen, &idle, &absolute, &expires, &bytes, &now,
        ];
        let row = self.row("update", &self.sql.update, &params).await?;
        let updated: i64 = row.try_get(0).map_err(column_type)?;
        let live: Option<bool> = row.try_get(1).map_err(column_type)?;
        match (updated, live) {
            (1, _) => Ok(next),
            (_, Some(true)) => Err(Error::conflict()),
            _ => Err(Error::not_found()),
        }
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let work = async {
            let mut client = self
                .pool
                .get()
                .await
                .map_err(|e| Error::unavailable("no PostgreSQL connection for apply", e))?;
            match self
                .apply_on(&mut client, id, changes, now, idle_deadline)
                .await
            {
                // As in `with`: a statement prepared before a schema change, prepared again.
                Err(e) if stale_statement(&e) => {
                    client.statement_cache.clear();
                    self.apply_on(&mut client, id, changes, now, idle_deadline)
                        .await
                }
                other => other,
            }
        };
        // Commits of this session in this process wait for their turn here, holding no
        // connection; each turn is bounded, the wait for it is not.
        let _turn = self.stripes.turn(id).await;
        // A timeout drops the transaction unfinished: tokio-postgres then rolls it back.
        tokio::time::timeout(self.bound, work)
            .await
            .map_err(|e| timed_out("apply", e))?
    }

    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        let key = id.as_bytes().as_slice();
        let now = i64_of("now", now)?;
        let idle = i64_of("idle deadline", idle_deadline)?;
        let n = self
            .exec("touch", &self.sql.touch, &[&key, &now, &idle])
            .await?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::not_found())
        }
    }

    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        let key = id.as_bytes().as_slice();
        let n = self.exec("delete", &self.sql.delete, &[&key]).await?;
        Ok(n > 0)
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        let now = i64_of("now", now)?;
        let rows = self
            .rows("sessions_of", &self.sql.sessions_of, &[&user, &now])
            .await?;
        rows.iter().map(Self::decode).collect()
    }

    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        let except = except.map(|id| id.as_bytes().as_slice());
        self.exec("revoke_user_sessions", &self.sql.revoke, &[&user, &except])
            .await
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        let rows = self.rows("user_epoch", &self.sql.epoch, &[&user]).await?;
        match rows.first() {
            None => Ok(0),
            Some(row) => u64_of(row.try_get(0).map_err(column_type)?),
        }
    }

    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let row = self
            .row("bump_user_epoch", &self.sql.bump, &[&user])
            .await?;
        u64_of(row.try_get(0).map_err(column_type)?)
    }

    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        let now = i64_of("now", now)?;
        let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
        let n = self
            .exec("purge_expired", &self.sql.purge, &[&now, &limit_i])
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.admin_find_by_prefix(prefix, now).await
    }

    async fn stats(&self, now: u64) -> Result<cloakroom::Stats, Error> {
        self.admin_stats(now).await
    }

    fn store_name(&self) -> &'static str {
        "postgres"
    }
}

// Operator queries (find by id prefix, stats).
mod admin;
