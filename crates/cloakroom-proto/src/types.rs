//! The values that travel in bodies: ids, records, changes, sessions, cookies.

use std::collections::BTreeMap;
use std::fmt;

use rmpv::Value;

/// The 8-byte request id a client picks and the daemon echoes. Opaque to the daemon; a
/// client usually counts up, so ids are unique among its requests in flight.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub [u8; 8]);

impl RequestId {
    /// The id whose 8 bytes are `n` big-endian.
    pub const fn from_u64(n: u64) -> Self {
        Self(n.to_be_bytes())
    }

    /// The 8 bytes read as a big-endian number.
    pub const fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({:016x})", self.to_u64())
    }
}

/// SHA-256 of a session id: how stores, the daemon and the feed name a session. Not a
/// secret (it opens nothing), but `Debug` still shows only its first 4 bytes, the prefix
/// logs use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdHash(pub [u8; 32]);

impl IdHash {
    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for IdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, ..] = self.0;
        write!(f, "IdHash({a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

/// A bearer secret in a body: a cookie value or a CSRF token. `Debug` prints its length
/// only; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a cookie value or token.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, to put in a `Set-Cookie` header or a form.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// The application's data in a session: keys to MessagePack values.
pub type Data = BTreeMap<String, Value>;

/// Device metadata of a session, as the application gave it (mirrors `cloakroom::Device`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Device {
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// A label ("Work laptop").
    pub label: Option<String>,
    /// The client address as the application determined it.
    pub ip: Option<String>,
}

impl Device {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Sets the label.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the client address.
    #[must_use]
    pub fn with_ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = Some(ip.into());
        self
    }
}

/// One session record on the wire: the fields of `cloakroom::Record`, owned by the protocol
/// so the wire format changes only with the protocol version. Times are unix seconds.
///
/// `Debug` shows the data's keys, never its values (the CSRF secret lives there).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// SHA-256 of the session id.
    pub id_hash: IdHash,
    /// The logged-in user, if any.
    pub user_id: Option<String>,
    /// The user's epoch at login.
    pub user_epoch: u64,
    /// Creation time.
    pub created: u64,
    /// Last write or touch.
    pub last_seen: u64,
    /// Dies at this time unless touched.
    pub idle_deadline: u64,
    /// Dies at this time whatever happens.
    pub absolute_deadline: u64,
    /// Compare-and-swap version, 1 for a new record.
    pub version: u64,
    /// The application's data.
    pub data: Data,
    /// Device metadata.
    pub device: Device,
}

impl Record {
    /// A record with this id hash, every number 0, no user, no data, no device metadata;
    /// set the fields after.
    pub fn new(id_hash: IdHash) -> Self {
        Self {
            id_hash,
            user_id: None,
            user_epoch: 0,
            created: 0,
            last_seen: 0,
            idle_deadline: 0,
            absolute_deadline: 0,
            version: 0,
            data: Data::new(),
            device: Device::default(),
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id_hash,
            user_id,
            user_epoch,
            created,
            last_seen,
            idle_deadline,
            absolute_deadline,
            version,
            data,
            device,
        } = self;
        f.debug_struct("Record")
            .field("id_hash", id_hash)
            .field("user_id", user_id)
            .field("user_epoch", user_epoch)
            .field("created", created)
            .field("last_seen", last_seen)
            .field("idle_deadline", idle_deadline)
            .field("absolute_deadline", absolute_deadline)
            .field("version", version)
            .field("data_keys", &data.keys().collect::<Vec<_>>())
            .field("device", device)
            .finish()
    }
}

/// One per-key change to a session's data, applied by the store atomically with the
/// others of its request. `Debug` shows the key, never the value.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// Set `key` to the value.
    Set(String, Value),
    /// Remove `key`.
    Remove(String),
}

impl Change {
    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Self::Set(key, _) | Self::Remove(key) => key,
        }
    }
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Set(key, _) => write!(f, "Set({key:?}, ..)"),
            Self::Remove(key) => write!(f, "Remove({key:?})"),
        }
    }
}

/// A flash message: shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flash {
    /// `debug`, `info`, `success`, `warning` or `error`.
    pub level: String,
    /// The text (escape it when rendering: it may echo user input).
    pub message: String,
}

impl Flash {
    /// A flash message.
    pub fn new(level: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level: level.into(),
            message: message.into(),
        }
    }
}

/// What `OPEN` answers: the session behind a cookie, with policy and expiry applied.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct OpenedSession {
    /// The session's id hash (for "your sessions" pages and the revocation feed).
    pub id_hash: IdHash,
    /// The logged-in user, if any.
    pub user_id: Option<String>,
    /// The application's data.
    pub data: Data,
    /// Pending flash messages (taken, that is removed, when the request asked to).
    pub flashes: Vec<Flash>,
    /// A freshly masked CSRF token for the page being rendered.
    pub csrf: Secret,
    /// When the session dies if nothing touches it (unix seconds).
    pub expires_at: u64,
    /// A new cookie value to send when the key ring rotated (or the session was slid), else
    /// `None`: keep the cookie as it is.
    pub cookie: Option<Secret>,
}

impl OpenedSession {
    /// A session with no user, data or flashes.
    pub fn new(id_hash: IdHash, csrf: Secret, expires_at: u64) -> Self {
        Self {
            id_hash,
            user_id: None,
            data: Data::new(),
            flashes: Vec::new(),
            csrf,
            expires_at,
            cookie: None,
        }
    }
}

impl fmt::Debug for OpenedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id_hash,
            user_id,
            data,
            flashes,
            csrf,
            expires_at,
            cookie,
        } = self;
        f.debug_struct("OpenedSession")
            .field("id_hash", id_hash)
            .field("user_id", user_id)
            .field("data_keys", &data.keys().collect::<Vec<_>>())
            .field("flashes", &flashes.len())
            .field("csrf", csrf)
            .field("expires_at", expires_at)
            .field("cookie", cookie)
            .finish()
    }
}

/// What `ISSUE` and `LOGIN` answer: a new session's cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedCookie {
    /// The cookie value to send.
    pub cookie: Secret,
    /// The new session's id hash.
    pub id_hash: IdHash,
    /// When the session dies if nothing touches it (unix seconds).
    pub expires_at: u64,
}

impl IssuedCookie {
    /// An issued cookie.
    pub fn new(cookie: Secret, id_hash: IdHash, expires_at: u64) -> Self {
        Self {
            cookie,
            id_hash,
            expires_at,
        }
    }
}

/// Bounds a decoder enforces before it allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest body frame in bytes (default 1 MiB). Larger is `TOO_LARGE`.
    pub max_body: usize,
    /// Deepest nesting in a body, counting the body map as level 1 (default 32).
    pub max_depth: usize,
    /// Most MessagePack values in one body, counting every key and element (default
    /// 65,536), which bounds the memory a 1 MiB body can expand into.
    pub max_values: usize,
}

impl Limits {
    /// The default body limit: 1 MiB.
    pub const DEFAULT_MAX_BODY: usize = 1 << 20;
    /// The default nesting limit.
    pub const DEFAULT_MAX_DEPTH: usize = 32;
    /// The default value-count limit.
    pub const DEFAULT_MAX_VALUES: usize = 1 << 16;

    /// Sets the body limit.
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the nesting limit.
    #[must_use]
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Sets the value-count limit.
    #[must_use]
    pub fn with_max_values(mut self, values: usize) -> Self {
        self.max_values = values;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: Self::DEFAULT_MAX_BODY,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_values: Self::DEFAULT_MAX_VALUES,
        }
    }
}
