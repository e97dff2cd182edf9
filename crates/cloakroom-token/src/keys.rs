//! Master secrets, key ids and the key ring.

use std::fmt;

use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{b64, Error, ErrorKind};

/// The shortest master secret a key ring accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The length of the secrets [`KeyRing::generate`] and [`KeyRing::rotate`] make, in bytes.
pub const GENERATED_SECRET_LEN: usize = 32;

/// The longest key id, in characters.
pub const MAX_KEY_ID_LEN: usize = 16;

/// A master secret: at least 32 bytes, zeroized on drop, compared in constant time, and never
/// printed (its `Debug` shows only its length).
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps secret bytes.
    ///
    /// # Errors
    /// [`ErrorKind::KeyRing`] if `bytes` is shorter than [`MIN_SECRET_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_SECRET_LEN {
            return Err(Error::new(
                ErrorKind::KeyRing,
                format!(
                    "a secret must be at least {MIN_SECRET_LEN} bytes, this one has {}",
                    bytes.len()
                ),
            ));
        }
        Ok(Self(bytes))
    }

    /// Makes a new secret from the operating system's random number generator.
    ///
    /// # Errors
    /// [`ErrorKind::Random`] if the operating system cannot supply randomness.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = Zeroizing::new(vec![0u8; GENERATED_SECRET_LEN]);
        getrandom::getrandom(&mut bytes)
            .map_err(|e| Error::new(ErrorKind::Random, format!("no randomness: {e}")))?;
        Ok(Self(bytes))
    }

    /// The secret bytes. Handle with care.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for Secret {}

/// A key id: 1 to 16 characters of `[A-Za-z0-9_-]`, carried in every token as text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Checks and wraps a key id.
    ///
    /// # Errors
    /// [`ErrorKind::KeyRing`] if the id is empty, longer than 16 characters or uses a character
    /// outside `[A-Za-z0-9_-]`.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        if Self::is_valid(id.as_bytes()) {
            Ok(Self(id))
        } else {
            Err(Error::new(
                ErrorKind::KeyRing,
                format!(
                    "key id {id:?} must be 1 to {MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 _ -"
                ),
            ))
        }
    }

    pub(crate) fn is_valid(id: &[u8]) -> bool {
        !id.is_empty()
            && id.len() <= MAX_KEY_ID_LEN
            && id
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key of a ring.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    secret: Secret,
}

impl Key {
    /// A key with the given id and master secret.
    pub fn new(id: KeyId, secret: Secret) -> Self {
        Self { id, secret }
    }

    /// The key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The key's master secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { id, secret } = self;
        f.debug_struct("Key")
            .field("id", id)
            .field("secret", secret)
            .finish()
    }
}

/// A set of keys, one of them primary.
///
/// Tokens are minted with the primary key and opened with whichever key their id names, so a
/// ring can be rotated without logging anyone out: add a new primary with [`KeyRing::rotate`],
/// keep the old key until the last token it minted has expired, then remove it.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
    primary: usize,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { keys, primary } = self;
        f.debug_struct("KeyRing")
            .field("keys", &keys.iter().map(Key::id).collect::<Vec<_>>())
            .field("primary", &keys[*primary].id)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    secret: Zeroizing<String>,
    #[serde(default)]
    primary: bool,
}

