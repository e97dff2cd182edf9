//! Moving users from a Flask, Pyramid, Django or Rails session cookie to a Cloakroom login
//! (feature `migrate`): [`LegacyMigration`], given to [`Builder::with_legacy_migration`].
//!
//! [`Builder::with_legacy_migration`]: crate::Builder::with_legacy_migration

use std::fmt;
use std::sync::Arc;

use cloakroom::Device;
use cloakroom_interop::{Legacy, LegacySession};
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::error::Error;

type Mapper = Arc<dyn Fn(&LegacySession) -> Option<MigratedLogin> + Send + Sync>;

/// What a legacy session becomes: the Cloakroom user to log in, and any values to copy
/// into the new session. Made by the application's mapping function.
///
/// ```
/// use cloakroom_tower::MigratedLogin;
/// let login = MigratedLogin::new("42").with_value("theme", serde_json::json!("dark"));
/// assert_eq!(login.user_id(), "42");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MigratedLogin {
    user_id: String,
    data: Map<String, Value>,
    device: Option<Device>,
}

impl MigratedLogin {
    /// Logs in `user_id`, copying nothing else.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            data: Map::new(),
            device: None,
        }
    }

    /// Also stores `value` under `key` in the new session (a key not starting with
    /// [`cloakroom::RESERVED_PREFIX`]).
    #[must_use]
    pub fn with_value(mut self, key: impl Into<String>, value: Value) -> Self {
        self.data.insert(key.into(), value);
        self
    }

    /// The device recorded with the new session (default: the request's `User-Agent`,
    /// labelled `migrated from <framework>`).
    #[must_use]
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// The user to log in.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The values copied into the new session.
    pub fn data(&self) -> &Map<String, Value> {
        &self.data
    }
}

/// Accepts another framework's session cookie once and answers with a Cloakroom login.
///
/// Given to [`Builder::with_legacy_migration`](crate::Builder::with_legacy_migration). On
/// each request whose Cloakroom session has no user (no Cloakroom cookie, a dead one, or a
/// live anonymous session) and that carries the legacy cookie, the layer opens the legacy
/// cookie with [`Legacy::open`] at the layer's clock, and on success calls the mapping
/// function. If that gives a [`MigratedLogin`], the request's session is logged in before
/// the handler runs (a new id, a new CSRF secret, the values copied), so the handler
/// already sees the user and the response sets the Cloakroom cookie.
///
/// Whenever the request carries the legacy cookie, the response also expires it
/// (`Set-Cookie: <name>=; Path=/; Max-Age=0`), whether it opened or not (a tampered or
/// expired cookie gives an anonymous session, never an error page), and whether or not a
/// Cloakroom login won over it, unless [`LegacyMigration::keep_legacy_cookie`] is set. A
/// response that writes nothing (a 5xx, a panic, a store that is down) sets no cookie at
/// all, so the next request migrates again.
///
/// ```
/// use std::sync::Arc;
/// use cloakroom_interop::{Flask, Secret};
/// use cloakroom_tower::{KeyRing, LegacyMigration, MemoryStore, MigratedLogin, SessionLayer};
///
/// let flask = Flask::new(Secret::from("the Flask app's SECRET_KEY"))?;
/// let migration = LegacyMigration::new(flask, |old| {
///     // Only the user id carries over (Flask-Login keeps it in `_user_id`).
///     let id = old.data.get("_user_id")?.as_str()?;
///     Some(MigratedLogin::new(id))
/// });
/// let layer = SessionLayer::builder()
///     .key_ring(&KeyRing::generate()?)
///     .store(Arc::new(MemoryStore::new()))
///     .with_legacy_migration(migration)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LegacyMigration {
    legacy: Legacy,
    mapper: Mapper,
    keep_legacy_cookie: bool,
}

impl fmt::Debug for LegacyMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacyMigration")
            .field("framework", &self.legacy.framework())
            .field("cookie_name", &self.legacy.cookie_name())
            .field("keep_legacy_cookie", &self.keep_legacy_cookie)
            .finish_non_exhaustive()
    }
}

impl LegacyMigration {
    /// Migrates cookies `legacy` opens, through `map`: `None` from `map` leaves the request
    /// anonymous (a legacy session without a logged-in user, say).
    pub fn new<F>(legacy: impl Into<Legacy>, map: F) -> Self
    where
        F: Fn(&LegacySession) -> Option<MigratedLogin> + Send + Sync + 'static,
    {
        Self {
            legacy: legacy.into(),
            mapper: Arc::new(map),
            keep_legacy_cookie: false,
        }
    }

    /// Leaves the legacy cookie in the browser instead of expiring it: for the time the old
    /// app still serves pages beside the Rust service and must keep its own login. The
    /// application then expires it itself on logout (see `docs/interop.md`).
    #[must_use]
    pub fn keep_legacy_cookie(mut self) -> Self {
        self.keep_legacy_cookie = true;
        self
    }

    /// The legacy cookie's name.
    pub fn cookie_name(&self) -> &str {
        self.legacy.cookie_name()
    }

    /// The `Set-Cookie` line that expires the legacy cookie, or `None` if it is kept.
    pub(crate) fn expiry_header(&self, secure: bool) -> Option<String> {
        if self.keep_legacy_cookie {
            return None;
        }
        let secure = if secure { "; Secure" } else { "" };
        Some(format!(
            "{}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{secure}; HttpOnly",
            self.legacy.cookie_name()
        ))
    }

    /// Opens the legacy cookie and maps it; `None` if it does not open or maps to nothing.
    fn migrated(&self, cookie: &str, now: u64) -> Option<MigratedLogin> {
        match self.legacy.open(cookie, now) {
            Ok(old) => (self.mapper)(&old),
            Err(e) => {
                // Only the word (`invalid`, `expired`, ...): never the cookie.
                tracing::debug!(framework = %self.legacy.framework(), error = %e, "legacy session cookie refused");
                None
            }
        }
    }

    /// Logs `session` in from the legacy cookie if it opens and maps to a user; returns
    /// whether it did.
    pub(crate) fn apply(
        &self,
        session: &mut cloakroom::Session,
        cookie: &str,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<bool, Error> {
        let Some(login) = self.migrated(cookie, now) else {
            return Ok(false);
        };
        let device = login.device.unwrap_or_else(|| {
            let mut device = Device::new()
                .with_label(format!("migrated from {}", self.legacy.framework().name()));
            if let Some(agent) = headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
            {
                device = device.with_user_agent(agent.chars().take(200).collect::<String>());
            }
            device
        });
        session.login(login.user_id, device)?;
        for (key, value) in &login.data {
            session.insert(key, value)?;
        }
        tracing::debug!(framework = %self.legacy.framework(), "legacy session migrated to a Cloakroom login");
        Ok(true)
    }
}
