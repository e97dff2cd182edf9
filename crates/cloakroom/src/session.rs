//! The working copy of one session for one request.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::csrf::{CsrfSecret, CSRF_SECRET_LEN};
use crate::error::{Error, ErrorKind};
use crate::flash::{Flash, Level};
use crate::id::{IdHash, SessionId};
use crate::record::{Device, Record, Value};

/// Keys starting with this prefix are reserved for Cloakroom (the CSRF secret, flash
/// messages); [`Session::insert`] refuses them.
pub const RESERVED_PREFIX: &str = "__cloakroom.";
pub(crate) const CSRF_KEY: &str = "__cloakroom.csrf";
pub(crate) const FLASH_KEY: &str = "__cloakroom.flash";
/// The lifetime (seconds) a "remember me" login asked for; present only in such sessions.
pub(crate) const REMEMBER_KEY: &str = "__cloakroom.remember";
/// The device binding of the session (the public key a browser registered, owned by the
/// middleware that does Device Bound Session Credentials); present only in bound sessions.
pub(crate) const BINDING_KEY: &str = "__cloakroom.binding";

/// The "remember me" lifetime (seconds) recorded in `data`, if the session has one.
pub(crate) fn remembered_in(data: &BTreeMap<String, Value>) -> Option<u64> {
    data.get(REMEMBER_KEY).and_then(Value::as_u64)
}

/// Where session data lives. See `docs/sessions.md` for what each can revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Mode {
    /// The cookie holds a signed token of a random id; the store holds the record. Every
    /// session can be ended at once. The default.
    #[default]
    Server,
    /// The cookie holds the whole record, sealed; the store holds only users' epochs. A
    /// logged-in session can be ended only by bumping its user's epoch (ending all of that
    /// user's sessions); an anonymous one only by its expiry.
    Client,
    /// The cookie holds the data, sealed, with the id; the store keeps the id's record
    /// without data. One session or all of a user's can be ended at once.
    Hybrid,
}

/// What the request asked to happen to the session as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verb {
    None,
    /// A new id for the same session (fixation defence without a login).
    Cycle,
    /// A login: new id, new CSRF secret, user and epoch stored.
    Login {
        user: String,
        device: Device,
    },
    /// Logout: the session is destroyed.
    Destroy,
}

/// One request's working copy of a session.
///
/// Reads see the loaded record with this request's own changes on top. Changes are recorded
/// per key (set or remove) and per verb ([`Session::login`], [`Session::logout`],
/// [`Session::cycle_id`]); nothing reaches the store until
/// [`SessionManager::commit`](crate::SessionManager::commit), and
/// [`SessionManager::discard`](crate::SessionManager::discard) (for a 5xx) writes nothing.
///
/// `Debug` shows the id hash prefix, the user and the keys, never values or the id.
pub struct Session {
    pub(crate) mode: Mode,
    /// The id of the stored session (server and hybrid modes), or a fresh one a login or
    /// cycle will use.
    pub(crate) id: Option<SessionId>,
    /// The id the session had when loaded (server and hybrid), if it was stored.
    pub(crate) loaded_id: Option<SessionId>,
    /// The loaded record, or a template for a new session.
    pub(crate) base: Record,
    /// Whether `base` was loaded from a live cookie/record.
    pub(crate) stored: bool,
    /// The request carried a cookie that did not give a live session: answer with a removal.
    pub(crate) stale_cookie: bool,
    pub(crate) changes: BTreeMap<String, Option<Value>>,
    pub(crate) verb: Verb,
    /// Client mode: a new epoch after `sign_out_other_sessions`.
    pub(crate) new_epoch: Option<u64>,
    /// The cookie was minted with a key that is no longer the ring's primary: issue it
    /// again with the primary, so the old key can be retired.
    pub(crate) reissue: bool,
    /// The anonymous visitor's CSRF secret, from its own signed cookie.
    pub(crate) anon_csrf: AnonCsrf,
}

