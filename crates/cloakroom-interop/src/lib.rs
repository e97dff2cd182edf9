//! Read and write the session cookies of Flask, Pyramid, Django and Rails, so a site can move
//! to Rust without logging anyone out: accept the old cookie once, answer with a Cloakroom
//! cookie (see `docs/interop.md`).
//!
//! One type per framework ([`Flask`], [`Pyramid`], [`Django`], [`Rails`]) holds the app's
//! secret and settings, derives its keys once, and has `open` (cookie to [`LegacySession`],
//! applying the framework's own expiry rule) and `write` (a cookie the framework accepts).
//! [`RailsSigned`] does the same for Rails' signed cookies (`cookies.signed[...]`).
//! [`Legacy`] wraps any of the four session types behind one `open`, for the migration
//! middleware and `cloakroom import`. Each type's docs give the exact recipe in the
//! framework's own words.
//!
//! Like the token codec this crate is sans-IO: it reads no clock (every call takes `now` in
//! unix seconds), no file and no socket. Only JSON serializers are supported: payloads made by
//! pickle or Ruby Marshal are refused with [`ErrorKind::Unsupported`] and the reason, because
//! loading them runs code chosen by whoever wrote the cookie. Verification failures say
//! `invalid` or `expired` and nothing more; MACs and tags are compared in constant time;
//! secrets are zeroized and never printed.
//!
//! ```
//! use cloakroom_interop::{ErrorKind, Flask, Legacy, Secret};
//! use serde_json::json;
//!
//! // A cookie from the Flask test vectors: {"csrf": "abc", "user_id": 42}, signed at 1700000000.
//! let cookie = "eyJjc3JmIjoiYWJjIiwidXNlcl9pZCI6NDJ9.ZVPxAA.mSrgJUE0_OdTSBPZYvc717xY328";
//! let flask = Flask::new(Secret::from("flask-test-secret-key"))?;
//! let legacy = Legacy::from(flask);
//!
//! let session = legacy.open(cookie, 1_700_000_060)?;
//! assert_eq!(session.data, json!({"csrf": "abc", "user_id": 42}));
//! assert_eq!(session.issued_at, Some(1_700_000_000));
//!
//! // Flask's PERMANENT_SESSION_LIFETIME (31 days) has passed:
//! let late = legacy.open(cookie, 1_700_000_000 + 32 * 86_400).unwrap_err();
//! assert_eq!(late.kind(), ErrorKind::Expired);
//! assert_eq!(late.to_string(), "expired");
//! # Ok::<(), cloakroom_interop::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod codec;
mod django;
mod error;
mod flask;
mod legacy;
mod pyramid;
mod rails;
mod secret;
mod signer;

// The formats, one type per framework.
pub use django::{
    b62_decode, b62_encode, Django, DJANGO_DEFAULT_COOKIE_NAME, DJANGO_DEFAULT_MAX_AGE,
    DJANGO_DEFAULT_SALT,
};
pub use flask::{Flask, FLASK_DEFAULT_COOKIE_NAME, FLASK_DEFAULT_MAX_AGE, FLASK_DEFAULT_SALT};
pub use pyramid::{
    Pyramid, PyramidHash, PYRAMID_DEFAULT_COOKIE_NAME, PYRAMID_DEFAULT_SALT,
    PYRAMID_DEFAULT_TIMEOUT,
};
pub use rails::{
    Rails, RailsEnvelope, RailsSigned, RailsVersion, RAILS_DEFAULT_SALT, RAILS_KDF_ITERATIONS,
    RAILS_SIGNED_COOKIE_SALT,
};
// Any of them behind one `open`, and what it returns.
pub use legacy::{Framework, Legacy, LegacySession};
// The framework secret.
pub use secret::Secret;
// Errors.
pub use error::{Error, ErrorKind, Result};
// Limits.
pub use codec::{MAX_COOKIE_LEN, MAX_PAYLOAD_LEN};
