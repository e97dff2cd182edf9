//! Pyramid's signed cookie sessions. The recipe is in the docs of [`Pyramid`].

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::codec::{self, JsonStyle, MAX_COOKIE_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::legacy::{Framework, LegacySession};
use crate::secret::Secret;

/// `SignedCookieSessionFactory`'s default salt.
pub const PYRAMID_DEFAULT_SALT: &str = "pyramid.session.";
/// `SignedCookieSessionFactory`'s default `timeout`: 20 minutes, in seconds.
pub const PYRAMID_DEFAULT_TIMEOUT: u64 = 1200;
/// `SignedCookieSessionFactory`'s default `cookie_name`.
pub const PYRAMID_DEFAULT_COOKIE_NAME: &str = "session";

/// The `hashalg` of a `SignedCookieSessionFactory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PyramidHash {
    /// `"sha512"`, Pyramid's default: a 64-byte MAC.
    #[default]
    Sha512,
    /// `"sha384"`: a 48-byte MAC.
    Sha384,
    /// `"sha256"`: a 32-byte MAC.
    Sha256,
    /// `"sha1"`: a 20-byte MAC.
    Sha1,
}

impl PyramidHash {
    /// The MAC's length in bytes (`digest_size`).
    pub fn digest_size(self) -> usize {
        match self {
            Self::Sha512 => 64,
            Self::Sha384 => 48,
            Self::Sha256 => 32,
            Self::Sha1 => 20,
        }
    }

    fn mac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        macro_rules! hmac {
            ($d:ty) => {{
                let mut m = Hmac::<$d>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            Self::Sha512 => hmac!(Sha512),
            Self::Sha384 => hmac!(Sha384),
            Self::Sha256 => hmac!(Sha256),
            Self::Sha1 => hmac!(Sha1),
        }
    }
}

/// Reads and writes Pyramid `SignedCookieSessionFactory` cookies for one `secret`
/// (Pyramid 2.1 with its default JSON serializer, which signs through webob 1.8's
/// `SignedSerializer`).
///
/// # The recipe, in Pyramid's and webob's own words
///
/// - **Key** (`SignedSerializer.salted_secret`): `bytes_(salt) + bytes_(secret)`, used
///   directly as the HMAC key; `salt = "pyramid.session."`, `hashalg = "sha512"` by default.
///   webob's `bytes_` encodes text as **Latin-1**, falling back to UTF-8 for both only when one
///   of them has a character beyond U+00FF: a secret `"sé"` is the bytes `73 e9`, not
///   `73 c3 a9`. Give text secrets as text ([`Secret::text`], `From<&str>`) and bytes
///   secrets as bytes ([`Secret::new`]) to get this right.
/// - **State** (`BaseCookieSessionFactory._set_cookie`): the tuple `(accessed, created,
///   dict(session))` serialized by `JSONSerializer` = `json.dumps(appstruct)` with Python's
///   default separators `", "` and `": "`, `ensure_ascii=True`, keys in insertion order, UTF-8.
///   `accessed` is `int(time.time())` when the session changed; `created` is the float
///   `time.time()` when it was made.
/// - **Signature and envelope** (`SignedSerializer.dumps`): `cookie = base64url(HMAC-hashalg(
///   salted_secret, cstruct) + cstruct)` with the `=` padding stripped. No separator: the
///   first `digest_size` bytes (64 for SHA-512) are the MAC. No timestamp outside the MAC, no
///   compression flag.
/// - **Expiry** (`CookieSession.__init__`): with `timeout` (1200 seconds by default) the
///   session is dropped when `now - accessed > timeout`; with `timeout=None` never. Pyramid
///   does not refuse timestamps in the future.
///
/// `PickleSerializer` payloads (the default before Pyramid 2.0) are refused with
/// [`ErrorKind::Unsupported`]: unpickling runs code.
///
/// ```
/// use cloakroom_interop::{Pyramid, Secret};
/// use serde_json::json;
///
/// let pyramid = Pyramid::new(Secret::from("pyramid-test-secret"))?;
/// let cookie = pyramid.write(&json!({"user_id": 42}), 1_700_000_000)?;
/// let session = pyramid.open(&cookie, 1_700_000_060)?;
/// assert_eq!(session.data, json!({"user_id": 42}));
/// assert_eq!(session.accessed_at, Some(1_700_000_000));
/// # Ok::<(), cloakroom_interop::Error>(())
/// ```
#[derive(Clone)]
pub struct Pyramid {
    secret: Secret,
    salted_secret: Zeroizing<Vec<u8>>,
    salt: String,
    hash: PyramidHash,
    timeout: Option<u64>,
    cookie_name: String,
}

impl std::fmt::Debug for Pyramid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            secret: _,
            salted_secret: _,
            salt,
            hash,
            timeout,
            cookie_name,
        } = self;
        f.debug_struct("Pyramid")
            .field("salt", salt)
            .field("hash", hash)
            .field("timeout", timeout)
            .field("cookie_name", cookie_name)
            .finish_non_exhaustive()
    }
}

