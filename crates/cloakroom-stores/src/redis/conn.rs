//! The connection: to one Redis server or to a Redis Cluster, and what a URL names.

use super::*;

/// The connection: to one server, or to a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster {
        link: std::sync::Arc<ClusterLink>,
        /// After each part that writes: `WAIT replica_acks wait_ms` (0: no `WAIT`).
        replica_acks: u32,
        wait_ms: u64,
    },
}

/// The cluster connections, made anew (in the background, at most once at a time) when
/// round trips fail: the cluster client learns a failover's new primary from `MOVED`
/// replies and its own slot refreshes, and a fresh connection asks the named nodes again,
/// so the store recovers even when the old connection keeps waiting on a dead node.
///
/// Reads have a connection of their own. A write is followed by `WAIT`, which holds its
/// node's connection until a replica confirms or the wait ends; when a primary has lost its
/// replica (a failover has just promoted it), every write in its slots waits the whole
/// replica wait, one after the other, and a read sent on the same connection would queue
/// behind them until it timed out, although the primary holds the record and could answer
/// at once.
pub(super) struct ClusterLink {
    pub(super) client: redis::cluster::ClusterClient,
    pub(super) writer: std::sync::Mutex<ClusterConnection>,
    pub(super) reader: std::sync::Mutex<ClusterConnection>,
    pub(super) renewing: std::sync::atomic::AtomicBool,
    pub(super) connect_timeout: Duration,
}

impl ClusterLink {
    /// Connects the writer and the reader.
    pub(super) async fn connect(
        client: redis::cluster::ClusterClient,
        connect_timeout: Duration,
    ) -> redis::RedisResult<Self> {
        let (writer, reader) =
            tokio::try_join!(client.get_async_connection(), client.get_async_connection())?;
        Ok(Self {
            client,
            writer: std::sync::Mutex::new(writer),
            reader: std::sync::Mutex::new(reader),
            renewing: std::sync::atomic::AtomicBool::new(false),
            connect_timeout,
        })
    }

    /// The connection for a pipeline: the reader if it only reads.
    pub(super) fn current(&self, reads_only: bool) -> ClusterConnection {
        let slot = if reads_only {
            &self.reader
        } else {
            &self.writer
        };
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts making new connections, unless they are being made.
    pub(super) fn renew(self: &std::sync::Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.renewing.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let made = |slot: &std::sync::Mutex<ClusterConnection>, conn| {
                if let Ok(Ok(conn)) = conn {
                    *slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
                }
            };
            let bound = link.connect_timeout * 2;
            let (writer, reader) = tokio::join!(
                tokio::time::timeout(bound, link.client.get_async_connection()),
                tokio::time::timeout(bound, link.client.get_async_connection())
            );
            made(&link.writer, writer);
            made(&link.reader, reader);
            // At most five renewals a second.
            tokio::time::sleep(Duration::from_millis(200)).await;
            link.renewing.store(false, Ordering::Release);
        });
    }
}

/// Why a round trip failed.
pub(super) enum QueryError {
    Redis(redis::RedisError),
    /// A write was applied on a primary, but fewer replicas than required confirmed it in
    /// time: it may be lost if that primary fails now.
    NotReplicated {
        acked: i64,
        wanted: u32,
    },
}

impl From<redis::RedisError> for QueryError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// Whether a command of this store only reads.
pub(super) fn reads_only(cmd: &Cmd) -> bool {
    let Some(Arg::Simple(name)) = cmd.args_iter().next() else {
        return false;
    };
    [
        b"HGETALL".as_slice(),
        b"HGET",
        b"GET",
        b"ZRANGE",
        b"ZRANGEBYSCORE",
        b"ZSCAN",
        b"MEMORY",
    ]
    .iter()
    .any(|r| name.eq_ignore_ascii_case(r))
}

/// `message`, saying that the write may have been applied when `pipe` writes: a request
/// whose answer was lost may have reached the server all the same.
fn may_have_been_applied(message: String, pipe: &Pipeline) -> String {
    if pipe.cmd_iter().all(reads_only) {
        message
    } else {
        format!("{message}: the write may have been applied")
    }
}

