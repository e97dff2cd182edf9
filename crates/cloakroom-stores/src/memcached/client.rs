//! A small client for memcached's text protocol: the commands this store needs, nothing
//! more. Replies are read with bounded line and value lengths.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// The largest value accepted from the server (memcached's item limit is 1 MiB by
/// default, configurable up to 1 GiB; records are far smaller).
const MAX_VALUE: usize = super::ITEM_LIMIT;
const MAX_LINE: usize = 2048;
/// Keys per `get` command.
const GET_BATCH: usize = 16;

/// A protocol or I/O failure; the connection it happened on is dropped.
#[derive(Debug)]
pub(super) enum McError {
    Io(std::io::Error),
    Protocol(String),
}

impl fmt::Display for McError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "memcached I/O: {e}"),
            Self::Protocol(m) => write!(f, "memcached protocol: {m}"),
        }
    }
}

impl std::error::Error for McError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Protocol(_) => None,
        }
    }
}

impl From<std::io::Error> for McError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// The answer to a storage command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    Stored,
    NotStored,
    Exists,
    NotFound,
    /// `SERVER_ERROR object too large for cache`: the item would pass the item limit.
    TooLarge,
}

/// One item of a `get`/`gets` reply.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) key: String,
    pub(super) flags: u32,
    pub(super) cas: u64,
    pub(super) data: Vec<u8>,
}

/// One connection.
pub(super) struct Conn {
    io: BufStream<TcpStream>,
    line: Vec<u8>,
}

fn protocol(m: impl Into<String>) -> McError {
    McError::Protocol(m.into())
}

impl Conn {
    pub(super) async fn connect(addr: &str, timeout: Duration) -> Result<Self, McError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| protocol("connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Self {
            io: BufStream::new(stream),
            line: Vec::with_capacity(128),
        })
    }

    async fn read_line(&mut self) -> Result<&str, McError> {
        self.line.clear();
        let n = (&mut self.io)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)
            .await?;
        if n == 0 {
            return Err(McError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let line = self
            .line
            .strip_suffix(b"\r\n")
            .ok_or_else(|| protocol("reply line too long or not terminated"))?;
        let line = std::str::from_utf8(line).map_err(|_| protocol("reply line not UTF-8"))?;
        if line.starts_with("ERROR")
            || line.starts_with("CLIENT_ERROR")
            || line.starts_with("SERVER_ERROR")
        {
            return Err(protocol(line.to_owned()));
        }
        Ok(line)
    }

    pub(super) async fn version(&mut self) -> Result<String, McError> {
        self.io.write_all(b"version\r\n").await?;
        self.io.flush().await?;
        let line = self.read_line().await?;
        line.strip_prefix("VERSION ")
            .map(str::to_owned)
            .ok_or_else(|| protocol(format!("unexpected reply to version: {line}")))
    }

    async fn read_items(&mut self, with_cas: bool) -> Result<Vec<Item>, McError> {
        let mut items = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line == "END" {
                return Ok(items);
            }
            let mut parts = line.split(' ');
            let bad = || protocol(format!("unexpected VALUE line: {line}"));
            if parts.next() != Some("VALUE") {
                return Err(bad());
            }
            let key = parts.next().ok_or_else(bad)?.to_owned();
            let flags: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let len: usize = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let cas: u64 = if with_cas {
                parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?
            } else {
                0
            };
            if len > MAX_VALUE {
                return Err(protocol(format!("a value of {len} bytes")));
            }
            let mut data = vec![0u8; len + 2];
            self.io.read_exact(&mut data).await?;
            if !data.ends_with(b"\r\n") {
                return Err(protocol("value not followed by CRLF"));
            }
            data.truncate(len);
            items.push(Item {
                key,
                flags,
                cas,
                data,
            });
        }
    }

    pub(super) async fn gets_one(&mut self, key: &str) -> Result<Option<Item>, McError> {
        self.io
            .write_all(format!("gets {key}\r\n").as_bytes())
            .await?;
        self.io.flush().await?;
        let mut items = self.read_items(true).await?;
        match items.len() {
            0 => Ok(None),
            1 => Ok(items.pop()),
            _ => Err(protocol("several items for one key")),
        }
    }

    /// `get` of many keys, in commands of at most [`GET_BATCH`] keys sent together
    /// (one round trip) so that no command line grows long.
    pub(super) async fn get_many(&mut self, keys: &[String]) -> Result<Vec<Item>, McError> {
        let batches: Vec<&[String]> = keys.chunks(GET_BATCH).collect();
        for batch in &batches {
            let mut cmd = String::from("get");
            for k in *batch {
                cmd.push(' ');
                cmd.push_str(k);
            }
            cmd.push_str("\r\n");
            self.io.write_all(cmd.as_bytes()).await?;
        }
        self.io.flush().await?;
        let mut items = Vec::new();
        for _ in &batches {
            items.extend(self.read_items(false).await?);
        }
        Ok(items)
    }

    /// `set`/`add`/`cas`.
    pub(super) async fn store(
        &mut self,
        verb: &str,
        key: &str,
        flags: u32,
        exptime: u32,
        data: &[u8],
        cas: Option<u64>,
    ) -> Result<Reply, McError> {
        let head = match cas {
            Some(cas) => format!("{verb} {key} {flags} {exptime} {} {cas}\r\n", data.len()),
            None => format!("{verb} {key} {flags} {exptime} {}\r\n", data.len()),
        };
        self.io.write_all(head.as_bytes()).await?;
        self.io.write_all(data).await?;
        self.io.write_all(b"\r\n").await?;
        self.io.flush().await?;
        match self.read_line().await? {
            "STORED" => Ok(Reply::Stored),
            "NOT_STORED" => Ok(Reply::NotStored),
            "EXISTS" => Ok(Reply::Exists),
            "NOT_FOUND" => Ok(Reply::NotFound),
            l if l.starts_with("SERVER_ERROR object too large") => Ok(Reply::TooLarge),
            other => Err(protocol(format!("unexpected reply to {verb}: {other}"))),
        }
    }

    pub(super) async fn delete(&mut self, key: &str) -> Result<bool, McError> {
        self.io
            .write_all(format!("delete {key}\r\n").as_bytes())
            .await?;
        self.io.flush().await?;
        match self.read_line().await? {
            "DELETED" => Ok(true),
            "NOT_FOUND" => Ok(false),
            other => Err(protocol(format!("unexpected reply to delete: {other}"))),
        }
    }

    /// `incr key 1`: the new value, or `None` when the key is missing.
    pub(super) async fn incr(&mut self, key: &str) -> Result<Option<u64>, McError> {
        self.io
            .write_all(format!("incr {key} 1\r\n").as_bytes())
            .await?;
        self.io.flush().await?;
        let line = self.read_line().await?;
        if line == "NOT_FOUND" {
            return Ok(None);
        }
        line.parse()
            .map(Some)
            .map_err(|_| protocol(format!("unexpected reply to incr: {line}")))
    }
}
