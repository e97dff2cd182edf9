//! Cloakroom's session model: ids, records, expiry policy, the [`Store`] trait and the
//! in-memory store, the session layer with its verbs, flash messages and CSRF.
//!
//! A [`SessionManager`] is built once from a [`KeyRing`] and a [`Store`] and shared by every
//! request. Per request, [`SessionManager::load`] turns the cookie value into a [`Session`]
//! (a working copy), the handler reads and changes it, and [`SessionManager::commit`] writes
//! the changed keys (the store merges them atomically) and says what to do with the cookie
//! ([`CookieUpdate`]); [`SessionManager::discard`] writes nothing, for a 5xx.
//!
//! ```
//! use std::sync::Arc;
//! use cloakroom::{CookieUpdate, Device, KeyRing, Level, MemoryStore, SessionManager};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let ring = KeyRing::generate().unwrap();
//! let sessions = SessionManager::new(&ring, Arc::new(MemoryStore::new()))?;
//!
//! let mut session = sessions.load(None).await?;
//! session.login("user-950", Device::new().with_label("laptop"))?;
//! session.flash(Level::Success, "Welcome back");
//! let CookieUpdate::Set { value: cookie, .. } = sessions.commit(session).await?.cookie else {
//!     panic!("a login sets a cookie");
//! };
//!
//! let mut session = sessions.load(Some(&cookie)).await?;
//! assert_eq!(session.user_id(), Some("user-950"));
//! assert_eq!(session.take_flashes()[0].message, "Welcome back");
//! let token = session.csrf_token()?;
//! assert!(session.verify_csrf(&token));
//!
//! // "Sign out everywhere": the cookie stops working at once.
//! sessions.revoke_user("user-950").await?;
//! assert!(sessions.load(Some(&cookie)).await?.is_new());
//! # Ok::<(), cloakroom::Error>(())
//! # }).unwrap();
//! ```
//!
//! The modes (server, client, hybrid), the policy defaults and their reasoning, and every
//! verb are explained in `docs/sessions.md`; the design is docs/architecture.md. Sessions
//! hold a user id, never permissions or roles: those are loaded per request.
//!
//! Secrets never appear in `Debug` output: a [`SessionId`] shows its hash's 8-digit prefix,
//! a [`CsrfSecret`] nothing, a [`Record`] or [`Session`] its keys but no values.
//!
//! [`Purger::spawn`] runs a task that deletes expired records every interval, so no store
//! grows without bound (`docs/stores.md` says what a purge does in each store).
//!
//! Feature `testing` adds the `conformance` module, the suite every [`Store`] must pass.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod csrf;
mod error;
mod flash;
mod id;
mod manager;
mod memory;
mod policy;
mod purge;
mod record;
mod session;
pub mod store;

#[cfg(feature = "testing")]
pub mod conformance;

// The session layer's errors; a store's own are `store::{Error, ErrorKind}`, which convert
// into these with `?`.
pub use error::{BoxError, Error, ErrorKind};
// Session ids and the hashes stores key records by.
pub use id::{IdHash, SessionId, SESSION_ID_LEN};
// Stores: the trait (its module `store` also holds the store error), the record they keep (and its one encoding), the memory store.
pub use memory::MemoryStore;
pub use record::{Device, Record, Value, RECORD_FORMAT};
pub use store::{
    apply_by_compare_and_swap, apply_changes, check_id_prefix, Applied, Changes, Stats, Store,
};
// Expiry policy and the clock.
pub use policy::{Clock, ManualClock, Policy, SystemClock};
// The background purger of expired records.
pub use purge::{
    PurgeConfig, PurgeHandle, PurgeStats, Purger, DEFAULT_PURGE_BATCH, DEFAULT_PURGE_FIRST_BACKOFF,
    DEFAULT_PURGE_INTERVAL, DEFAULT_PURGE_MAX_BACKOFF,
};
// The session layer: the manager, a request's working copy, commit results, the modes.
pub use manager::{
    Commit, CookieUpdate, SessionInfo, SessionManager, SignedOut, CSRF_COOKIE_SUFFIX,
    DEFAULT_COOKIE_NAME, MAX_COOKIE_CANDIDATES, MAX_COOKIE_LEN,
};
pub use session::{Mode, Session, RESERVED_PREFIX};
// The key ring a manager is built from, from the token crate.
pub use cloakroom_token::KeyRing;
// Flash messages and CSRF.
pub use csrf::{
    is_safe_method, unmask_csrf_token, CsrfSecret, OriginCheck, CSRF_SECRET_LEN, CSRF_TOKEN_LEN,
};
pub use flash::{Flash, Level};

// The examples of docs/sessions.md are compiled (and the first one run) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/sessions.md")]
struct SessionsGuide;