impl Pyramid {
    /// Pyramid's defaults with this `secret`: salt `pyramid.session.`, SHA-512, timeout 1200 s,
    /// cookie `session`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the secret is empty.
    pub fn new(secret: Secret) -> Result<Self> {
        let mut p = Self {
            secret: secret.non_empty("the Pyramid secret is empty")?,
            salted_secret: Zeroizing::new(Vec::new()),
            salt: PYRAMID_DEFAULT_SALT.to_owned(),
            hash: PyramidHash::Sha512,
            timeout: Some(PYRAMID_DEFAULT_TIMEOUT),
            cookie_name: PYRAMID_DEFAULT_COOKIE_NAME.to_owned(),
        };
        p.rederive();
        Ok(p)
    }

    /// webob's `salted_secret = bytes_(salt) + bytes_(secret)`: Latin-1 first, and UTF-8 for
    /// both if either text does not fit Latin-1. A byte-string secret is used as is.
    fn rederive(&mut self) {
        let secret = self.secret.expose();
        let secret_latin1 = if self.secret.is_text() {
            std::str::from_utf8(secret)
                .ok()
                .and_then(latin1)
                .map(Zeroizing::new)
        } else {
            Some(Zeroizing::new(secret.to_vec()))
        };
        let mut k = Zeroizing::new(Vec::with_capacity(self.salt.len() + secret.len()));
        match (latin1(&self.salt), secret_latin1) {
            (Some(salt), Some(secret)) => {
                k.extend_from_slice(&salt);
                k.extend_from_slice(&secret);
            }
            _ => {
                k.extend_from_slice(self.salt.as_bytes());
                k.extend_from_slice(secret);
            }
        }
        self.salted_secret = k;
    }

    /// Another `salt`.
    #[must_use]
    pub fn with_salt(mut self, salt: impl Into<String>) -> Self {
        self.salt = salt.into();
        self.rederive();
        self
    }

    /// Another `hashalg`.
    #[must_use]
    pub fn with_hash(mut self, hash: PyramidHash) -> Self {
        self.hash = hash;
        self
    }

    /// The inactivity `timeout` in seconds; `None` as in `timeout=None`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<u64>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Another `cookie_name`; not part of the crypto.
    #[must_use]
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The inactivity timeout in seconds, `None` for `timeout=None`.
    pub fn timeout(&self) -> Option<u64> {
        self.timeout
    }

    /// Opens a Pyramid session cookie at unix time `now`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`] if the MAC does not verify, [`ErrorKind::Expired`] if it was not
    /// accessed within the timeout, [`ErrorKind::Unsupported`] if the authentic payload is
    /// pickle, not JSON, or not `[accessed, created, state]`.
    pub fn open(&self, cookie: &str, now: u64) -> Result<LegacySession> {
        if cookie.len() > MAX_COOKIE_LEN {
            return Err(Error::invalid());
        }
        let fstruct = codec::b64url_decode(cookie.as_bytes()).ok_or_else(Error::invalid)?;
        let n = self.hash.digest_size();
        if fstruct.len() < n {
            return Err(Error::invalid());
        }
        let (sig, cstruct) = fstruct.split_at(n);
        let expected = self.hash.mac(&self.salted_secret, cstruct);
        if !bool::from(expected.ct_eq(sig)) {
            return Err(Error::invalid());
        }
        // Authentic from here on.
        let value = codec::parse_json(cstruct)?;
        let not_a_session = || {
            Error::new(
                ErrorKind::Unsupported,
                "the cookie is authentic but does not hold Pyramid's [accessed, created, state]",
            )
        };
        let Value::Array(mut parts) = value else {
            return Err(not_a_session());
        };
        if parts.len() != 3 {
            return Err(not_a_session());
        }
        let state = parts.pop().expect("three parts");
        let created = parts[1].as_f64().ok_or_else(not_a_session)?;
        let renewed = parts[0].as_f64().ok_or_else(not_a_session)?;
        if let Some(timeout) = self.timeout {
            if now as f64 - renewed > timeout as f64 {
                return Err(Error::expired());
            }
        }
        Ok(LegacySession {
            framework: Framework::Pyramid,
            data: state,
            issued_at: Some(secs(created)),
            accessed_at: Some(secs(renewed)),
            expires_at: self
                .timeout
                .map(|t| secs(renewed + t as f64).saturating_add(1)),
        })
    }

