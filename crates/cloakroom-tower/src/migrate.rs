//! Moving users from a Flask, Pyramid, Django or Rails session cookie to a Cloakroom login
//! (feature `migrate`): [`LegacyMigration`], given to [`Builder::with_legacy_migration`].
//!
//! [`Builder::with_legacy_migration`]: crate::Builder::with_legacy_migration

use std::fmt;
use std::sync::Arc;

use cloakroom::store::ErrorKind as StoreErrorKind;
use cloakroom::{Device, IdHash, Policy, Record, Store};
use cloakroom_interop::{Legacy, LegacySession};
use http::HeaderMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::Error;

type Mapper = Arc<dyn Fn(&LegacySession) -> Option<MigratedLogin> + Send + Sync>;

/// What a legacy session becomes: the Cloakroom user to log in, and any values to copy
/// into the new session. Made by the application's mapping function.
///
/// ```
/// use cloakroom_tower::MigratedLogin;
/// let login = MigratedLogin::new("42").with_value("theme", serde_json::json!("dark"));
/// assert_eq!(login.user_id(), "42");
/// // Debug shows the keys and lengths, never a value.
/// assert_eq!(
///     format!("{login:?}"),
///     r#"MigratedLogin { user_id_len: 2, data_keys: ["theme"], device: None }"#
/// );
/// ```
#[derive(Clone, PartialEq)]
pub struct MigratedLogin {
    user_id: String,
    data: Map<String, Value>,
    device: Option<Device>,
}

impl fmt::Debug for MigratedLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            user_id,
            data,
            device,
        } = self;
        f.debug_struct("MigratedLogin")
            .field("user_id_len", &user_id.len())
            .field("data_keys", &data.keys().collect::<Vec<_>>())
            .field("device", &device.as_ref().map(|_| "set"))
            .finish()
    }
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
/// (`Set-Cookie: <name>=; Path=/; Max-Age=0`, with the `Domain` and `Path` the old app set
/// it with: [`LegacyMigration::with_cookie_domain`], [`LegacyMigration::with_cookie_path`]),
/// whether it opened or not (a tampered or expired cookie gives an anonymous session, never
/// an error page), and whether or not a Cloakroom login won over it, unless
/// [`LegacyMigration::keep_legacy_cookie`] is set. A response that writes nothing (a 5xx, a
/// panic, a store that is down) sets no cookie at all, so the next request migrates again.
///
/// A legacy cookie logs in once, and never past a revocation:
/// - **Used once.** When the migrated login is committed, a marker keyed by SHA-256 of the
///   legacy cookie is stored (a record without a user, which lives as long as the legacy
///   cookie could). A cookie that has been used is refused: after a Cloakroom logout, a
///   browser that still sends it, or a thief who copied it, stays anonymous.
/// - **Not older than a revocation.** If the user's epoch is above 0
///   ([`SessionManager::revoke_user`](cloakroom::SessionManager::revoke_user) was called), the
///   legacy cookie must have been issued after the migration first saw that epoch (a
///   per-user, per-epoch marker stores that time). Every cookie issued before the revocation
///   is older than that, so it never logs the user back in.
/// - **Aged.** The legacy reader must have a maximum age ([`Legacy::max_age`]):
///   [`LegacyMigration::new`] refuses one without.
///
/// `docs/interop.md` explains the choices.
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
/// })?
/// // The old app set its cookie for the whole site (SESSION_COOKIE_DOMAIN).
/// .with_cookie_domain("example.com")?;
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
    max_age: u64,
    cookie_domain: Option<String>,
    cookie_path: String,
}

impl fmt::Debug for LegacyMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            legacy,
            mapper: _,
            keep_legacy_cookie,
            max_age,
            cookie_domain,
            cookie_path,
        } = self;
        f.debug_struct("LegacyMigration")
            .field("framework", &legacy.framework())
            .field("cookie_name", &legacy.cookie_name())
            .field("keep_legacy_cookie", keep_legacy_cookie)
            .field("max_age", max_age)
            .field("cookie_domain", cookie_domain)
            .field("cookie_path", cookie_path)
            .finish_non_exhaustive()
    }
}

fn invalid(message: &'static str) -> Error {
    cloakroom::Error::new(cloakroom::ErrorKind::InvalidInput, message).into()
}

