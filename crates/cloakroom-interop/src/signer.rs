//! The timestamped signature Flask (itsdangerous) and Django (`django.core.signing`) share:
//! `payload SEP timestamp SEP base64url(HMAC(key, payload SEP timestamp))`, where a payload
//! that starts with `.` is zlib-compressed base64url and any other is plain base64url.
//!
//! What differs between the two is a parameter here: the separator, the HMAC's hash, and how
//! the timestamp is spelled. The expiry rule and what the payload means stay with each
//! framework.

use std::marker::PhantomData;

use hmac::digest::KeyInit;
use hmac::Mac;
use zeroize::Zeroizing;

use serde_json::Value;

use crate::codec::{self, MAX_COOKIE_LEN};
use crate::error::{Error, Result};
use crate::legacy::{Framework, LegacySession};
use crate::secret::Secret;

/// How the signing time is written between the two separators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timestamp {
    /// itsdangerous: the big-endian bytes with leading zero bytes stripped, base64url, at most 8.
    Base64Bytes,
    /// Django: base 62 over `0-9A-Za-z`.
    Base62,
}

impl Timestamp {
    fn encode(self, t: u64) -> String {
        match self {
            Self::Base64Bytes => {
                let bytes = t.to_be_bytes();
                let first = bytes.iter().position(|&b| b != 0).unwrap_or(8);
                codec::b64url_encode(&bytes[first..])
            }
            Self::Base62 => crate::django::b62_encode(t),
        }
    }

