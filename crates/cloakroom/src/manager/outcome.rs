//! What a commit returns ([`Commit`], [`CookieUpdate`]) and what the verbs on other
//! sessions return ([`SessionInfo`], [`SignedOut`]).

use std::fmt;

use crate::id::IdHash;
use crate::record::Device;
#[cfg(doc)]
use crate::{session::Session, SessionManager};

/// What the response must do with the session cookie after a commit. Formatting the
/// `Set-Cookie` header (its `Domain`, `SameSite` and the rest) is the HTTP layer's work:
/// `cloakroom-tower` does it with the `cookie` crate.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieUpdate {
    /// Nothing: the browser's cookie is still right (or there is none and none is needed).
    Keep,
    /// Set the cookie to `value` for `max_age` seconds.
    Set {
        /// The cookie value (a token; a bearer secret, never log it).
        value: String,
        /// Seconds until the session's absolute deadline.
        max_age: u64,
    },
    /// Remove the cookie (`Max-Age=0`).
    Remove,
}

impl fmt::Debug for CookieUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keep => f.write_str("Keep"),
            Self::Set { value, max_age } => f
                .debug_struct("Set")
                .field("value_len", &value.len())
                .field("max_age", max_age)
                .finish(),
            Self::Remove => f.write_str("Remove"),
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Commit {
    /// What to do with the cookie.
    pub cookie: CookieUpdate,
    /// The session was ended (logged out, revoked, expired) by someone else while this
    /// request ran: its changes were dropped and the cookie is removed.
    pub ended_concurrently: bool,
    /// What to do with the anonymous CSRF cookie
    /// ([`SessionManager::csrf_cookie_name`]): set when an anonymous visitor got a CSRF
    /// token for the first time (or its cookie is due to be reissued), removed once the
    /// session has its own CSRF secret (a login) or when the request carried a bad one.
    /// Apply it with the same attributes as [`Commit::cookie`](Commit#structfield.cookie).
    pub csrf_cookie: CookieUpdate,
}

impl Commit {
    pub(super) fn cookie(cookie: CookieUpdate) -> Self {
        Self {
            cookie,
            ended_concurrently: false,
            csrf_cookie: CookieUpdate::Keep,
        }
    }

    pub(super) fn ended() -> Self {
        Self {
            cookie: CookieUpdate::Remove,
            ended_concurrently: true,
            csrf_cookie: CookieUpdate::Keep,
        }
    }
}

/// One session for a "your devices" page. Holds no data and no id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The id's hash: compare with [`Session::id_hash`] to mark the current session, and
    /// pass to [`SessionManager::end_session`] to end this one.
    pub id_hash: IdHash,
    /// When it was created (logged in).
    pub created: u64,
    /// When it was last written or touched.
    pub last_seen: u64,
    /// When it ends if idle.
    pub idle_deadline: u64,
    /// When it ends regardless.
    pub absolute_deadline: u64,
    /// What the application recorded about the device.
    pub device: Device,
    /// Whether a browser bound the session to a key it keeps on the device (Device Bound
    /// Session Credentials, [`Session::device_binding`]). Always false in hybrid mode, whose
    /// records keep no data.
    pub device_bound: bool,
}

/// What [`SessionManager::sign_out_others_of`] did, for [`Session::apply_signed_out`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOut {
    pub(crate) user: String,
    pub(crate) ended: u64,
    /// Client mode: the user's epoch after the bump, which the current session takes.
    pub(crate) new_epoch: Option<u64>,
}

impl SignedOut {
    /// How many sessions were ended (0 in client mode, where the epoch was bumped).
    pub fn ended(&self) -> u64 {
        self.ended
    }
}