impl LegacyMigration {
    /// Migrates cookies `legacy` opens, through `map`: `None` from `map` leaves the request
    /// anonymous (a legacy session without a logged-in user, say).
    ///
    /// # Errors
    /// [`ErrorKind::Session`](crate::ErrorKind::Session) (invalid input) if the reader has no
    /// maximum age ([`Legacy::max_age`] is `None`): a Flask or Django reader with
    /// `with_max_age(None)`, a Pyramid one with `with_timeout(None)`, or a Rails one without
    /// [`Rails::with_max_age`](cloakroom_interop::Rails::with_max_age). Such a cookie would
    /// log in forever, and a stolen copy with it.
    pub fn new<F>(legacy: impl Into<Legacy>, map: F) -> Result<Self, Error>
    where
        F: Fn(&LegacySession) -> Option<MigratedLogin> + Send + Sync + 'static,
    {
        let legacy = legacy.into();
        let Some(max_age) = legacy.max_age() else {
            return Err(invalid(
                "the legacy cookie reader has no maximum age, so its cookies would migrate \
                 forever: keep the framework's max age (Flask, Django), timeout (Pyramid), or give \
                 Rails::with_max_age the app's expire_after",
            ));
        };
        Ok(Self {
            legacy,
            mapper: Arc::new(map),
            keep_legacy_cookie: false,
            max_age,
            cookie_domain: None,
            cookie_path: "/".to_owned(),
        })
    }

    /// The `Domain` the old app set its cookie with (Flask's `SESSION_COOKIE_DOMAIN`,
    /// Django's `SESSION_COOKIE_DOMAIN`, Rails' `domain:`), so that the expiring
    /// `Set-Cookie` names the same cookie: a browser keeps a cookie whose expiry line has
    /// another domain. Default: none (a host-only cookie). A leading dot is dropped.
    ///
    /// # Errors
    /// [`ErrorKind::Session`](crate::ErrorKind::Session) (invalid input) unless it is a host
    /// name: letters, digits, `-` and `.`.
    pub fn with_cookie_domain(mut self, domain: impl Into<String>) -> Result<Self, Error> {
        let domain = domain.into();
        let domain = domain.strip_prefix('.').unwrap_or(&domain);
        let valid = !domain.is_empty()
            && domain.len() <= 253
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !domain.split('.').any(str::is_empty);
        if !valid {
            return Err(invalid(
                "the legacy cookie domain must be a host name (letters, digits, '-' and '.')",
            ));
        }
        self.cookie_domain = Some(domain.to_ascii_lowercase());
        Ok(self)
    }

    /// The `Path` the old app set its cookie with (`SESSION_COOKIE_PATH`; Flask's default is
    /// `APPLICATION_ROOT`), for the same reason. Default `/`.
    ///
    /// # Errors
    /// [`ErrorKind::Session`](crate::ErrorKind::Session) (invalid input) unless it starts
    /// with `/` and holds only visible ASCII other than `;`.
    pub fn with_cookie_path(mut self, path: impl Into<String>) -> Result<Self, Error> {
        let path = path.into();
        let valid = path.starts_with('/')
            && path.len() <= 1024
            && path.bytes().all(|b| b.is_ascii_graphic() && b != b';');
        if !valid {
            return Err(invalid(
                "the legacy cookie path must start with '/' and hold visible ASCII without ';'",
            ));
        }
        self.cookie_path = path;
        Ok(self)
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
        let domain = self
            .cookie_domain
            .as_ref()
            .map(|d| format!("; Domain={d}"))
            .unwrap_or_default();
        Some(format!(
            "{}=; Path={}{domain}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{secure}; HttpOnly",
            self.legacy.cookie_name(),
            self.cookie_path,
        ))
    }

    /// Opens the legacy cookie and maps it; `None` if it does not open or maps to nothing.
    fn migrated(&self, cookie: &str, now: u64) -> Option<(LegacySession, MigratedLogin)> {
        match self.legacy.open(cookie, now) {
            Ok(old) => {
                let login = (self.mapper)(&old)?;
                Some((old, login))
            }
            Err(e) => {
                // Only the word (`invalid`, `expired`, ...): never the cookie.
                tracing::debug!(framework = %self.legacy.framework(), error = %e, "legacy session cookie refused");
                None
            }
        }
    }

