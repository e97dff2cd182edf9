//! Django's cookie-based sessions. The recipe is in the docs of [`Django`].

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::codec::{self, JsonStyle};
use crate::error::{Error, ErrorKind, Result};
use crate::legacy::{Framework, LegacySession};
use crate::secret::Secret;
use crate::signer::{keys_api, FutureTimestamp, Keys, Timestamp, TimestampSigner};

/// The salt of `django.contrib.sessions.backends.signed_cookies`.
pub const DJANGO_DEFAULT_SALT: &str = "django.contrib.sessions.backends.signed_cookies";
/// Django's default `SESSION_COOKIE_AGE`: two weeks, in seconds.
pub const DJANGO_DEFAULT_MAX_AGE: u64 = 1_209_600;
/// Django's default `SESSION_COOKIE_NAME`.
pub const DJANGO_DEFAULT_COOKIE_NAME: &str = "sessionid";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

type HmacSha256 = Hmac<Sha256>;

/// Reads and writes Django `signed_cookies` sessions for one `SECRET_KEY`:
/// `django.contrib.sessions.backends.signed_cookies` with the default `JSONSerializer`
/// (Django 5.2), built on `django.core.signing`.
///
/// # The recipe, in Django's own words
///
/// - **Key derivation** (`signing.TimestampSigner`, `utils.crypto.salted_hmac`, algorithm
///   `sha256`): `key = SHA256(key_salt + SECRET_KEY)` with `key_salt = salt + "signer"` and
///   `salt = "django.contrib.sessions.backends.signed_cookies"`.
/// - **Payload** (`signing.dumps(session, compress=True, salt=..., serializer=JSONSerializer)`):
///   `json.dumps(session, separators=(",", ":"))` (insertion order, `ensure_ascii=True`) encoded
///   as Latin-1, then URL-safe base64 without padding (`b64_encode`). With `compress=True`,
///   Django zlib-compresses when that saves at least two bytes and prefixes the base64 with
///   `.` (the **compression flag**). We read both; we never compress when writing.
/// - **Timestamp**: `b62_encode(int(time.time()))`, base 62 over
///   `0-9A-Za-z`.
/// - **Signature** (`Signer`, separator `:`): `value = payload + ":" + timestamp`,
///   `signature = b64_encode(HMAC-SHA256(key, value))` (43 characters); the cookie is
///   `value + ":" + signature`.
/// - **Expiry** (`SessionStore.load`): `signing.loads(..., max_age=SESSION_COOKIE_AGE)`,
///   two weeks unless configured; expired when `now - timestamp > max_age`. Django does not
///   refuse timestamps in the future.
/// - **Fallback keys** (`SECRET_KEY_FALLBACKS`): every key verifies, `SECRET_KEY` signs.
///
/// With another salt the same type reads and writes anything `signing.dumps` makes with the
/// JSON serializer (for example `salt="django.core.signing"`, the default).
///
/// Django 4.x's `PickleSerializer` payloads are refused with [`ErrorKind::Unsupported`]:
/// unpickling runs code. Signatures made with the `sha1` algorithm of Django before 3.1 are
/// not accepted (Django 5 no longer accepts them either).
///
/// ```
/// use cloakroom_interop::{Django, Secret};
/// use serde_json::json;
///
/// let django = Django::new(Secret::from("django-insecure-test-secret-key-0123456789"))?;
/// let cookie = django.write(&json!({"_auth_user_id": "1"}), 1_700_000_000)?;
/// let session = django.open(&cookie, 1_700_000_060)?;
/// assert_eq!(session.data["_auth_user_id"], "1");
/// # Ok::<(), cloakroom_interop::Error>(())
/// ```
#[derive(Clone)]
pub struct Django {
    keys: Keys<HmacSha256>,
}

impl std::fmt::Debug for Django {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.keys.fmt_as("Django", f)
    }
}

impl Django {
    /// Django's defaults with this `SECRET_KEY`: the `signed_cookies` salt, two weeks, cookie
    /// `sessionid`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the secret is empty.
    pub fn new(secret_key: Secret) -> Result<Self> {
        let defaults = (
            DJANGO_DEFAULT_SALT,
            DJANGO_DEFAULT_MAX_AGE,
            DJANGO_DEFAULT_COOKIE_NAME,
        );
        let keys = Keys::new(
            secret_key,
            "the Django SECRET_KEY is empty",
            defaults,
            signer,
        )?;
        Ok(Self { keys })
    }

    keys_api! {
        salt: "Another salt, as passed to `signing.dumps(salt=...)`.";
        max_age: "The maximum age in seconds (`SESSION_COOKIE_AGE`); `None` disables the check.";
        cookie_name: "Another cookie name (`SESSION_COOKIE_NAME`); not part of the crypto.";
    }

    /// Django's `AbstractBaseUser.get_session_auth_hash()` for a user whose `password` column
    /// holds `password_hash`, under `SECRET_KEY`: `HMAC-SHA256(SHA256(key_salt + SECRET_KEY),
    /// password_hash)` in hex, with `key_salt =
    /// "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash"`. Django stores it in
    /// the session as `_auth_user_hash` and logs the session out when it no longer matches (the
    /// password changed).
    pub fn session_auth_hash(&self, password_hash: &str) -> String {
        session_auth_hash(&self.keys.secrets[0], password_hash)
    }