    /// Writes a cookie Pyramid accepts for a session made and changed at unix time `now`:
    /// `[now, now.0, state]`. Deterministic. Object keys keep the order the state gives them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the state does not serialize to JSON.
    pub fn write<T: Serialize + ?Sized>(&self, state: &T, now: u64) -> Result<String> {
        self.write_at(state, now, now as f64)
    }

    /// Like [`Pyramid::write`] with the two times given apart: `accessed` (an integer, as
    /// Pyramid writes it) and `created` (a float, as `time.time()` gives it).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the state does not serialize to JSON or `created` is not
    /// finite.
    pub fn write_at<T: Serialize + ?Sized>(
        &self,
        state: &T,
        accessed: u64,
        created: f64,
    ) -> Result<String> {
        if !created.is_finite() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "created is not a finite number",
            ));
        }
        let state = codec::to_json(state, JsonStyle::PYTHON_DEFAULT)?;
        let mut cstruct = format!("[{accessed}, {}, ", python_float(created)).into_bytes();
        cstruct.extend_from_slice(&state);
        cstruct.push(b']');
        let mut fstruct = self.hash.mac(&self.salted_secret, &cstruct);
        fstruct.extend_from_slice(&cstruct);
        Ok(codec::b64url_encode(&fstruct))
    }
}

impl Pyramid {
    /// Signs arbitrary bytes as the serialized state, so tests and fuzz targets reach the
    /// parsing that happens behind the MAC. Not a way to make sessions: use [`Pyramid::write`].
    #[cfg(feature = "test-vectors")]
    pub fn sign_for_tests(&self, cstruct: &[u8]) -> String {
        let mut fstruct = self.hash.mac(&self.salted_secret, cstruct);
        fstruct.extend_from_slice(cstruct);
        codec::b64url_encode(&fstruct)
    }
}

/// Python's `s.encode("latin-1")`, or `None` where a character does not fit.
fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// Floors a float time to whole seconds, clamping what cannot be a unix time.
fn secs(t: f64) -> u64 {
    if t.is_finite() && t > 0.0 {
        t.floor().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Python's `repr(float)` for the times Pyramid writes: `1700000000.0`, `1700000000.25`.
fn python_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn webob_encodes_text_secrets_as_latin1() {
        let key = |p: &Pyramid| p.salted_secret.to_vec();
        let p = Pyramid::new(Secret::from("sé")).unwrap().with_salt("");
        assert_eq!(key(&p), b"s\xe9");
        let p = Pyramid::new(Secret::new("sé")).unwrap().with_salt("");
        assert_eq!(key(&p), "sé".as_bytes());
        let p = Pyramid::new(Secret::from("s€")).unwrap().with_salt("é");
        assert_eq!(key(&p), "és€".as_bytes());
    }

    #[test]
    fn floats_like_python() {
        assert_eq!(python_float(1_700_000_000.0), "1700000000.0");
        assert_eq!(python_float(1_700_000_000.25), "1700000000.25");
    }

    #[test]
    fn timeout_rules() {
        let p = Pyramid::new(Secret::from("k"))
            .unwrap()
            .with_timeout(Some(10));
        let c = p.write_at(&json!({}), 1000, 900.5).unwrap();
        let s = p.open(&c, 1010).unwrap();
        assert_eq!(
            (s.issued_at, s.accessed_at, s.expires_at),
            (Some(900), Some(1000), Some(1011))
        );
        assert!(
            p.open(&c, 10).is_ok(),
            "Pyramid accepts times in the future"
        );
        assert_eq!(p.open(&c, 1011).unwrap_err().kind(), ErrorKind::Expired);
        assert!(p.clone().with_timeout(None).open(&c, u64::MAX).is_ok());
    }

    #[test]
    fn hash_algorithms_differ() {
        let p = Pyramid::new(Secret::from("k")).unwrap();
        for h in [PyramidHash::Sha384, PyramidHash::Sha256, PyramidHash::Sha1] {
            let q = p.clone().with_hash(h);
            let c = q.write(&json!({"a": 1}), 5).unwrap();
            assert_eq!(q.open(&c, 5).unwrap().data, json!({"a": 1}));
            assert_eq!(p.open(&c, 5).unwrap_err().kind(), ErrorKind::Invalid);
        }
    }

    #[test]
    fn authentic_but_not_a_session() {
        let p = Pyramid::new(Secret::from("k")).unwrap();
        let mut f = p.hash.mac(&p.salted_secret, b"[1, 2]");
        f.extend_from_slice(b"[1, 2]");
        let c = codec::b64url_encode(&f);
        assert_eq!(p.open(&c, 1).unwrap_err().kind(), ErrorKind::Unsupported);
    }
}