    /// Logs `session` in from the legacy cookie if it opens, maps to a user, has not been
    /// used and is not older than the user's last revocation. Returns the marker that uses
    /// the cookie up, to store with [`Consume::consume`] when the login is committed.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) if the store is down: the
    /// request fails closed.
    pub(crate) async fn apply(
        &self,
        session: &mut cloakroom::Session,
        cookie: &str,
        headers: &HeaderMap,
        store: &dyn Store,
        now: u64,
    ) -> Result<Option<Consume>, Error> {
        let Some((old, login)) = self.migrated(cookie, now) else {
            return Ok(None);
        };
        let used = self.used_marker(cookie, &old, now);
        if is_present(store, &used.id_hash, now).await? {
            tracing::debug!(framework = %self.legacy.framework(), "legacy session cookie already used: refused");
            return Ok(None);
        }
        if !self
            .issued_after_revocation(store, &login.user_id, &old, now)
            .await?
        {
            tracing::debug!(framework = %self.legacy.framework(), "legacy session cookie older than the user's revocation: refused");
            return Ok(None);
        }
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
        Ok(Some(Consume { marker: used }))
    }

    /// The marker that says this legacy cookie has been used: keyed by a hash of the cookie,
    /// alive as long as the cookie could be.
    fn used_marker(&self, cookie: &str, old: &LegacySession, now: u64) -> Record {
        let mut h = Sha256::new();
        h.update(b"cloakroom/legacy-cookie-used/1\0");
        for part in [
            self.legacy.framework().name(),
            self.legacy.cookie_name(),
            cookie,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let until = old
            .expires_at
            .unwrap_or_else(|| now.saturating_add(self.max_age).saturating_add(1));
        marker(IdHash::from_bytes(h.finalize().into()), now, until)
    }

    /// Whether the legacy session was issued after `user`'s last revocation. With epoch 0
    /// there was none. Otherwise the cutoff is when the migration first saw the current
    /// epoch (a marker per user and epoch keeps that time): the bump came before that, so
    /// every cookie issued before the bump is older than the cutoff and refused. A cookie
    /// without an issue time is refused.
    async fn issued_after_revocation(
        &self,
        store: &dyn Store,
        user: &str,
        old: &LegacySession,
        now: u64,
    ) -> Result<bool, Error> {
        let epoch = store.user_epoch(user).await?;
        if epoch == 0 {
            return Ok(true);
        }
        let mut h = Sha256::new();
        h.update(b"cloakroom/legacy-epoch-seen/1\0");
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(epoch.to_be_bytes());
        let id = IdHash::from_bytes(h.finalize().into());
        // Any cookie issued before the cutoff is dead by `cutoff + max_age`; a marker that
        // expired is made again with a later time, which only refuses more.
        let until = now.saturating_add(self.max_age).saturating_add(1);
        let cutoff = match store.load(&id, now).await {
            Ok(Some(seen)) => seen.created,
            Ok(None) => match store.create(&marker(id, now, until), now).await {
                Ok(()) => now,
                // Another request made it just now: its time is at most `now`.
                Err(e) if e.kind() == StoreErrorKind::Conflict => now,
                Err(e) => return Err(e.into()),
            },
            // An unreadable marker: refuse, as for an unknown cutoff.
            Err(e) if e.kind() == StoreErrorKind::Corrupt => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        // A cookie dated in the future counts as issued now.
        Ok(old.issued_at.is_some_and(|t| t.min(now) > cutoff))
    }
}

/// A record without a user whose only meaning is its id and its `created` time.
fn marker(id_hash: IdHash, now: u64, until: u64) -> Record {
    let mut record = Record::new(id_hash, now, &Policy::default());
    record.idle_deadline = until.max(now.saturating_add(1));
    record.absolute_deadline = record.idle_deadline;
    record
}

/// Whether a live record (or an unreadable one, which counts as there) has this id.
async fn is_present(store: &dyn Store, id: &IdHash, now: u64) -> Result<bool, Error> {
    match store.load(id, now).await {
        Ok(found) => Ok(found.is_some()),
        Err(e) if e.kind() == StoreErrorKind::Corrupt => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Uses up a migrated legacy cookie; stored when the migrated login is committed, so a
/// request that fails (5xx, panic) leaves the cookie good for the next one.
#[derive(Debug)]
pub(crate) struct Consume {
    marker: Record,
}

impl Consume {
    /// Stores the marker. `Ok(false)` if another request used the cookie first (between
    /// this request's check and now): the caller then discards this request's login.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) if the store is down.
    pub(crate) async fn consume(self, store: &dyn Store) -> Result<bool, Error> {
        match store.create(&self.marker, self.marker.last_seen).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == StoreErrorKind::Conflict => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
