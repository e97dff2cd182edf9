//! Cloakroom sessions for axum and tower: a [`SessionLayer`] that commits only on success and
//! never loses a concurrent write, the extractors [`Session`], [`Flash`], [`Csrf`] and
//! [`CurrentUser`], and a [`CsrfLayer`].
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use cloakroom_tower::{KeyRing, MemoryStore, Session, SessionLayer};
//!
//! async fn visits(session: Session) -> Result<String, cloakroom_tower::Error> {
//!     let n = session.get::<u64>("visits")?.unwrap_or(0) + 1;
//!     session.insert("visits", &n)?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! let sessions = SessionLayer::builder()
//!     .key_ring(&KeyRing::generate()?) // in production: KeyRing::load(path)
//!     .store(Arc::new(MemoryStore::new())) // or SQLite, Redis, ...
//!     .build()?;
//! let app: Router = Router::new().route("/", get(visits)).layer(sessions);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the layer does per request (docs/architecture.md, "Commit semantics"):
//! - The handler works on a copy of the session. On a 5xx response or a panic (answered
//!   500) nothing is written. Otherwise the changed keys are applied to the latest stored
//!   version under compare-and-swap, so concurrent requests touching different keys both
//!   keep their writes, and a session logged out meanwhile stays dead.
//! - `Set-Cookie` is sent only when the cookie changes (a login, a new session, a logout).
//! - An anonymous visitor's CSRF token is tied to a signed cookie of its own
//!   (`__Host-session-csrf`), so rendering forms for visitors stores nothing; a login
//!   removes that cookie and the session's own secret takes over.
//! - A store that is down answers 503 with `Retry-After`, never an anonymous or stale user;
//!   the next request after it returns works again.
//! - A cookie that would exceed 4096 bytes (client and hybrid modes) answers 500 and logs
//!   why, never a truncated cookie. A forged, tampered or expired cookie is an anonymous
//!   session, not an error.
//! - The cookie is `__Host-session; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=..` by
//!   default; [`Builder::with_cookie_domain`], [`Builder::with_same_site`] and
//!   [`Builder::with_browser_session_cookie`] change it, and plain http for local
//!   development is [`Builder::insecure_plain_http_for_local_development`]. `Cookie` and
//!   `Set-Cookie` are marked sensitive, and logs name sessions by their hash prefix only.
//! - Every cookie of the session's name is tried until one opens, so a cookie planted by a
//!   sibling subdomain cannot log the user out.
//! - The layer serves any request and response body (`Response<B>` with `B: Default`) and
//!   passes the inner service's errors through; a handler cut off by a timeout writes
//!   nothing.
//! - With [`Builder::with_device_binding`] a browser that supports Device Bound Session
//!   Credentials binds its session to a key it keeps on the device; a request of a bound
//!   session then needs a short-lived bound cookie that only the key renews, and without one
//!   is served as logged out (docs/device-binding.md).
//!
//! Layer order in axum: the last `.layer` is the outermost, so
//! `.layer(CsrfLayer::new([origin])).layer(sessions)`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod cookie;
mod csrf;
mod dbsc;
mod error;
mod extract;
mod layer;
#[cfg(feature = "migrate")]
mod migrate;
mod proxy;
mod user;

// The layer, its builder (and the typestates that make a key ring and a store required).
pub use layer::{
    Builder, NeedsKeyRing, NeedsStore, SessionLayer, SessionService, PLAIN_HTTP_COOKIE_NAME,
};
// Device Bound Session Credentials (W3C DBSC), given to `Builder::with_device_binding`.
pub use dbsc::DeviceBinding;
// Cookie and proxy options of the builder.
pub use cookie::SameSite;
pub use proxy::ForwardedHeader;
// Extractors.
pub use extract::{Csrf, Flash, Session};
pub use user::{CurrentUser, UserLoader};
// Moving users over from another framework's session cookie (feature `migrate`).
#[cfg(feature = "migrate")]
pub use cloakroom_interop;
#[cfg(feature = "migrate")]
pub use migrate::{LegacyMigration, MigratedLogin};
// CSRF.
pub use csrf::{CsrfLayer, CsrfService, CSRF_FIELD, CSRF_HEADER, DEFAULT_MAX_FORM_BYTES};
// Errors (they answer as HTTP responses).
pub use error::{Error, ErrorKind, RETRY_AFTER_SECS};
// What an application needs from the session crate, so one import does.
pub use async_trait::async_trait;
pub use cloakroom;
pub use cloakroom::{
    BoxError, Device, IdHash, KeyRing, Level, MemoryStore, Mode, Policy, SessionInfo, Store,
};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
