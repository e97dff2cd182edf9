//! Flask's default session cookie. The recipe is in the docs of [`Flask`].

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::codec::{self, JsonStyle};
#[cfg(any(doc, test))]
use crate::error::ErrorKind;
use crate::error::Result;
use crate::legacy::{Framework, LegacySession};
use crate::secret::Secret;
use crate::signer::{keys_api, FutureTimestamp, Keys, Timestamp, TimestampSigner};

/// Flask's `SecureCookieSessionInterface.salt`.
pub const FLASK_DEFAULT_SALT: &str = "cookie-session";
/// Flask's default `PERMANENT_SESSION_LIFETIME`: 31 days, in seconds.
pub const FLASK_DEFAULT_MAX_AGE: u64 = 31 * 24 * 3600;
/// Flask's default `SESSION_COOKIE_NAME`.
pub const FLASK_DEFAULT_COOKIE_NAME: &str = "session";

type HmacSha1 = Hmac<Sha1>;

/// Reads and writes Flask session cookies for one `SECRET_KEY`: itsdangerous'
/// `URLSafeTimedSerializer` as configured by `flask.sessions.SecureCookieSessionInterface`
/// (Flask 3.1, itsdangerous 2.2).
///
/// # The recipe, in itsdangerous' own words
///
/// - **Key derivation** (`key_derivation="hmac"`, `digest_method=hashlib.sha1`):
///   `derived_key = HMAC-SHA1(key=SECRET_KEY, msg=salt)`, with `salt = "cookie-session"`
///   (`SecureCookieSessionInterface.salt`).
/// - **Payload** (`URLSafeSerializerMixin.dump_payload`): the session goes through Flask's
///   `TaggedJSONSerializer`, then `json.dumps(..., separators=(",", ":"), sort_keys=True,
///   ensure_ascii=True)`; the JSON is URL-safe base64 without `=` padding. If zlib makes it
///   shorter by at least two bytes, Flask compresses it and prefixes the base64 with `.`
///   (the **compression flag**). We read both; we never compress when writing.
/// - **Timestamp** (`TimestampSigner`): `int(time.time())` as big-endian bytes with leading
///   zero bytes stripped (`int_to_bytes`), URL-safe base64 without padding; at most 8 bytes.
/// - **Signature** (`Signer`, separator `.`): `value = payload + "." + timestamp`,
///   `signature = base64url(HMAC-SHA1(derived_key, value))` (27 characters);
///   the cookie is `value + "." + signature`.
/// - **Expiry** (`SecureCookieSessionInterface.open_session`): `loads(..., max_age =
///   PERMANENT_SESSION_LIFETIME)`, 31 days unless configured, whether or not the session was
///   marked permanent. `TimestampSigner.unsign` fails when `now - timestamp > max_age` and also
///   when `now - timestamp < 0` (a cookie from the future).
/// - **Fallback keys** (`SECRET_KEY_FALLBACKS`, Flask 3.1): every key verifies, the current
///   one signs.
///
/// Flask tags values JSON cannot hold (`{" t": [..]}` for a tuple, `{" b": "base64"}` for
/// bytes, `{" d": "HTTP date"}`, `{" u": "uuid hex"}`, `{" m": "markup"}`, `{" di": {..}}` for a
/// dict whose only key looks like a tag). [`Flask::open`] returns the tagged JSON as Flask
/// stored it, and [`Flask::write`] writes the value it is given as is, so a round trip keeps
/// the tags.
///
/// ```
/// use cloakroom_interop::{Flask, Secret};
/// use serde_json::json;
///
/// let flask = Flask::new(Secret::from("flask-test-secret-key"))?;
/// let cookie = flask.write(&json!({"user_id": 42}), 1_700_000_000)?;
/// let session = flask.open(&cookie, 1_700_000_060)?;
/// assert_eq!(session.data, json!({"user_id": 42}));
/// assert_eq!(session.issued_at, Some(1_700_000_000));
/// # Ok::<(), cloakroom_interop::Error>(())
/// ```
#[derive(Clone)]
pub struct Flask {
    keys: Keys<HmacSha1>,
}

impl std::fmt::Debug for Flask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.keys.fmt_as("Flask", f)
    }
}

impl Flask {
    /// Flask's defaults with this `SECRET_KEY`: salt `cookie-session`, max age 31 days,
    /// cookie `session`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the secret is empty (Flask refuses to sign with none).
    pub fn new(secret_key: Secret) -> Result<Self> {
        let defaults = (
            FLASK_DEFAULT_SALT,
            FLASK_DEFAULT_MAX_AGE,
            FLASK_DEFAULT_COOKIE_NAME,
        );
        let keys = Keys::new(
            secret_key,
            "the Flask SECRET_KEY is empty",
            defaults,
            signer,
        )?;
        Ok(Self { keys })
    }

