//! The key derivation both jars share, and what else they hold alike.

use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{RailsEnvelope, RailsVersion, RAILS_KDF_ITERATIONS};
use crate::error::Result;
use crate::secret::Secret;

/// What the encrypted and the signed jar hold alike: the derived key, the cookie's name and
/// purpose (`cookie.NAME`), and the envelope the writer uses.
#[derive(Clone)]
pub(super) struct Jar<const N: usize> {
    pub(super) key: KeyGenerator<N>,
    pub(super) purpose: String,
    pub(super) cookie_name: String,
    pub(super) envelope: RailsEnvelope,
}

impl<const N: usize> Jar<N> {
    pub(super) fn new(
        version: RailsVersion,
        secret: Secret,
        salt: &str,
        cookie_name: String,
    ) -> Result<Self> {
        Ok(Self {
            key: KeyGenerator::new(version, secret, salt)?,
            purpose: format!("cookie.{cookie_name}"),
            cookie_name,
            envelope: RailsEnvelope::Message,
        })
    }

    /// `Debug` of the jar named `name` (never the secret or the key), with the encrypted
    /// jar's max age when it has one.
    pub(super) fn fmt_as(
        &self,
        name: &str,
        f: &mut std::fmt::Formatter<'_>,
        max_age: Option<&Option<u64>>,
    ) -> std::fmt::Result {
        let mut d = f.debug_struct(name);
        d.field("version", &self.key.version)
            .field("salt", &self.key.salt)
            .field("cookie_name", &self.cookie_name)
            .field("envelope", &self.envelope);
        if let Some(max_age) = max_age {
            d.field("max_age", max_age);
        }
        d.finish_non_exhaustive()
    }
}

/// `new`, `with_salt`, `with_envelope` and `cookie_name` of a jar type holding a [`Jar`] in
/// `self.jar`: `new` derives the key with `$salt` and makes the value with `$make`.
macro_rules! jar_api {
    (
        new: $($new_doc:literal)+ => $salt:expr, $make:expr;
        with_salt: $salt_doc:literal;
        cookie_name: $name_doc:literal $(;)?
    ) => {
        $(#[doc = $new_doc])+
        ///
        /// # Errors
        ///
        /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) if the secret is empty.
        pub fn new(
            version: RailsVersion,
            secret_key_base: Secret,
            cookie_name: impl Into<String>,
        ) -> Result<Self> {
            let jar = Jar::new(version, secret_key_base, $salt, cookie_name.into())?;
            let make: fn(Jar<_>) -> Self = $make;
            Ok(make(jar))
        }

        #[doc = $salt_doc]
        #[must_use]
        pub fn with_salt(mut self, salt: impl Into<String>) -> Self {
            self.jar.key.set_salt(salt.into());
            self
        }

        /// The envelope the writer uses; [`RailsEnvelope::Message`] unless set.
        #[must_use]
        pub fn with_envelope(mut self, envelope: RailsEnvelope) -> Self {
            self.jar.envelope = envelope;
            self
        }

        #[doc = $name_doc]
        pub fn cookie_name(&self) -> &str {
            &self.jar.cookie_name
        }
    };
}
pub(super) use jar_api;

/// `Rails.application.key_generator.generate_key(salt, N)`: PBKDF2 over `secret_key_base`,
/// 1000 rounds, HMAC-SHA1 or HMAC-SHA256 by the version; what the encrypted and the signed
/// cookie jars share, with their own salt and length.
#[derive(Clone)]
pub(super) struct KeyGenerator<const N: usize> {
    version: RailsVersion,
    secret: Secret,
    salt: String,
    key: Zeroizing<[u8; N]>,
}

impl<const N: usize> KeyGenerator<N> {
    fn new(version: RailsVersion, secret: Secret, salt: &str) -> Result<Self> {
        let mut generator = Self {
            version,
            secret: secret.non_empty("the Rails secret_key_base is empty")?,
            salt: String::new(),
            key: Zeroizing::new([0; N]),
        };
        generator.set_salt(salt.to_owned());
        Ok(generator)
    }

    /// Another salt: runs the derivation again.
    pub(super) fn set_salt(&mut self, salt: String) {
        self.salt = salt;
        let (pw, salt) = (self.secret.expose(), self.salt.as_bytes());
        match self.version {
            RailsVersion::V6_1 => {
                pbkdf2::pbkdf2_hmac::<Sha1>(pw, salt, RAILS_KDF_ITERATIONS, &mut self.key[..]);
            }
            RailsVersion::V7_2 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(pw, salt, RAILS_KDF_ITERATIONS, &mut self.key[..]);
            }
        }
    }

    pub(super) fn key(&self) -> &[u8] {
        &self.key[..]
    }
}