/// Sends one part (commands in one slot) to a cluster, with `WAIT` after it when it writes.
pub(super) async fn send_part(
    conn: &mut ClusterConnection,
    mut part: Pipeline,
    replica_acks: u32,
    wait_ms: u64,
) -> Result<Vec<Value>, QueryError> {
    let writes = part.cmd_iter().any(|c| !reads_only(c));
    if replica_acks == 0 || !writes || part.is_transaction() {
        return Ok(part.query_async(conn).await?);
    }
    // `WAIT` names no key: it goes with the part's commands, to the same primary.
    part.cmd("WAIT").arg(replica_acks).arg(wait_ms);
    let mut replies: Vec<Value> = part.query_async(conn).await?;
    let acked = match replies.pop() {
        Some(Value::Int(n)) => n,
        _ => -1,
    };
    if acked < i64::from(replica_acks) {
        return Err(QueryError::NotReplicated {
            acked,
            wanted: replica_acks,
        });
    }
    Ok(replies)
}

/// The slot of a command's key (`EVALSHA sha numkeys key`, or `CMD key ...`), `None` for a
/// command without a key.
pub(super) fn slot_of(cmd: &Cmd) -> Option<Slot> {
    let mut args = cmd.args_iter().map(|a| match a {
        Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()??;
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let key = if is(b"EVALSHA") || is(b"EVAL") {
        args.nth(2)??
    } else if is(b"MEMORY") || is(b"OBJECT") {
        // A subcommand first: `MEMORY USAGE key`, `OBJECT ENCODING key`.
        args.nth(1)??
    } else {
        args.next()??
    };
    Some(Slot::for_key(key))
}

impl Conn {
    /// Sends `pipe` and returns the replies of its commands, in order. In a cluster, a
    /// pipeline whose commands live in several slots goes as one pipeline per run of
    /// consecutive same-slot commands, one after the other (in order); a transaction must
    /// be in one slot. (No pipeline sent here marks a command `ignore`d, so the replies of
    /// the parts line up with the commands.)
    pub(super) async fn query(&self, pipe: &Pipeline) -> Result<Vec<Value>, QueryError> {
        match self {
            Self::Single(conn) => Ok(pipe.query_async(&mut conn.clone()).await?),
            Self::Cluster {
                link,
                replica_acks,
                wait_ms,
            } => {
                let (acks, wait_ms) = (*replica_acks, *wait_ms);
                let mut conn = link.current(pipe.cmd_iter().all(reads_only));
                let slots: Vec<Option<Slot>> = pipe.cmd_iter().map(slot_of).collect();
                let mut distinct = slots.iter().flatten();
                let first = distinct.next();
                if pipe.is_transaction() || distinct.all(|s| Some(s) == first) {
                    return send_part(&mut conn, pipe.clone(), acks, wait_ms).await;
                }
                let mut out = Vec::with_capacity(slots.len());
                let mut part = redis::pipe();
                let mut part_slot = None;
                for (cmd, slot) in pipe.cmd_iter().zip(&slots) {
                    if part_slot.is_some() && slot.is_some() && *slot != part_slot {
                        let done = std::mem::replace(&mut part, redis::pipe());
                        out.extend(send_part(&mut conn, done, acks, wait_ms).await?);
                    }
                    if slot.is_some() {
                        part_slot = *slot;
                    }
                    part.add_command(cmd.clone());
                }
                if !part.is_empty() {
                    out.extend(send_part(&mut conn, part, acks, wait_ms).await?);
                }
                Ok(out)
            }
        }
    }
}

/// A Redis URL taken apart: the nodes (each a URL the `redis` crate reads), TLS or not,
/// cluster or not, and the store's own options.
pub(super) struct Target {
    pub(super) nodes: Vec<String>,
    pub(super) tls: bool,
    pub(super) cluster: bool,
    pub(super) options: transport::UrlOptions,
}

impl Target {
    pub(super) fn parse(url: &str, cluster: bool) -> Result<Self, Error> {
        let invalid = |m: &str| Error::new(ErrorKind::InvalidInput, m.to_owned());
        let (url, options) = transport::take_options(url)?;
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid(
                "a Redis URL starts with redis://, rediss:// or redis+cluster://",
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        let (base, cluster) = match scheme.strip_suffix("+cluster") {
            Some(base) => (base.to_owned(), true),
            None => (scheme.clone(), cluster),
        };
        let tls = base == "rediss";
        if !cluster {
            return Ok(Self {
                nodes: vec![format!("{scheme}://{rest}")],
                tls,
                cluster,
                options,
            });
        }
        if base != "redis" && base != "rediss" {
            return Err(invalid(
                "a Redis Cluster URL is redis+cluster://HOST:PORT,... or rediss+cluster://...",
            ));
        }
        // HOST:PORT,HOST:PORT[/0][?query]; user and password, if any, before the first node.
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (tail, String::new()),
        };
        if !matches!(path, "" | "/" | "/0") {
            return Err(invalid(
                "Redis Cluster has database 0 only: a cluster URL has no /DB",
            ));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{base}://{userinfo}{h}{query}"))
            .collect();
        if nodes.is_empty() {
            return Err(invalid("a Redis Cluster URL names no node"));
        }
        Ok(Self {
            nodes,
            tls,
            cluster,
            options,
        })
    }
}

/// Refuses a plaintext node that is not this machine, unless allowed.
pub(super) fn check_plaintext(node: &str, allow: bool) -> Result<(), Error> {
    let info = node
        .into_connection_info()
        .map_err(|e| Error::new(ErrorKind::InvalidInput, "invalid Redis URL").with_source(e))?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, _) if !allow && !transport::is_loopback(host) => Err(
            transport::plaintext_refused("Redis", host, "use a rediss:// URL"),
        ),
        _ => Ok(()),
    }
}

impl RedisStore {
    pub(super) async fn load_scripts(&self) -> Result<(), Error> {
        match &self.conn {
            Conn::Single(_) => {
                let mut pipe = redis::pipe();
                for s in self.scripts.all() {
                    pipe.cmd("SCRIPT").arg("LOAD").arg(&s.source);
                }
                let _: Vec<Value> = self.bounded("SCRIPT LOAD", pipe).await?;
            }
            Conn::Cluster { link, .. } => {
                // Every primary: a script is called on the node of its key's slot.
                let mut conn = link.current(false);
                let load = async {
                    for s in self.scripts.all() {
                        let mut cmd = redis::cmd("SCRIPT");
                        cmd.arg("LOAD").arg(&s.source);
                        let routing = RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::AllSucceeded),
                        ));
                        conn.route_command(cmd, routing)
                            .await
                            .map_err(|e| map_err("SCRIPT LOAD", e))?;
                    }
                    Ok::<(), Error>(())
                };
                tokio::time::timeout(self.bound * 2, load)
                    .await
                    .map_err(|e| {
                        Error::unavailable("Redis did not answer SCRIPT LOAD in time", e)
                    })??;
            }
        }
        Ok(())
    }

    /// One round trip, bounded in time, with NOSCRIPT answered by loading the scripts and
    /// sending the pipeline again (every pipeline here is safe to repeat).
    pub(super) async fn bounded(
        &self,
        what: &'static str,
        pipe: Pipeline,
    ) -> Result<Vec<Value>, Error> {
        for attempt in 0..2 {
            let result = tokio::time::timeout(self.bound, self.conn.query(&pipe)).await;
            if let Conn::Cluster { link, .. } = &self.conn {
                if matches!(result, Err(_) | Ok(Err(QueryError::Redis(_)))) {
                    link.renew();
                }
            }
            let result = result.map_err(|e| {
                let message = format!("Redis did not answer {what} in time");
                Error::unavailable(may_have_been_applied(message, &pipe), e)
            })?;
            match result {
                Ok(values) => return Ok(values),
                Err(QueryError::Redis(e))
                    if attempt == 0
                        && e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    // The server restarted, its script cache was flushed, or (in a cluster)
                    // a replica without them was promoted.
                    tracing::debug!("Redis lost the scripts; loading them again");
                    Box::pin(self.load_scripts()).await?;
                }
                // The request may have reached the server before the answer was lost.
                Err(QueryError::Redis(e))
                    if e.is_timeout() || e.is_connection_dropped() || e.is_io_error() =>
                {
                    let message = format!("Redis did not answer {what}");
                    return Err(Error::unavailable(may_have_been_applied(message, &pipe), e));
                }
                Err(QueryError::Redis(e)) => return Err(map_err(what, e)),
                Err(QueryError::NotReplicated { acked, wanted }) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "{what}: the write may have been applied on the Redis primary, but \
                             {} of {wanted} replicas confirmed it in time, so a failover \
                             could lose it (see RedisStoreBuilder::with_replica_acks and with_replica_wait)",
                            acked.max(0)
                        ),
                    ))
                }
            }
        }
        Err(unexpected(what))
    }

    pub(super) async fn one(&self, what: &'static str, cmd: Cmd) -> Result<Value, Error> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        self.bounded(what, pipe)
            .await?
            .pop()
            .ok_or_else(|| unexpected(what))
    }
}