    /// Whether `hash` (a session's `_auth_user_hash`) matches `password_hash` under
    /// `SECRET_KEY` or one of the fallbacks, as `django.contrib.auth.get_user` checks it.
    /// Constant-time.
    pub fn verify_session_auth_hash(&self, password_hash: &str, hash: &str) -> bool {
        self.keys.secrets.iter().fold(false, |ok, secret| {
            let expected = session_auth_hash(secret, password_hash);
            ok | bool::from(expected.as_bytes().ct_eq(hash.as_bytes()))
        })
    }

    /// Opens a Django session cookie at unix time `now`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`] if no key verifies it, [`ErrorKind::Expired`] if it is older than
    /// the max age, [`ErrorKind::Unsupported`] if the authentic payload is pickle or not JSON,
    /// [`ErrorKind::TooLarge`] if it inflates past the limit.
    pub fn open(&self, cookie: &str, now: u64) -> Result<LegacySession> {
        let future = FutureTimestamp::Accepted;
        self.keys
            .open(Framework::Django, cookie, now, future, latin1_json)
    }

    /// Writes a session cookie Django accepts, signed at unix time `now` with `SECRET_KEY`.
    /// Deterministic; never compressed. Object keys keep the order the session gives them
    /// (Django keeps insertion order).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the session does not serialize to JSON.
    pub fn write<T: Serialize + ?Sized>(&self, session: &T, now: u64) -> Result<String> {
        let json = codec::to_json(session, JsonStyle::PYTHON_COMPACT)?;
        Ok(self.keys.signer.sign(&json, now))
    }
}

/// `JSONSerializer.loads`, which decodes Latin-1; what Django writes is ASCII, where Latin-1
/// and UTF-8 agree. Mirrored so a non-ASCII byte means what it means to Django.
fn latin1_json(data: Vec<u8>) -> Result<Value> {
    let text: String = if data.is_ascii() {
        String::from_utf8(data).map_err(|_| Error::invalid())?
    } else if data.first() == Some(&0x80) {
        return Err(Error::new(ErrorKind::Unsupported, codec::PICKLE_REFUSED));
    } else {
        data.iter().map(|&b| char::from(b)).collect()
    };
    codec::parse_json(text.as_bytes())
}

fn session_auth_hash(secret: &Secret, password_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash");
    h.update(secret.expose());
    let key: Zeroizing<[u8; 32]> = Zeroizing::new(h.finalize().into());
    let mut mac = HmacSha256::new_from_slice(&key[..]).expect("HMAC takes any key length");
    mac.update(password_hash.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `salted_hmac`'s key for each secret: `SHA256(salt + "signer" + secret)`.
fn signer(secrets: &[Secret], salt: &str) -> TimestampSigner<HmacSha256> {
    let keys = secrets
        .iter()
        .map(|secret| {
            let mut h = Sha256::new();
            h.update(salt.as_bytes());
            h.update(b"signer");
            h.update(secret.expose());
            Zeroizing::new(h.finalize().to_vec())
        })
        .collect();
    TimestampSigner::new(b':', Timestamp::Base62, keys)
}

/// Django's `b62_encode` for a non-negative number.
pub fn b62_encode(mut n: u64) -> String {
    if n == 0 {
        return "0".to_owned();
    }
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(BASE62[(n % 62) as usize]);
        n /= 62;
    }
    digits.reverse();
    String::from_utf8(digits).expect("base 62 digits are ASCII")
}

/// Django's `b62_decode` for a non-negative number; `None` for anything else.
pub fn b62_decode(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        let d = BASE62.iter().position(|&x| x == c)? as u64;
        acc.checked_mul(62)?.checked_add(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base62() {
        assert_eq!(b62_encode(1_700_000_000), "1r31eq");
        assert_eq!(b62_decode(b"1r31eq"), Some(1_700_000_000));
        assert_eq!(b62_encode(0), "0");
        assert_eq!(b62_decode(b"0"), Some(0));
        assert_eq!(b62_decode(b""), None);
        assert_eq!(b62_decode(b"-1"), None);
        assert_eq!(b62_decode(b"zzzzzzzzzzzzzzzz"), None);
        for n in [1, 61, 62, 3843, 3844, u64::MAX] {
            assert_eq!(b62_decode(b62_encode(n).as_bytes()), Some(n));
        }
    }

    #[test]
    fn expiry_rules() {
        let d = Django::new(Secret::from("k"))
            .unwrap()
            .with_max_age(Some(10));
        let c = d.write(&json!({"a": 1}), 1000).unwrap();
        assert!(d.open(&c, 1010).is_ok());
        assert!(
            d.open(&c, 900).is_ok(),
            "Django accepts timestamps in the future"
        );
        assert_eq!(d.open(&c, 1011).unwrap_err().kind(), ErrorKind::Expired);
    }

    #[test]
    fn fallbacks_and_salt() {
        let old = Django::new(Secret::from("old")).unwrap().with_salt("s");
        let c = old.write(&json!(1), 5).unwrap();
        let new = Django::new(Secret::from("new"))
            .unwrap()
            .with_fallback_secret(Secret::from("old"));
        assert_eq!(new.open(&c, 5).unwrap_err().kind(), ErrorKind::Invalid);
        let new = new.with_salt("s");
        assert_eq!(new.open(&c, 5).unwrap().data, json!(1));
    }
}
