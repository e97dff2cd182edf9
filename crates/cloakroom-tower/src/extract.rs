//! The extractors `Session`, `Flash` and `Csrf`.

use std::fmt;
use std::time::Duration;

use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Serialize;

use cloakroom::{Device, IdHash, Level, SessionInfo, SessionManager};

use crate::error::{Error, ErrorKind};
use crate::layer::Slot;

pub(crate) fn slot(parts: &Parts) -> Result<Slot, Error> {
    parts.extensions.get::<Slot>().cloned().ok_or_else(|| {
        Error::new(
            ErrorKind::NotInstalled,
            "no SessionLayer around this handler (add .layer(session_layer) to the router)",
        )
    })
}

/// This request's session: typed values, the verbs, and the other sessions of its user.
///
/// Changes are made on this request's copy and written when the response is ready, only if
/// it is not a 5xx and the handler did not panic. Cheap to clone; every clone is the same
/// session.
#[derive(Clone)]
pub struct Session {
    slot: Slot,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // cloakroom's Debug shows the id hash prefix and keys, never ids or values.
        let inner = self.slot.with(|s| format!("{s:?}")).unwrap_or_default();
        f.debug_struct("Session").field("inner", &inner).finish()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        Ok(Self { slot: slot(parts)? })
    }
}