    keys_api! {
        salt: "Another salt (`app.session_interface.salt`).";
        max_age: "The maximum age in seconds (`PERMANENT_SESSION_LIFETIME`); `None` disables"
            "the check, which Flask itself never does.";
        cookie_name: "Another cookie name (`SESSION_COOKIE_NAME`); only reported by"
            "[`Legacy::cookie_name`](crate::Legacy::cookie_name), not part of the crypto.";
    }

    /// Opens a Flask session cookie at unix time `now`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`] if no key verifies it, [`ErrorKind::Expired`] if it is older than
    /// the max age or dated in the future, [`ErrorKind::Unsupported`] if the authentic payload
    /// is not JSON, [`ErrorKind::TooLarge`] if it inflates past the limit.
    pub fn open(&self, cookie: &str, now: u64) -> Result<LegacySession> {
        // `TimestampSigner.unsign` refuses a cookie from the future too.
        let future = FutureTimestamp::Expired;
        let parse = |json: Vec<u8>| codec::parse_json(&json);
        self.keys.open(Framework::Flask, cookie, now, future, parse)
    }

    /// Writes a session cookie Flask accepts, signed at unix time `now` with the current key.
    /// Deterministic: the same session, key and `now` give the same cookie. Never compressed.
    ///
    /// The session is written as Flask writes it: keys sorted at every depth, compact, non-ASCII
    /// as `\uXXXX`. Pass Flask's tagged form for tuples, bytes and the like (see the module
    /// docs).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the session does not serialize to JSON.
    pub fn write<T: Serialize + ?Sized>(&self, session: &T, now: u64) -> Result<String> {
        let style = JsonStyle {
            sort_keys: true,
            ..JsonStyle::PYTHON_COMPACT
        };
        let json = codec::to_json(session, style)?;
        Ok(self.keys.signer.sign(&json, now))
    }
}

/// itsdangerous' `key_derivation="hmac"`: `HMAC-SHA1(key=secret, msg=salt)` for each secret.
fn signer(secrets: &[Secret], salt: &str) -> TimestampSigner<HmacSha1> {
    let keys = secrets
        .iter()
        .map(|secret| {
            let mut mac =
                HmacSha1::new_from_slice(secret.expose()).expect("HMAC takes any key length");
            mac.update(salt.as_bytes());
            Zeroizing::new(mac.finalize().into_bytes().to_vec())
        })
        .collect();
    TimestampSigner::new(b'.', Timestamp::Base64Bytes, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_rules() {
        let f = Flask::new(Secret::from("k"))
            .unwrap()
            .with_max_age(Some(100));
        let c = f.write(&json!({"a": 1}), 1000).unwrap();
        assert!(f.open(&c, 1000).is_ok());
        assert!(f.open(&c, 1100).is_ok());
        assert_eq!(f.open(&c, 1101).unwrap_err().kind(), ErrorKind::Expired);
        assert_eq!(f.open(&c, 999).unwrap_err().kind(), ErrorKind::Expired);
        let f = f.with_max_age(None);
        assert!(f.open(&c, 10_000_000).is_ok());
    }

    #[test]
    fn fallback_keys_verify_but_never_sign() {
        let old = Flask::new(Secret::from("old")).unwrap();
        let c = old.write(&json!({"a": 1}), 1000).unwrap();
        let new = Flask::new(Secret::from("new")).unwrap();
        assert_eq!(new.open(&c, 1000).unwrap_err().kind(), ErrorKind::Invalid);
        let new = new.with_fallback_secret(Secret::from("old"));
        assert_eq!(new.open(&c, 1000).unwrap().data, json!({"a": 1}));
        assert_eq!(
            old.open(&new.write(&json!({}), 5).unwrap(), 5)
                .unwrap_err()
                .kind(),
            ErrorKind::Invalid
        );
    }

    #[test]
    fn zero_timestamp_is_empty() {
        let f = Flask::new(Secret::from("k")).unwrap().with_max_age(None);
        let c = f.write(&json!({}), 0).unwrap();
        assert!(c.contains(".."));
        assert_eq!(f.open(&c, 0).unwrap().issued_at, Some(0));
    }

    #[test]
    fn debug_hides_keys() {
        let f = Flask::new(Secret::from("supersecret")).unwrap();
        let d = format!("{f:?}");
        assert!(!d.contains("supersecret"));
        assert!(d.contains("cookie-session"));
    }
}