    fn decode(self, s: &[u8]) -> Option<u64> {
        match self {
            Self::Base64Bytes => {
                let bytes = codec::b64url_decode(s)?;
                if bytes.len() > 8 {
                    return None;
                }
                Some(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
            }
            Self::Base62 => crate::django::b62_decode(s),
        }
    }
}

/// A verified cookie: its signing time and its payload, base64-decoded and inflated.
#[derive(Debug)]
pub(crate) struct Unsigned {
    pub(crate) timestamp: u64,
    pub(crate) payload: Vec<u8>,
}

/// Signs and verifies with a list of derived keys (the current one first, then the fallbacks
/// that verify but never sign), with the MAC `M` (`Hmac<Sha1>` for Flask, `Hmac<Sha256>` for
/// Django).
#[derive(Clone)]
pub(crate) struct TimestampSigner<M> {
    separator: u8,
    timestamp: Timestamp,
    keys: Vec<Zeroizing<Vec<u8>>>,
    hash: PhantomData<M>,
}

impl<M> std::fmt::Debug for TimestampSigner<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimestampSigner")
            .field("separator", &char::from(self.separator))
            .field("timestamp", &self.timestamp)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl<M: Mac + KeyInit> TimestampSigner<M> {
    /// A signer with these derived keys; `keys` must hold at least the current key.
    pub(crate) fn new(separator: u8, timestamp: Timestamp, keys: Vec<Zeroizing<Vec<u8>>>) -> Self {
        debug_assert!(!keys.is_empty(), "a signer needs its current key");
        Self {
            separator,
            timestamp,
            keys,
            hash: PhantomData,
        }
    }

    /// How many keys verify (the current one and the fallbacks).
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn mac(key: &[u8]) -> M {
        <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
    }

    /// Verifies `cookie` with every key, then splits off the timestamp and decodes the payload.
    /// Nothing behind the MAC is read before it verifies.
    ///
    /// # Errors
    ///
    /// `Invalid` for a cookie too long, malformed or not verified by any key; what
    /// [`codec::inflate`] says for a compressed payload that inflates too far.
    pub(crate) fn unsign(&self, cookie: &[u8]) -> Result<Unsigned> {
        if cookie.len() > MAX_COOKIE_LEN {
            return Err(Error::invalid());
        }
        let (value, sig) = rsplit(cookie, self.separator).ok_or_else(Error::invalid)?;
        let sig = codec::b64url_decode(sig).ok_or_else(Error::invalid)?;
        let verified = self.keys.iter().any(|key| {
            let mut mac = Self::mac(key);
            mac.update(value);
            mac.verify_slice(&sig).is_ok()
        });
        if !verified {
            return Err(Error::invalid());
        }
        // Authentic from here on.
        let (payload, ts) = rsplit(value, self.separator).ok_or_else(Error::invalid)?;
        let timestamp = self.timestamp.decode(ts).ok_or_else(Error::invalid)?;
        let (compressed, payload) = match payload.strip_prefix(b".") {
            Some(rest) => (true, rest),
            None => (false, payload),
        };
        let mut payload = codec::b64url_decode(payload).ok_or_else(Error::invalid)?;
        if compressed {
            payload = codec::inflate(&payload)?;
        }
        Ok(Unsigned { timestamp, payload })
    }

    /// `base64url(payload) SEP timestamp SEP signature`, with the current key. Never
    /// compressed; deterministic.
    pub(crate) fn sign(&self, payload: &[u8], now: u64) -> String {
        let mut value = codec::b64url_encode(payload);
        value.push(char::from(self.separator));
        value.push_str(&self.timestamp.encode(now));
        self.sign_value(value)
    }

    /// Appends `SEP signature` to an already formed `value` (`payload SEP timestamp`).
    pub(crate) fn sign_value(&self, mut value: String) -> String {
        let mut mac = Self::mac(&self.keys[0]);
        mac.update(value.as_bytes());
        let sig = mac.finalize().into_bytes();
        value.push(char::from(self.separator));
        value.push_str(&codec::b64url_encode(&sig));
        value
    }
}

/// Splits at the last `sep`, like Python's `rsplit(sep, 1)`.
pub(crate) fn rsplit(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().rposition(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Hmac;

    type Sha1 = Hmac<sha1::Sha1>;
    type Sha256 = Hmac<sha2::Sha256>;

    fn keys(k: &[&[u8]]) -> Vec<Zeroizing<Vec<u8>>> {
        k.iter().map(|k| Zeroizing::new(k.to_vec())).collect()
    }

    #[test]
    fn a_signed_value_unsigns_with_its_time_and_payload() {
        for (sep, ts) in [(b'.', Timestamp::Base64Bytes), (b':', Timestamp::Base62)] {
            let s = TimestampSigner::<Sha256>::new(sep, ts, keys(&[b"k"]));
            let c = s.sign(b"{\"a\":1}", 1_700_000_000);
            let u = s.unsign(c.as_bytes()).unwrap();
            assert_eq!(u.timestamp, 1_700_000_000);
            assert_eq!(u.payload, b"{\"a\":1}");
        }
    }

    #[test]
    fn any_changed_byte_is_invalid() {
        let s = TimestampSigner::<Sha1>::new(b'.', Timestamp::Base64Bytes, keys(&[b"k"]));
        let c = s.sign(b"payload", 42).into_bytes();
        for i in 0..c.len() {
            let mut t = c.clone();
            t[i] ^= 0x01;
            assert!(s.unsign(&t).is_err(), "byte {i} changed and still verified");
        }
    }

    #[test]
    fn fallback_keys_verify_and_the_current_key_signs() {
        let old = TimestampSigner::<Sha1>::new(b'.', Timestamp::Base64Bytes, keys(&[b"old"]));
        let new =
            TimestampSigner::<Sha1>::new(b'.', Timestamp::Base64Bytes, keys(&[b"new", b"old"]));
        assert_eq!(new.key_count(), 2);
        assert!(new.unsign(old.sign(b"x", 1).as_bytes()).is_ok());
        assert!(old.unsign(new.sign(b"x", 1).as_bytes()).is_err());
    }

    #[test]
    fn a_timestamp_of_more_than_eight_bytes_is_invalid() {
        let s = TimestampSigner::<Sha1>::new(b'.', Timestamp::Base64Bytes, keys(&[b"k"]));
        let nine = codec::b64url_encode(&[1; 9]);
        let c = s.sign_value(format!("{}.{nine}", codec::b64url_encode(b"{}")));
        assert!(s.unsign(c.as_bytes()).is_err());
    }
}

/// What a max age makes of a cookie signed after `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FutureTimestamp {
    /// Expired, as itsdangerous has it (`now - timestamp < 0`).
    Expired,
    /// Accepted, as Django has it.
    Accepted,
}

/// What the itsdangerous-style readers (Flask, Django) hold alike: their secrets (the current
/// one first, then the fallbacks), the salt and the signer derived from both, the max age
/// and the cookie's name.
#[derive(Clone)]
pub(crate) struct Keys<M> {
    /// Signs with the key derived from the current secret, verifies with all of them.
    pub(crate) signer: TimestampSigner<M>,
    pub(crate) secrets: Vec<Secret>,
    pub(crate) salt: String,
    pub(crate) max_age: Option<u64>,
    pub(crate) cookie_name: String,
    derive: fn(&[Secret], &str) -> TimestampSigner<M>,
}

impl<M: Mac + KeyInit> Keys<M> {
    /// `secret` with the framework's defaults; `empty` is the error for an empty secret.
    pub(crate) fn new(
        secret: Secret,
        empty: &'static str,
        defaults: (&str, u64, &str),
        derive: fn(&[Secret], &str) -> TimestampSigner<M>,
    ) -> Result<Self> {
        let (salt, max_age, cookie_name) = defaults;
        let secrets = vec![secret.non_empty(empty)?];
        Ok(Self {
            signer: derive(&secrets, salt),
            secrets,
            salt: salt.to_owned(),
            max_age: Some(max_age),
            cookie_name: cookie_name.to_owned(),
            derive,
        })
    }

