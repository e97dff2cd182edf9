//! Rails' encrypted cookie store. The recipe is in the docs of [`Rails`].

mod envelope;
mod keys;
mod signed;
#[cfg(test)]
mod tests;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use serde::Serialize;
use zeroize::Zeroizing;

use self::envelope::{check_exp, envelope_json, rack_escape, unwrap_envelope};
use self::keys::{jar_api, Jar};
pub use self::signed::{RailsSigned, RAILS_SIGNED_COOKIE_SALT};
use crate::codec::{self, MAX_COOKIE_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::legacy::{Framework, LegacySession};
use crate::secret::Secret;

/// `config.action_dispatch.authenticated_encrypted_cookie_salt`'s default.
pub const RAILS_DEFAULT_SALT: &str = "authenticated encrypted cookie";
/// The PBKDF2 iterations of `Rails.application.key_generator`.
pub const RAILS_KDF_ITERATIONS: u32 = 1000;

/// Which Rails key derivation the app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RailsVersion {
    /// Rails 5.2 to 6.1, and later apps still on `load_defaults` below 7.0: PBKDF2-HMAC-SHA1.
    V6_1,
    /// `load_defaults 7.0` and later (7.2 included): PBKDF2-HMAC-SHA256.
    V7_2,
}

/// The shape of the metadata envelope the writer uses (the reader accepts both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RailsEnvelope {
    /// `{"_rails":{"message":base64,"exp":..,"pur":..}}`: read by every Rails from 6.0 on.
    #[default]
    Message,
    /// `{"_rails":{"data":..,"exp":..,"pur":..}}`: read by Rails 7.1 and later only.
    Data,
}

/// Reads and writes Rails encrypted session cookies for one `secret_key_base` and cookie
/// name: `ActionDispatch::Session::CookieStore` over the encrypted cookie jar with
/// `cookies_serializer = :json`, as Rails 6.1 and 7.2 write it.
///
/// # The recipe, in Rails' own words
///
/// - **Key derivation** (`Rails.application.key_generator`, an
///   `ActiveSupport::KeyGenerator` with `iterations: 1000`):
///   `secret = PBKDF2(secret_key_base, authenticated_encrypted_cookie_salt, 1000, 32)` with
///   `authenticated_encrypted_cookie_salt = "authenticated encrypted cookie"` and the hash
///   `key_generator_hash_digest_class`: HMAC-SHA1 in Rails 6.1 ([`RailsVersion::V6_1`]),
///   HMAC-SHA256 from `load_defaults 7.0` on ([`RailsVersion::V7_2`]).
/// - **Cipher** (`encrypted_cookie_cipher = "aes-256-gcm"`, `MessageEncryptor`): a random
///   12-byte IV, empty `auth_data`, a 16-byte `auth_tag`. The cookie is
///   `strict_base64(ciphertext) + "--" + strict_base64(iv) + "--" + strict_base64(auth_tag)`,
///   percent-encoded by Rack in `Set-Cookie` (`+`, `/`, `=` become `%2B`, `%2F`, `%3D`).
/// - **Metadata envelope** (`ActiveSupport::Messages::Metadata`, `use_cookies_with_metadata`),
///   the plaintext that is encrypted, in one of two shapes:
///   - [`RailsEnvelope::Message`] (Rails 6.0 to 7.0, and 7.1+ without
///     `use_message_serializer_for_metadata`):
///     `{"_rails":{"message":strict_base64(JSON(session)),"exp":null|"ISO 8601","pur":"cookie.NAME"}}`;
///   - [`RailsEnvelope::Data`] (7.1+ with `use_message_serializer_for_metadata`, the 7.1
///     default): `{"_rails":{"data":session,"exp":"ISO 8601","pur":"cookie.NAME"}}`, `exp`
///     left out when there is none.
///
///   JSON is `ActiveSupport::JSON.encode`: compact, UTF-8, with `<`, `>`, `&`, U+2028 and
///   U+2029 escaped. A plaintext without `_rails` is a session from before 6.0 and is read
///   as the session itself.
/// - **Purpose** (the "pur" field): `"cookie." + cookie name`. Rails first reads with that
///   purpose and, failing that, without one, so a cookie whose `pur` is missing or null is
///   accepted too; one minted for another cookie name is not.
/// - **Expiry**: only the `exp` inside the envelope (set from the session's `expire_after`);
///   `Time.now.utc < exp` or the cookie is refused. Rails has no server-side maximum age: a
///   cookie without `exp` (an app without `expire_after`) is good forever. [`Rails::with_max_age`]
///   adds one, for the migration to Cloakroom, which needs every legacy cookie to age.
///
/// A 7.2 app reads both envelopes; a 6.1 app reads only `Message`, the default of the writer
/// (this reader accepts both whatever the version). How sure each part is: the 6.1 format is
/// checked both ways against Debian's Rails 6.1 and the shipped 6.1 vectors; the 7.2 key
/// derivation and `Message` envelope against the shipped 7.2 vectors (made by the real 7.2);
/// the `Data` envelope follows the 7.1 source only, since no 7.x package is at hand to check it.
/// Cookies serialized with Ruby's Marshal (`cookies_serializer = :marshal`, or old values under
/// `:hybrid`) are refused with [`ErrorKind::Unsupported`]: `Marshal.load` can run code. The
/// AES-CBC + HMAC cookies of Rails before 5.2 are not supported.
///
/// ```
/// use cloakroom_interop::{Rails, RailsVersion, Secret};
/// use serde_json::json;
///
/// let rails = Rails::new(RailsVersion::V7_2, Secret::from("0123456789abcdef"), "_myapp_session")?;
/// let cookie = rails.write(&json!({"user_id": 42}), None)?;
/// let session = rails.open(&cookie, 1_700_000_000)?;
/// assert_eq!(session.data, json!({"user_id": 42}));
/// # Ok::<(), cloakroom_interop::Error>(())
/// ```
#[derive(Clone)]
pub struct Rails {
    jar: Jar<32>,
    max_age: Option<u64>,
}