impl Session {
    /// The value under `key`, decoded as `T`.
    ///
    /// # Errors
    /// [`ErrorKind::Session`] if it does not decode as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        Ok(self.slot.with(|s| s.get(key))??)
    }

    /// Stores `value` under `key`.
    ///
    /// # Errors
    /// [`ErrorKind::Session`] for a reserved key or a value that does not serialize.
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        Ok(self.slot.with(|s| s.insert(key, value))??)
    }

    /// Removes `key`; returns whether it had a value.
    ///
    /// # Errors
    /// [`ErrorKind::Session`] for a reserved key.
    pub fn remove(&self, key: &str) -> Result<bool, Error> {
        Ok(self.slot.with(|s| s.remove(key))??)
    }

    /// The application's keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.slot
            .with(|s| s.keys().into_iter().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The logged-in user's id.
    pub fn user_id(&self) -> Option<String> {
        self.slot
            .with(|s| s.user_id().map(str::to_owned))
            .ok()
            .flatten()
    }

    /// The hash of this session's id (to mark "this device" in [`Session::sessions`]).
    pub fn id_hash(&self) -> Option<IdHash> {
        self.slot.with(|s| s.id_hash()).ok().flatten()
    }

    /// Whether a browser bound this session to a key it keeps on the device (Device Bound
    /// Session Credentials, [`Builder::with_device_binding`](crate::Builder::with_device_binding)).
    /// A request of a bound session that lacks a valid bound cookie never gets here: it is
    /// served as logged out.
    pub fn is_device_bound(&self) -> bool {
        self.slot
            .with(|s| s.device_binding().is_some())
            .unwrap_or(false)
    }

    /// Whether the request came without a live session.
    pub fn is_new(&self) -> bool {
        self.slot.with(|s| s.is_new()).unwrap_or(true)
    }

    /// Logs `user` in: a new id at commit (the old one stops working), a new CSRF secret now.
    ///
    /// What `device` leaves empty is taken from the request: the `User-Agent` (its first
    /// 256 characters) and the client's address (the peer's, or behind a proxy listed with
    /// [`Builder::with_trusted_proxies`](crate::Builder::with_trusted_proxies), the one it
    /// forwarded). `Device::new()` is enough for a "your sessions" page.
    ///
    /// # Errors
    /// [`ErrorKind::Session`] if the OS random generator fails.
    pub fn login(&self, user: impl Into<String>, device: Device) -> Result<(), Error> {
        let user = user.into();
        let device = self.slot.request.fill(device);
        Ok(self.slot.with(|s| s.login(user, device))??)
    }

    /// Logs `user` in as [`Session::login`] does, for "remember me": the session lasts
    /// `lifetime` from now, cut to the policy's bound
    /// ([`Policy::max_remember`](cloakroom::Policy::max_remember), default 30 days), is not
    /// ended by the idle timeout, and its cookie has a `Max-Age` even with
    /// [`Builder::with_browser_session_cookie`](crate::Builder::with_browser_session_cookie).
    ///
    /// # Errors
    /// [`ErrorKind::Session`] for a lifetime under one second, or if the OS random
    /// generator fails.
    pub fn login_remembered(
        &self,
        user: impl Into<String>,
        device: Device,
        lifetime: Duration,
    ) -> Result<(), Error> {
        let user = user.into();
        let device = self.slot.request.fill(device);
        Ok(self
            .slot
            .with(|s| s.login_remembered(user, device, lifetime))??)
    }

    /// Whether this session was logged in with [`Session::login_remembered`].
    pub fn is_remembered(&self) -> bool {
        self.slot.with(|s| s.is_remembered()).unwrap_or(false)
    }

    /// Logs out: the session is destroyed at commit and the cookie removed. In client mode
    /// that removes this browser's cookie only: a copy stays valid until it expires (see
    /// [`Session::logout_everywhere`]).
    pub fn logout(&self) {
        let _ = self.slot.with(cloakroom::Session::logout);
    }

    /// Logs the user out of every session they have, this one included: the user's epoch is
    /// bumped and their records deleted, so every cookie of the user dies, copies included
    /// (the only logout a copied client-mode cookie cannot survive; see
    /// [`SessionManager::logout_everywhere`]). Returns how many records were deleted.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the store is down.
    pub async fn logout_everywhere(&self) -> Result<u64, Error> {
        // Nothing leaves the slot across the await: a cancelled handler keeps its session.
        let user = self.slot.with(|s| s.user_id().map(str::to_owned))?;
        let ended = match user {
            Some(user) => self.slot.shared.manager.revoke_user(&user).await?,
            None => 0,
        };
        self.slot.with(cloakroom::Session::logout)?;
        Ok(ended)
    }

    /// A new id for the same session at commit.
    ///
    /// # Errors
    /// [`ErrorKind::Session`] if the OS random generator fails.
    pub fn cycle_id(&self) -> Result<(), Error> {
        Ok(self.slot.with(cloakroom::Session::cycle_id)??)
    }

    /// Queues a flash message for the next page.
    pub fn flash(&self, level: Level, message: impl Into<String>) {
        let message = message.into();
        let _ = self.slot.with(|s| s.flash(level, message));
    }

    /// A freshly masked CSRF token for a form or header.
    ///
    /// # Errors
    /// [`ErrorKind::Session`] if the OS random generator fails.
    pub fn csrf_token(&self) -> Result<String, Error> {
        Ok(self.slot.with(cloakroom::Session::csrf_token)??)
    }

    /// Whether `token` carries this session's CSRF secret.
    pub fn verify_csrf(&self, token: &str) -> bool {
        self.slot.with(|s| s.verify_csrf(token)).unwrap_or(false)
    }

    /// Ends every other session of the logged-in user; returns how many ended (0 in client
    /// mode, where the epoch is bumped instead).
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the store is down.
    pub async fn sign_out_other_sessions(&self) -> Result<u64, Error> {
        // The session stays in its slot throughout: a request cancelled during the store
        // call (a timeout, a client gone) finds it where it was.
        let (user, current) = self
            .slot
            .with(|s| (s.user_id().map(str::to_owned), s.id_hash()))?;
        let Some(user) = user else {
            return Ok(0);
        };
        let done = self
            .slot
            .shared
            .manager
            .sign_out_others_of(&user, current.as_ref())
            .await?;
        self.slot.with(|s| s.apply_signed_out(&done))
    }

    /// Ends every session of the logged-in user, this one included (account lock). For a
    /// password change, prefer [`Session::sign_out_other_sessions`].
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the store is down.
    pub async fn revoke_user(&self) -> Result<u64, Error> {
        let Some(user) = self.user_id() else {
            return Ok(0);
        };
        Ok(self.slot.shared.manager.revoke_user(&user).await?)
    }

    /// The live sessions of the logged-in user, oldest first (empty when anonymous).
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the store is down; [`ErrorKind::Session`] in client
    /// mode, which keeps no list.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let Some(user) = self.user_id() else {
            return Ok(Vec::new());
        };
        Ok(self.slot.shared.manager.sessions_of(&user).await?)
    }

    /// Ends one of the logged-in user's sessions by its hash; false if it was not theirs.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the store is down.
    pub async fn end_session(&self, id_hash: &IdHash) -> Result<bool, Error> {
        let Some(user) = self.user_id() else {
            return Ok(false);
        };
        Ok(self.slot.shared.manager.end_session(&user, id_hash).await?)
    }

    /// The session manager.
    pub fn manager(&self) -> &SessionManager {
        &self.slot.shared.manager
    }
}

/// The flash messages queued for this page, taken from the session (each is shown once).
/// Queue new ones with [`Session::flash`].
#[derive(Debug, Clone, Default)]
pub struct Flash {
    messages: Vec<cloakroom::Flash>,
}

impl Flash {
    /// The messages.
    pub fn messages(&self) -> &[cloakroom::Flash] {
        &self.messages
    }

    /// The messages, owned.
    pub fn into_messages(self) -> Vec<cloakroom::Flash> {
        self.messages
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Flash {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let messages = slot(parts)?.with(cloakroom::Session::take_flashes)?;
        Ok(Self { messages })
    }
}

/// A freshly masked CSRF token for this response: put it in a form field named
/// [`CSRF_FIELD`](crate::CSRF_FIELD) or a header named [`CSRF_HEADER`](crate::CSRF_HEADER).
#[derive(Clone)]
pub struct Csrf {
    token: String,
}

impl fmt::Debug for Csrf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Csrf(..)")
    }
}

impl Csrf {
    /// The masked token (different on every response).
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Csrf {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let token = slot(parts)?.with(cloakroom::Session::csrf_token)??;
        Ok(Self { token })
    }
}