/// An anonymous visitor's CSRF secret: it lives in its own signed cookie (a double-submit
/// token), so rendering a form for a visitor without a session writes nothing to the store.
#[derive(Default)]
pub(crate) struct AnonCsrf {
    /// The secret from a valid cookie, or one made in this request.
    pub(crate) secret: Option<CsrfSecret>,
    /// The request carried the cookie (valid or not).
    pub(crate) carried: bool,
    /// The secret was made in this request: the cookie must be set.
    pub(crate) minted: bool,
    /// The cookie is old (or minted with a retired key): set it again if it is used.
    pub(crate) stale: bool,
    /// A token was masked from the secret in this request.
    pub(crate) used: bool,
}

impl AnonCsrf {
    /// Whether the response must (re)set the cookie.
    pub(crate) fn needs_set(&self) -> bool {
        self.secret.is_some() && (self.minted || (self.used && self.stale))
    }
}

impl Session {
    pub(crate) fn new(mode: Mode, base: Record, stale_cookie: bool) -> Self {
        Self {
            mode,
            id: None,
            loaded_id: None,
            base,
            stored: false,
            stale_cookie,
            changes: BTreeMap::new(),
            verb: Verb::None,
            new_epoch: None,
            reissue: false,
            anon_csrf: AnonCsrf::default(),
        }
    }