impl std::fmt::Debug for Rails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.jar.fmt_as("Rails", f, Some(&self.max_age))
    }
}

impl Rails {
    jar_api! {
        new: "The cookie store of an app with this `secret_key_base` whose session cookie is"
            "`cookie_name` (`_<app>_session` unless configured). Runs the key derivation (1000"
            "PBKDF2 rounds) once."
            => RAILS_DEFAULT_SALT, |jar| Self { jar, max_age: None };
        with_salt: "Another `authenticated_encrypted_cookie_salt` (re-runs the key derivation).";
        cookie_name: "The session cookie's name (it is also the purpose, `cookie.NAME`).";
    }

    /// A maximum age in seconds, which Rails itself does not have: set it to the app's
    /// `expire_after`. Rails writes `exp = write time + expire_after` into every cookie, so the
    /// reader can then tell when a cookie was written (`exp - max_age`, reported as
    /// [`LegacySession::issued_at`]); it refuses, as expired, a cookie without `exp` (whose age
    /// nothing tells) and one whose `exp` is more than `max_age` ahead. `None` (the default)
    /// is Rails' own rule: `exp` alone.
    #[must_use]
    pub fn with_max_age(mut self, max_age: Option<u64>) -> Self {
        self.max_age = max_age;
        self
    }

    /// The maximum age set with [`Rails::with_max_age`].
    pub fn max_age(&self) -> Option<u64> {
        self.max_age
    }