impl KeyRing {
    /// A ring of the given keys; `primary` is the id of the key that mints.
    ///
    /// # Errors
    /// [`ErrorKind::KeyRing`] if the ring is empty, two keys share an id, or no key has the
    /// primary id.
    pub fn new(keys: Vec<Key>, primary: &KeyId) -> Result<Self, Error> {
        if keys.is_empty() {
            return Err(Error::new(ErrorKind::KeyRing, "the key ring has no keys"));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(Error::new(
                    ErrorKind::KeyRing,
                    format!("key id {:?} appears twice in the key ring", k.id.as_str()),
                ));
            }
        }
        let primary = keys.iter().position(|k| &k.id == primary).ok_or_else(|| {
            Error::new(
                ErrorKind::KeyRing,
                format!(
                    "no key in the ring has the primary id {:?}",
                    primary.as_str()
                ),
            )
        })?;
        Ok(Self { keys, primary })
    }

    /// A new ring with one random key, `k1`, as primary.
    ///
    /// # Errors
    /// [`ErrorKind::Random`] if the operating system cannot supply randomness.
    pub fn generate() -> Result<Self, Error> {
        let id = KeyId::new("k1")?;
        Self::new(vec![Key::new(id.clone(), Secret::generate()?)], &id)
    }

    /// Parses the TOML form:
    ///
    /// ```toml
    /// [[keys]]
    /// id = "k1"
    /// secret = "<base64url, no padding, of at least 32 bytes>"
    /// primary = true
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::KeyRing`] with a message that says what is wrong (never a secret's bytes).
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let file: RingFile = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may hold a secret: keep only
            // the description and the position.
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            Error::new(
                ErrorKind::KeyRing,
                format!("key ring is not valid TOML: {}{at}", e.message()),
            )
        })?;
        if file.keys.is_empty() {
            return Err(Error::new(ErrorKind::KeyRing, "the key ring has no keys"));
        }
        let mut primary = None;
        let mut keys = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            let id = KeyId::new(entry.id)?;
            let bytes = b64::decode(entry.secret.trim().as_bytes()).ok_or_else(|| {
                Error::new(
                    ErrorKind::KeyRing,
                    format!(
                        "the secret of key {:?} is not base64url without padding",
                        id.as_str()
                    ),
                )
            })?;
            let secret = Secret::new(bytes).map_err(|e| {
                Error::new(ErrorKind::KeyRing, format!("key {:?}: {e}", id.as_str()))
            })?;
            if entry.primary {
                if primary.is_some() {
                    return Err(Error::new(
                        ErrorKind::KeyRing,
                        "more than one key is marked primary = true",
                    ));
                }
                primary = Some(id.clone());
            }
            keys.push(Key::new(id, secret));
        }
        let primary = primary.ok_or_else(|| {
            Error::new(
                ErrorKind::KeyRing,
                "no key is marked primary = true (exactly one must be)",
            )
        })?;
        Self::new(keys, &primary)
    }

    /// The TOML form, secrets included, for writing a key file. The result is zeroized on drop.
    pub fn to_toml(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::from(
            "# Cloakroom key ring. Keep this file secret (mode 0600) and out of version control.\n",
        ));
        for (i, key) in self.keys.iter().enumerate() {
            let mut secret = Zeroizing::new(String::new());
            b64::encode_into(key.secret.expose(), &mut secret);
            out.push_str("\n[[keys]]\n");
            out.push_str(&format!("id = \"{}\"\n", key.id));
            out.push_str("secret = \"");
            out.push_str(&secret);
            out.push_str("\"\n");
            if i == self.primary {
                out.push_str("primary = true\n");
            }
        }
        out
    }

    /// Adds a new random key and makes it the primary; the old keys stay for verifying.
    /// Returns the new key's id (`kN`, the smallest N not in use after the existing ones).
    ///
    /// # Errors
    /// [`ErrorKind::Random`] if the operating system cannot supply randomness.
    pub fn rotate(&mut self) -> Result<&KeyId, Error> {
        let mut n = self.keys.len() + 1;
        let id = loop {
            let candidate = KeyId::new(format!("k{n}"))?;
            if !self.keys.iter().any(|k| k.id == candidate) {
                break candidate;
            }
            n += 1;
        };
        self.keys.push(Key::new(id, Secret::generate()?));
        self.primary = self.keys.len() - 1;
        Ok(&self.keys[self.primary].id)
    }

    /// The keys of the ring, in order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The key that mints new tokens.
    pub fn primary(&self) -> &Key {
        &self.keys[self.primary]
    }

    pub(crate) fn primary_index(&self) -> usize {
        self.primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_text(byte: u8, len: usize) -> String {
        let mut s = String::new();
        b64::encode_into(&vec![byte; len], &mut s);
        s
    }

    #[test]
    fn toml_round_trip() {
        let mut ring = KeyRing::generate().unwrap();
        ring.rotate().unwrap();
        let again = KeyRing::from_toml(&ring.to_toml()).unwrap();
        assert_eq!(again.keys().len(), 2);
        assert_eq!(again.primary().id().as_str(), "k2");
        assert!(again.keys()[0].secret() == ring.keys()[0].secret());
    }

    #[test]
    fn refuses_bad_rings() {
        let s = secret_text(1, 32);
        let short = secret_text(1, 31);
        let cases = [
            (String::from("keys = []"), "no keys"),
            (
                format!("[[keys]]\nid = \"k1\"\nsecret = \"{s}\"\n"),
                "primary",
            ),
            (
                format!("[[keys]]\nid = \"k1\"\nsecret = \"{short}\"\nprimary = true\n"),
                "at least 32 bytes",
            ),
            (
                format!("[[keys]]\nid = \"k 1\"\nsecret = \"{s}\"\nprimary = true\n"),
                "key id",
            ),
            (
                format!("[[keys]]\nid = \"k1\"\nsecret = \"{s}=\"\nprimary = true\n"),
                "base64url",
            ),
            (
                format!(
                    "[[keys]]\nid = \"k1\"\nsecret = \"{s}\"\nprimary = true\n\
                     [[keys]]\nid = \"k1\"\nsecret = \"{s}\"\n"
                ),
                "twice",
            ),
            (
                format!(
                    "[[keys]]\nid = \"k1\"\nsecret = \"{s}\"\nprimary = true\n\
                     [[keys]]\nid = \"k2\"\nsecret = \"{s}\"\nprimary = true\n"
                ),
                "more than one",
            ),
            (String::from("[[keys]]\nid = 3"), "not valid TOML"),
        ];
        for (text, expect) in cases {
            let err = KeyRing::from_toml(&text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::KeyRing, "{text}");
            assert!(
                err.to_string().contains(expect),
                "{err} should say {expect}"
            );
        }
    }

    #[test]
    fn errors_and_debug_never_show_secret_bytes() {
        let s = secret_text(0xAB, 32);
        let text = format!("[[keys]]\nid = \"k1\"\nsecret = \"{s}\"\nprimary = true\nextra = 1\n");
        let err = KeyRing::from_toml(&text).unwrap_err();
        assert!(!err.to_string().contains(&s[..10]), "{err}");
        let ring = KeyRing::from_toml(&format!(
            "[[keys]]\nid = \"k1\"\nsecret = \"{s}\"\nprimary = true\n"
        ))
        .unwrap();
        let debug = format!("{ring:?} {:?}", ring.primary());
        assert!(
            !debug.contains(&s[..10]) && !debug.contains("171"),
            "{debug}"
        );
    }
}