    /// The value stored under `key`, decoded as `T`, or `None` if there is none.
    ///
    /// # Errors
    /// [`ErrorKind::Value`] if the value does not decode as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get_value(key) {
            None => Ok(None),
            Some(v) => rmpv::ext::from_value(v.clone()).map(Some).map_err(|e| {
                Error::new(
                    ErrorKind::Value,
                    format!("session key {key:?} does not decode"),
                )
                .with_source(e)
            }),
        }
    }

    /// The raw MessagePack value under `key`.
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        match self.changes.get(key) {
            Some(change) => change.as_ref(),
            None => self.base.data.get(key),
        }
    }

    /// Stores `value` under `key` (in this request's copy; written at commit).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a key starting with [`RESERVED_PREFIX`];
    /// [`ErrorKind::Value`] if `value` does not serialize.
    pub fn insert<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        let value = rmpv::ext::to_value(value).map_err(|e| {
            Error::new(
                ErrorKind::Value,
                format!("session key {key:?} does not encode"),
            )
            .with_source(e)
        })?;
        self.insert_value(key, value)
    }

    /// Stores a raw MessagePack value under `key`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a key starting with [`RESERVED_PREFIX`].
    pub fn insert_value(&mut self, key: &str, value: Value) -> Result<(), Error> {
        check_key(key)?;
        self.set(key, Some(value));
        Ok(())
    }

    /// Removes `key`; returns whether it had a value.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a key starting with [`RESERVED_PREFIX`].
    pub fn remove(&mut self, key: &str) -> Result<bool, Error> {
        check_key(key)?;
        let had = self.get_value(key).is_some();
        if had {
            self.set(key, None);
        }
        Ok(had)
    }

    /// The application's keys (reserved ones left out), sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .base
            .data
            .keys()
            .map(String::as_str)
            .filter(|k| !self.changes.contains_key(*k))
            .chain(
                self.changes
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k.as_str()),
            )
            .filter(|k| !k.starts_with(RESERVED_PREFIX))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Records a change of `key`, or none when `value` is what the loaded record holds
    /// (setting a key to the value it has, or removing an absent one, writes nothing).
    pub(crate) fn set(&mut self, key: &str, value: Option<Value>) {
        if self.base.data.get(key) == value.as_ref() {
            self.changes.remove(key);
        } else {
            self.changes.insert(key.to_owned(), value);
        }
    }

    /// The data with this request's changes applied on top of `data`.
    pub(crate) fn merged_onto(&self, data: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
        let mut out = data.clone();
        apply(&self.changes, &mut out);
        out
    }

    /// The logged-in user: after [`Session::login`] the new one, after [`Session::logout`]
    /// none.
    pub fn user_id(&self) -> Option<&str> {
        match &self.verb {
            Verb::Login { user, .. } => Some(user),
            Verb::Destroy => None,
            _ => self.base.user_id.as_deref(),
        }
    }

    /// The hash of the session's id, to mark the current session in
    /// [`SessionManager::sessions_of`](crate::SessionManager::sessions_of)'s list (after a
    /// login in this request, the new id's hash). `None` for a session that is not stored
    /// yet, and always in client mode, which has no ids.
    pub fn id_hash(&self) -> Option<IdHash> {
        self.id.as_ref().map(SessionId::hash)
    }

    /// Whether the request arrived without a live session.
    pub fn is_new(&self) -> bool {
        !self.stored
    }

    /// Whether the commit will create, change or delete stored state: a key was set or
    /// removed, or a verb (login, logout, new id, a sign-out's new epoch) is pending. Without
    /// changes a commit writes at most an idle-deadline touch, which is safe to lose.
    pub fn has_changes(&self) -> bool {
        self.verb != Verb::None || !self.changes.is_empty() || self.new_epoch.is_some()
    }

    /// Whether [`Session::logout`] was called.
    pub fn is_destroyed(&self) -> bool {
        self.verb == Verb::Destroy
    }

    /// The device metadata stored at login.
    pub fn device(&self) -> &Device {
        match &self.verb {
            Verb::Login { device, .. } => device,
            _ => &self.base.device,
        }
    }

    /// When the loaded session dies if nothing touches it (unix seconds): the earlier of its
    /// idle and absolute deadlines as loaded (a commit that slides the idle deadline moves it
    /// later). For a new session, the deadlines a session created at load time would get.
    pub fn expires_at(&self) -> u64 {
        self.base.expires_at()
    }

    /// When the session was created (unix seconds; the load time for a new one).
    pub fn created(&self) -> u64 {
        self.base.created
    }

    /// Logs `user` in. At commit the session gets a new id (the old one stops working:
    /// session fixation defence), the user id and the user's current epoch are stored, and
    /// the CSRF secret is replaced now, so tokens made after this call use the new one.
    /// The data survives the login; clear what must not.
    ///
    /// Store no permissions or roles next to the user id: load them per request.
    ///
    /// # Errors
    /// [`ErrorKind::Random`] if the OS random generator fails.
    pub fn login(&mut self, user: impl Into<String>, device: Device) -> Result<(), Error> {
        if self.mode != Mode::Client {
            self.id = Some(SessionId::generate()?);
        }
        self.rotate_csrf()?;
        if self.get_value(REMEMBER_KEY).is_some() {
            self.set(REMEMBER_KEY, None);
        }
        // A login starts unbound: the new login's browser registers a key of its own.
        if self.get_value(BINDING_KEY).is_some() {
            self.set(BINDING_KEY, None);
        }
        self.verb = Verb::Login {
            user: user.into(),
            device,
        };
        Ok(())
    }

    /// Logs `user` in as [`Session::login`] does, for "remember me": the session lives for
    /// `lifetime` from the login instead of the policy's absolute timeout, cut to
    /// [`Policy::max_remember`](crate::Policy::max_remember) if it asks for more (default
    /// 30 days). The idle timeout does not end a remembered session: keeping it over days
    /// without visits is what remembering means. The cookie carries a `Max-Age` even where
    /// the application chose browser-session cookies.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a lifetime under one second; [`ErrorKind::Random`] if
    /// the OS random generator fails.
    pub fn login_remembered(
        &mut self,
        user: impl Into<String>,
        device: Device,
        lifetime: std::time::Duration,
    ) -> Result<(), Error> {
        if lifetime.as_secs() == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a remember-me lifetime must be >= 1 s",
            ));
        }
        self.login(user, device)?;
        self.set(REMEMBER_KEY, Some(Value::from(lifetime.as_secs())));
        Ok(())
    }

    /// Applies what [`SessionManager::sign_out_others_of`](crate::SessionManager::sign_out_others_of)
    /// did to this session (client mode: it takes the user's new epoch, so its cookie
    /// outlives the bump) and returns how many sessions ended. Nothing happens if the
    /// session's user is no longer the one signed out.
    pub fn apply_signed_out(&mut self, done: &crate::manager::SignedOut) -> u64 {
        if self.user_id() == Some(done.user.as_str()) {
            if let Some(epoch) = done.new_epoch {
                // A login in this request reads the epoch at commit, after this bump.
                self.new_epoch = Some(epoch);
            }
        }
        done.ended
    }

    /// Whether [`Session::login`] (or [`Session::login_remembered`]) was called on this copy:
    /// the commit will log a user in.
    pub fn is_logging_in(&self) -> bool {
        matches!(self.verb, Verb::Login { .. })
    }

    /// The session's device binding: the value a middleware doing Device Bound Session
    /// Credentials stored with [`Session::set_device_binding`] (the public key the browser
    /// registered and what goes with it), kept under a reserved key of the record so every
    /// store carries it. `None` for an unbound session, and after [`Session::logout`] or a
    /// new [`Session::login`].
    pub fn device_binding(&self) -> Option<&Value> {
        if self.verb == Verb::Destroy {
            return None;
        }
        self.get_value(BINDING_KEY)
    }

    /// Stores (or with `None` removes) the session's device binding, written at commit like
    /// any key. Only the device-binding middleware should call this: the application sees
    /// [`Session::device_binding`].
    pub fn set_device_binding(&mut self, binding: Option<Value>) {
        self.set(BINDING_KEY, binding);
    }

    /// Whether this is a "remember me" session ([`Session::login_remembered`]).
    pub fn is_remembered(&self) -> bool {
        self.get_value(REMEMBER_KEY).is_some()
    }

    /// Ends the session: at commit the record is deleted and the cookie removed. Changes
    /// made in this request are dropped.
    ///
    /// What it ends depends on the mode. In server and hybrid modes the record is deleted,
    /// so the cookie and every copy of it stop working at once. In client mode there is no
    /// record: logout removes the cookie from this browser, but a copy of it (taken by
    /// malware, a proxy log, a synced profile) stays valid until its idle or absolute
    /// deadline. To end every copy, use
    /// [`SessionManager::logout_everywhere`](crate::SessionManager::logout_everywhere),
    /// which bumps the user's epoch and so ends all of the user's sessions.
    pub fn logout(&mut self) {
        self.verb = Verb::Destroy;
        self.changes.clear();
    }

    /// Gives the session a new id at commit, keeping its data and user (for example after a
    /// privilege change within the session).
    ///
    /// # Errors
    /// [`ErrorKind::Random`] if the OS random generator fails.
    pub fn cycle_id(&mut self) -> Result<(), Error> {
        if self.verb == Verb::None {
            if self.mode != Mode::Client {
                self.id = Some(SessionId::generate()?);
            }
            self.verb = Verb::Cycle;
        }
        Ok(())
    }

    // ---- flash ----

    /// Queues a flash message for the next page that takes them.
    pub fn flash(&mut self, level: Level, message: impl Into<String>) {
        let mut queue = self.peek_flashes();
        queue.push(Flash::new(level, message));
        let value = rmpv::ext::to_value(&queue).unwrap_or(Value::Nil);
        self.set(FLASH_KEY, Some(value));
    }

    /// The queued flash messages, left in place.
    pub fn peek_flashes(&self) -> Vec<Flash> {
        self.get_value(FLASH_KEY)
            .and_then(|v| rmpv::ext::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// Takes the queued flash messages: they are removed at commit, so each is shown once.
    pub fn take_flashes(&mut self) -> Vec<Flash> {
        let queue = self.peek_flashes();
        if self.get_value(FLASH_KEY).is_some() {
            self.set(FLASH_KEY, None);
        }
        queue
    }

    // ---- CSRF ----

    /// The session's own CSRF secret (a logged-in session's, or one stored by an earlier
    /// version). None after [`Session::logout`]: the visitor is anonymous again.
    fn own_csrf_secret(&self) -> Option<CsrfSecret> {
        if self.verb == Verb::Destroy {
            return None;
        }
        match self.get_value(CSRF_KEY)? {
            Value::Binary(b) => {
                let bytes: [u8; CSRF_SECRET_LEN] = b.as_slice().try_into().ok()?;
                Some(CsrfSecret::from_bytes(bytes))
            }
            _ => None,
        }
    }

    /// Whether CSRF tokens come from the session's own secret rather than the anonymous
    /// cookie: once it has one, or a user (a login made one).
    pub(crate) fn owns_csrf(&self) -> bool {
        self.own_csrf_secret().is_some() || self.user_id().is_some()
    }

    fn rotate_csrf(&mut self) -> Result<CsrfSecret, Error> {
        let secret = CsrfSecret::generate()?;
        self.set(CSRF_KEY, Some(Value::Binary(secret.expose().to_vec())));
        Ok(secret)
    }

    /// A freshly masked CSRF token for this response (different on every call).
    ///
    /// A logged-in session uses its own secret (made at [`Session::login`]). An anonymous
    /// visitor's secret lives in its own signed cookie instead
    /// ([`SessionManager::csrf_cookie_name`](crate::SessionManager::csrf_cookie_name)): the
    /// first call makes one and the commit asks to set the cookie
    /// ([`Commit::csrf_cookie`](crate::Commit::csrf_cookie)); nothing is stored, so
    /// rendering forms for anonymous visitors costs the store nothing. At login the session's
    /// own secret takes over, and tokens made from the cookie stop verifying.
    ///
    /// # Errors
    /// [`ErrorKind::Random`] if the OS random generator fails.
    pub fn csrf_token(&mut self) -> Result<String, Error> {
        if let Some(secret) = self.own_csrf_secret() {
            return Ok(secret.mask());
        }
        if self.user_id().is_some() {
            // A logged-in session without a secret (stored by other means): give it one.
            return Ok(self.rotate_csrf()?.mask());
        }
        let anon = &mut self.anon_csrf;
        let secret = match &anon.secret {
            Some(secret) => secret.clone(),
            None => {
                let secret = CsrfSecret::generate()?;
                anon.secret = Some(secret.clone());
                anon.minted = true;
                secret
            }
        };
        anon.used = true;
        Ok(secret.mask())
    }

    /// Whether `token` (from a header or form field) carries this session's CSRF secret:
    /// the session's own once it has one or a user, else the anonymous CSRF cookie's.
    /// Constant-time; false when there is no secret.
    pub fn verify_csrf(&self, token: &str) -> bool {
        if let Some(secret) = self.own_csrf_secret() {
            return secret.verify(token);
        }
        if self.user_id().is_some() {
            return false;
        }
        self.anon_csrf
            .secret
            .as_ref()
            .is_some_and(|s| s.verify(token))
    }

    /// [`Session::verify_csrf`] as a `Result`, for `?`.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] if the token is missing or wrong.
    pub fn require_csrf(&self, token: Option<&str>) -> Result<(), Error> {
        match token {
            Some(t) if self.verify_csrf(t) => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Forbidden,
                "missing or invalid CSRF token",
            )),
        }
    }
}

pub(crate) fn apply(changes: &BTreeMap<String, Option<Value>>, data: &mut BTreeMap<String, Value>) {
    for (k, v) in changes {
        match v {
            Some(v) => {
                data.insert(k.clone(), v.clone());
            }
            None => {
                data.remove(k);
            }
        }
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.starts_with(RESERVED_PREFIX) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("session keys starting with {RESERVED_PREFIX:?} are reserved"),
        ));
    }
    Ok(())
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match &self.verb {
            Verb::None => "none",
            Verb::Cycle => "cycle",
            Verb::Login { .. } => "login",
            Verb::Destroy => "destroy",
        };
        f.debug_struct("Session")
            .field("id_hash", &self.id_hash())
            .field("user_id", &self.user_id())
            .field("stored", &self.stored)
            .field("keys", &self.keys())
            .field("changed", &self.changes.keys().collect::<Vec<_>>())
            .field("verb", &verb)
            .finish_non_exhaustive()
    }
}