    /// Another salt: the keys are derived again.
    pub(crate) fn set_salt(&mut self, salt: String) {
        self.salt = salt;
        self.signer = (self.derive)(&self.secrets, &self.salt);
    }

    /// A fallback secret: verifies, never signs.
    pub(crate) fn add_fallback(&mut self, secret: Secret) {
        self.secrets.push(secret);
        self.signer = (self.derive)(&self.secrets, &self.salt);
    }

    /// When a cookie signed at `ts` stops being accepted, if there is a max age.
    pub(crate) fn expires_at(&self, ts: u64) -> Option<u64> {
        self.max_age.map(|m| ts.saturating_add(m).saturating_add(1))
    }

    /// Opens a `framework` cookie at `now`: verifies it, applies the max age (expired when
    /// `now - timestamp > max_age`, and when the timestamp is after `now` if `future` says so),
    /// and reads the authentic payload with `parse`.
    pub(crate) fn open(
        &self,
        framework: Framework,
        cookie: &str,
        now: u64,
        future: FutureTimestamp,
        parse: impl FnOnce(Vec<u8>) -> Result<Value>,
    ) -> Result<LegacySession> {
        let unsigned = self.signer.unsign(cookie.as_bytes())?;
        let ts = unsigned.timestamp;
        if let Some(max_age) = self.max_age {
            let refused_future = future == FutureTimestamp::Expired && now < ts;
            if refused_future || now.saturating_sub(ts) > max_age {
                return Err(Error::expired());
            }
        }
        Ok(LegacySession {
            framework,
            data: parse(unsigned.payload)?,
            issued_at: Some(ts),
            accessed_at: None,
            expires_at: self.expires_at(ts),
        })
    }

    /// `Debug` of the reader named `name`: never a secret or a key, only how many keys.
    pub(crate) fn fmt_as(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("keys", &self.signer.key_count())
            .field("salt", &self.salt)
            .field("max_age", &self.max_age)
            .field("cookie_name", &self.cookie_name)
            .finish_non_exhaustive()
    }
}

/// The builder methods and accessors of a reader holding [`Keys`] in `self.keys` (and its
/// signing path for tests), with the framework's docs for the salt, the max age and the
/// cookie name.
macro_rules! keys_api {
    (
        salt: $($salt:literal)+;
        max_age: $($max_age:literal)+;
        cookie_name: $($cookie_name:literal)+;
    ) => {
        $(#[doc = $salt])+
        #[must_use]
        pub fn with_salt(mut self, salt: impl Into<String>) -> Self {
            self.keys.set_salt(salt.into());
            self
        }

        $(#[doc = $max_age])+
        #[must_use]
        pub fn with_max_age(mut self, max_age: Option<u64>) -> Self {
            self.keys.max_age = max_age;
            self
        }

        /// Adds a key from `SECRET_KEY_FALLBACKS`: it verifies cookies but never signs.
        #[must_use]
        pub fn with_fallback_secret(mut self, secret: Secret) -> Self {
            self.keys.add_fallback(secret);
            self
        }

        $(#[doc = $cookie_name])+
        #[must_use]
        pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
            self.keys.cookie_name = name.into();
            self
        }

        /// The session cookie's name.
        pub fn cookie_name(&self) -> &str {
            &self.keys.cookie_name
        }

        /// The maximum age in seconds, `None` if the check is disabled.
        pub fn max_age(&self) -> Option<u64> {
            self.keys.max_age
        }

        /// Signs an arbitrary `value` (normally the payload, the separator and the timestamp)
        /// with the current key, so tests and fuzz targets reach the parsing that happens
        /// behind the MAC. Not a way to make sessions: use `write`.
        #[cfg(feature = "test-vectors")]
        pub fn sign_for_tests(&self, value: &str) -> String {
            self.keys.signer.sign_value(value.to_owned())
        }
    };
}
pub(crate) use keys_api;
