//! Session ids and their hashes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, ErrorKind};
use crate::store;

/// Length of a session id in bytes (256 bits from the OS CSPRNG).
pub const SESSION_ID_LEN: usize = 32;

/// A live session id: 32 random bytes. It is a bearer secret: whoever holds it holds the
/// session.
///
/// It only ever leaves the process inside a signed cookie token. `Debug` prints only a
/// prefix of its hash, equality is constant-time, and the bytes are zeroized on drop.
/// Stores never see it: they key records by its [`IdHash`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionId([u8; SESSION_ID_LEN]);

impl SessionId {
    /// Draws a fresh id from the operating system's CSPRNG (`getrandom`).
    ///
    /// # Errors
    /// [`ErrorKind::Random`] if the OS generator fails.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; SESSION_ID_LEN];
        getrandom::getrandom(&mut bytes).map_err(Error::random)?;
        Ok(Self(bytes))
    }

    /// An id from its 32 bytes (as carried in a cookie token).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: [u8; SESSION_ID_LEN] = bytes
            .try_into()
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "a session id is 32 bytes"))?;
        Ok(Self(bytes))
    }

    /// The raw bytes. Handle with care: this is the secret.
    pub fn expose(&self) -> &[u8; SESSION_ID_LEN] {
        &self.0
    }

    /// SHA-256 of the id: the key stores use.
    pub fn hash(&self) -> IdHash {
        IdHash(Sha256::digest(self.0).into())
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SessionId {}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(hash {})", self.hash())
    }
}

/// SHA-256 of a [`SessionId`]: how stores key records, so a leaked store dump holds no live
/// id. Not a secret.
///
/// `Display` and `Debug` print the first 8 hex digits only (enough to follow a session
/// through logs); [`IdHash::to_hex`] gives all 64 for file names and database keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdHash([u8; 32]);

impl IdHash {
    /// An id hash from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// All 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case).
    ///
    /// # Errors
    /// [`store::ErrorKind::InvalidInput`] if `text` is not 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, store::Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| {
            store::Error::new(
                store::ErrorKind::InvalidInput,
                "an id hash is 64 hex digits",
            )
        })?;
        Ok(Self(out))
    }

    /// The short prefix used in logs (8 hex digits).
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(8);
        s
    }
}

impl fmt::Display for IdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Debug for IdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdHash({})", self.short())
    }
}

impl Serialize for IdHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IdHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<IdHash, E> {
                let bytes: [u8; 32] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(IdHash(bytes))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_hash_is_sha256() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.hash(), b.hash());
        let fixed = SessionId::from_bytes(&[0u8; 32]).unwrap();
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            fixed.hash().to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn debug_never_shows_the_id() {
        let id = SessionId::from_bytes(&[0xab; 32]).unwrap();
        let shown = format!("{id:?} {:?} {}", id.hash(), id.hash());
        assert!(!shown.contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains(&id.hash().short()));
        assert_eq!(id.hash().short().len(), 8);
    }

    #[test]
    fn hex_round_trip() {
        let h = SessionId::generate().unwrap().hash();
        assert_eq!(IdHash::from_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(IdHash::from_hex(&h.to_hex().to_uppercase()).unwrap(), h);
        assert!(IdHash::from_hex("xyz").is_err());
        assert!(IdHash::from_hex(&"g".repeat(64)).is_err());
        assert!(SessionId::from_bytes(&[1; 31]).is_err());
    }
}