    /// Opens a Rails encrypted session cookie at unix time `now`. Takes the value as Rack
    /// sends it (`+`, `/`, `=` escaped as `%2B`, `%2F`, `%3D`) or already unescaped; any other
    /// `%` escape is invalid.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`] if it does not decrypt, or was minted for another cookie,
    /// [`ErrorKind::Expired`] if its `exp` has passed (or, with a max age, it has no `exp` or
    /// one further ahead than the max age), [`ErrorKind::Unsupported`] if the plaintext is
    /// Marshal or not JSON.
    pub fn open(&self, cookie: &str, now: u64) -> Result<LegacySession> {
        if cookie.len() > MAX_COOKIE_LEN {
            return Err(Error::invalid());
        }
        let raw = codec::rack_unescape(cookie).ok_or_else(Error::invalid)?;
        let mut parts = raw.split(|&b| b == b'-').collect::<Vec<_>>().into_iter();
        // "a--b--c" splits on '-' into a, "", b, "", c; base64 never holds '-'.
        let (Some(ct), Some(b""), Some(iv), Some(b""), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Error::invalid());
        };
        let mut buf = codec::b64_decode(ct).ok_or_else(Error::invalid)?;
        let iv = codec::b64_decode(iv).ok_or_else(Error::invalid)?;
        let tag = codec::b64_decode(tag).ok_or_else(Error::invalid)?;
        if iv.len() != 12 || tag.len() != 16 {
            return Err(Error::invalid());
        }
        let cipher = Aes256Gcm::new_from_slice(self.jar.key.key()).expect("32-byte key");
        cipher
            .decrypt_in_place_detached(Nonce::from_slice(&iv), b"", &mut buf, Tag::from_slice(&tag))
            .map_err(|_| Error::invalid())?;
        let plain = Zeroizing::new(buf);
        // Authentic from here on.
        let value = codec::parse_json(&plain)?;
        let (data, exp) = unwrap_envelope(value, &self.jar.purpose)?;
        let expires_at = check_exp(exp, now)?;
        let issued_at = match (self.max_age, exp) {
            (None, _) => None,
            // No `exp`: nothing tells how old it is.
            (Some(_), None) => return Err(Error::expired()),
            (Some(max_age), Some(exp_ms)) => {
                let exp = exp_ms / 1000;
                if exp > now.saturating_add(max_age) {
                    // Written for a longer life than the app's `expire_after`.
                    return Err(Error::expired());
                }
                Some(exp.saturating_sub(max_age))
            }
        };
        Ok(LegacySession {
            framework: Framework::Rails,
            data,
            issued_at,
            accessed_at: None,
            expires_at,
        })
    }

    /// Writes a session cookie Rails accepts, with a fresh random IV, percent-encoded as Rack
    /// puts it in `Set-Cookie`. `expires_at` (unix seconds) becomes the envelope's `exp`, as
    /// `expire_after` would set it; `None` writes a session without one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the session does not serialize to JSON or `expires_at`
    /// is past year 9999, [`ErrorKind::Random`] if the OS random generator fails.
    pub fn write<T: Serialize + ?Sized>(
        &self,
        session: &T,
        expires_at: Option<u64>,
    ) -> Result<String> {
        let mut iv = [0u8; 12];
        getrandom::getrandom(&mut iv).map_err(|e| {
            Error::with_source(
                ErrorKind::Random,
                "the OS random number generator failed",
                std::io::Error::other(e.to_string()),
            )
        })?;
        self.write_iv(session, expires_at, iv)
    }

    /// [`Rails::write`] with a caller-chosen IV, for known-answer tests only. Never use it for
    /// a real cookie: two cookies under one key and IV reveal each other and let anyone
    /// forge AES-GCM tags.
    ///
    /// # Errors
    ///
    /// As [`Rails::write`].
    #[cfg(feature = "test-vectors")]
    pub fn write_with_fixed_iv_for_tests<T: Serialize + ?Sized>(
        &self,
        session: &T,
        expires_at: Option<u64>,
        iv: [u8; 12],
    ) -> Result<String> {
        self.write_iv(session, expires_at, iv)
    }

    /// Encrypts arbitrary bytes as the cookie's plaintext under a caller-chosen IV, so tests
    /// and fuzz targets reach the parsing that happens behind the AEAD tag. Not a way to make
    /// sessions (see [`Rails::write_with_fixed_iv_for_tests`] on IVs).
    #[cfg(feature = "test-vectors")]
    pub fn encrypt_for_tests(&self, plaintext: &[u8], iv: [u8; 12]) -> String {
        self.seal(plaintext.to_vec(), iv)
            .expect("AES-GCM seals any cookie-sized plaintext")
    }

    fn write_iv<T: Serialize + ?Sized>(
        &self,
        session: &T,
        expires_at: Option<u64>,
        iv: [u8; 12],
    ) -> Result<String> {
        let plain = envelope_json(session, expires_at, &self.jar.purpose, self.jar.envelope)?;
        self.seal(plain, iv)
    }

    /// AES-256-GCM with Rails' layout, percent-encoded as Rack sends it.
    fn seal(&self, plain: Vec<u8>, iv: [u8; 12]) -> Result<String> {
        let mut buf = Zeroizing::new(plain);
        let cipher = Aes256Gcm::new_from_slice(self.jar.key.key()).expect("32-byte key");
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&iv), b"", &mut buf)
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "the session is too large"))?;
        let raw = format!(
            "{}--{}--{}",
            codec::b64_encode(&buf),
            codec::b64_encode(&iv),
            codec::b64_encode(&tag)
        );
        Ok(rack_escape(&raw))
    }
}
