//! Rails' encrypted cookie store. The recipe is in the docs of [`Rails`].

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use serde::Serialize;
use serde_json::Value;
use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::codec::{self, JsonStyle, MAX_COOKIE_LEN};
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
    key: KeyGenerator<32>,
    purpose: String,
    cookie_name: String,
    envelope: RailsEnvelope,
    max_age: Option<u64>,
}

impl std::fmt::Debug for Rails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            key,
            purpose: _,
            cookie_name,
            envelope,
            max_age,
        } = self;
        f.debug_struct("Rails")
            .field("version", &key.version)
            .field("salt", &key.salt)
            .field("cookie_name", cookie_name)
            .field("envelope", envelope)
            .field("max_age", max_age)
            .finish_non_exhaustive()
    }
}

impl Rails {
    /// The cookie store of an app with this `secret_key_base` whose session cookie is
    /// `cookie_name` (`_<app>_session` unless configured). Runs the key derivation (1000
    /// PBKDF2 rounds) once.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the secret is empty.
    pub fn new(
        version: RailsVersion,
        secret_key_base: Secret,
        cookie_name: impl Into<String>,
    ) -> Result<Self> {
        let key = KeyGenerator::new(version, secret_key_base, RAILS_DEFAULT_SALT)?;
        let cookie_name = cookie_name.into();
        Ok(Self {
            key,
            purpose: format!("cookie.{cookie_name}"),
            cookie_name,
            envelope: RailsEnvelope::Message,
            max_age: None,
        })
    }

    /// Another `authenticated_encrypted_cookie_salt` (re-runs the key derivation).
    #[must_use]
    pub fn with_salt(mut self, salt: impl Into<String>) -> Self {
        self.key.set_salt(salt.into());
        self
    }

    /// The envelope the writer uses; [`RailsEnvelope::Message`] unless set.
    #[must_use]
    pub fn with_envelope(mut self, envelope: RailsEnvelope) -> Self {
        self.envelope = envelope;
        self
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

    /// The session cookie's name (it is also the purpose, `cookie.NAME`).
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
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
        let cipher = Aes256Gcm::new_from_slice(self.key.key()).expect("32-byte key");
        cipher
            .decrypt_in_place_detached(Nonce::from_slice(&iv), b"", &mut buf, Tag::from_slice(&tag))
            .map_err(|_| Error::invalid())?;
        let plain = Zeroizing::new(buf);
        // Authentic from here on.
        let value = codec::parse_json(&plain)?;
        let (data, exp) = unwrap_envelope(value, &self.purpose)?;
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
        let plain = envelope_json(session, expires_at, &self.purpose, self.envelope)?;
        self.seal(plain, iv)
    }

    /// AES-256-GCM with Rails' layout, percent-encoded as Rack sends it.
    fn seal(&self, plain: Vec<u8>, iv: [u8; 12]) -> Result<String> {
        let mut buf = Zeroizing::new(plain);
        let cipher = Aes256Gcm::new_from_slice(self.key.key()).expect("32-byte key");
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

/// `config.action_dispatch.signed_cookie_salt`'s default.
pub const RAILS_SIGNED_COOKIE_SALT: &str = "signed cookie";

/// Reads and writes Rails signed cookies (`cookies.signed[:name]`, the
/// `SignedKeyRotatingCookieJar`): readable by anyone, but not alterable. Not the session
/// store (that is [`Rails`]), but what apps use for "remember me" ids and the like.
///
/// # The recipe, in Rails' own words
///
/// - **Key derivation**: `secret = PBKDF2(secret_key_base, signed_cookie_salt, 1000, 64)`
///   with `signed_cookie_salt = "signed cookie"` and the hash of [`RailsVersion`].
/// - **Signature** (`ActiveSupport::MessageVerifier`, `signed_cookie_digest = "SHA1"`):
///   `data = strict_base64(envelope)`, cookie = `data + "--" + hex(HMAC-SHA1(secret, data))`,
///   percent-encoded by Rack (`=` as `%3D`).
/// - **Envelope, purpose, expiry**: as for [`Rails`] (`"pur":"cookie.NAME"`, `exp`).
///
/// Writing is deterministic. Rails 6.1 ignores anything after a second `--`; this reader
/// refuses it.
///
/// ```
/// use cloakroom_interop::{RailsSigned, RailsVersion, Secret};
///
/// let jar = RailsSigned::new(RailsVersion::V6_1, Secret::from("0123456789abcdef"), "user_id")?;
/// let cookie = jar.write(&42, None)?;
/// assert_eq!(jar.open(&cookie, 1_700_000_000)?.data, 42);
/// # Ok::<(), cloakroom_interop::Error>(())
/// ```
#[derive(Clone)]
pub struct RailsSigned {
    key: KeyGenerator<64>,
    purpose: String,
    cookie_name: String,
    envelope: RailsEnvelope,
}

impl std::fmt::Debug for RailsSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            key,
            purpose: _,
            cookie_name,
            envelope,
        } = self;
        f.debug_struct("RailsSigned")
            .field("version", &key.version)
            .field("salt", &key.salt)
            .field("cookie_name", cookie_name)
            .field("envelope", envelope)
            .finish_non_exhaustive()
    }
}

type HmacSha1 = hmac::Hmac<Sha1>;

impl RailsSigned {
    /// The signed cookie `cookie_name` of an app with this `secret_key_base`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the secret is empty.
    pub fn new(
        version: RailsVersion,
        secret_key_base: Secret,
        cookie_name: impl Into<String>,
    ) -> Result<Self> {
        let key = KeyGenerator::new(version, secret_key_base, RAILS_SIGNED_COOKIE_SALT)?;
        let cookie_name = cookie_name.into();
        Ok(Self {
            key,
            purpose: format!("cookie.{cookie_name}"),
            cookie_name,
            envelope: RailsEnvelope::Message,
        })
    }

    /// Another `signed_cookie_salt` (re-runs the key derivation).
    #[must_use]
    pub fn with_salt(mut self, salt: impl Into<String>) -> Self {
        self.key.set_salt(salt.into());
        self
    }

    /// The envelope the writer uses; [`RailsEnvelope::Message`] unless set.
    #[must_use]
    pub fn with_envelope(mut self, envelope: RailsEnvelope) -> Self {
        self.envelope = envelope;
        self
    }

    /// The cookie's name (it is also the purpose, `cookie.NAME`).
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    fn mac(&self) -> HmacSha1 {
        <HmacSha1 as hmac::Mac>::new_from_slice(self.key.key()).expect("HMAC takes any key length")
    }

    /// Opens a Rails signed cookie at unix time `now`, percent-encoded or not.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`] if the signature does not verify or the cookie was minted for
    /// another name, [`ErrorKind::Expired`] if its `exp` has passed,
    /// [`ErrorKind::Unsupported`] if the value is Marshal or not JSON.
    pub fn open(&self, cookie: &str, now: u64) -> Result<LegacySession> {
        use hmac::Mac as _;
        if cookie.len() > MAX_COOKIE_LEN {
            return Err(Error::invalid());
        }
        let raw = codec::rack_unescape(cookie).ok_or_else(Error::invalid)?;
        let i = raw
            .windows(2)
            .position(|w| w == b"--")
            .ok_or_else(Error::invalid)?;
        let (data, digest) = (&raw[..i], &raw[i + 2..]);
        let digest = lower_hex_decode(digest).ok_or_else(Error::invalid)?;
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_slice(&digest).map_err(|_| Error::invalid())?;
        // Authentic from here on.
        let plain = codec::b64_decode(data).ok_or_else(Error::invalid)?;
        let value = codec::parse_json(&plain)?;
        let (data, exp) = unwrap_envelope(value, &self.purpose)?;
        Ok(LegacySession {
            framework: Framework::Rails,
            data,
            issued_at: None,
            accessed_at: None,
            expires_at: check_exp(exp, now)?,
        })
    }

    /// Writes a signed cookie Rails accepts, percent-encoded as Rack puts it in `Set-Cookie`.
    /// Deterministic. `expires_at` (unix seconds) becomes the envelope's `exp`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the value does not serialize to JSON or `expires_at` is
    /// past year 9999.
    pub fn write<T: Serialize + ?Sized>(
        &self,
        value: &T,
        expires_at: Option<u64>,
    ) -> Result<String> {
        use hmac::Mac as _;
        let plain = envelope_json(value, expires_at, &self.purpose, self.envelope)?;
        let data = codec::b64_encode(&plain);
        let mut mac = self.mac();
        mac.update(data.as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        Ok(rack_escape(&format!("{data}--{digest}")))
    }
}

/// Lower-case hex, as `OpenSSL::HMAC.hexdigest` writes it; anything else is `None`.
fn lower_hex_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    hex::decode(s).ok()
}

/// Takes the data and the expiry (unix milliseconds) out of a plaintext's metadata envelope,
/// checking its purpose as `Messages::Metadata` does.
fn unwrap_envelope(value: Value, purpose: &str) -> Result<(Value, Option<u64>)> {
    let Value::Object(mut outer) = value else {
        return Ok((value, None));
    };
    let mut meta = match outer.remove("_rails") {
        None => return Ok((Value::Object(outer), None)),
        Some(Value::Object(meta)) => meta,
        Some(_) => return Err(Error::invalid()),
    };
    match meta.get("pur") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if p == purpose => {}
        Some(_) => return Err(Error::invalid()),
    }
    let exp = match meta.get("exp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_iso8601_ms(s).ok_or_else(Error::invalid)?),
        Some(_) => return Err(Error::invalid()),
    };
    let data = if let Some(message) = meta.get("message") {
        let Value::String(b64) = message else {
            return Err(Error::invalid());
        };
        let inner = codec::b64_decode(b64.as_bytes()).ok_or_else(Error::invalid)?;
        codec::parse_json(&inner)?
    } else if let Some(data) = meta.remove("data") {
        data
    } else {
        return Err(Error::invalid());
    };
    Ok((data, exp))
}

/// Rails' `fresh?`: refused from the `exp` millisecond on. Gives `expires_at` in seconds.
fn check_exp(exp_ms: Option<u64>, now: u64) -> Result<Option<u64>> {
    match exp_ms {
        None => Ok(None),
        Some(ms) => {
            if now.checked_mul(1000).is_none_or(|now_ms| now_ms >= ms) {
                return Err(Error::expired());
            }
            Ok(Some(ms.div_ceil(1000)))
        }
    }
}

/// The plaintext Rails encrypts or signs: `value` in a metadata envelope.
fn envelope_json<T: Serialize + ?Sized>(
    value: &T,
    expires_at: Option<u64>,
    purpose: &str,
    envelope: RailsEnvelope,
) -> Result<Vec<u8>> {
    let exp = expires_at.map(format_iso8601).transpose()?;
    Ok(match envelope {
        RailsEnvelope::Message => {
            #[derive(Serialize)]
            struct Meta<'a> {
                message: String,
                exp: Option<String>,
                pur: &'a str,
            }
            let message = codec::b64_encode(&codec::to_json(value, JsonStyle::ACTIVE_SUPPORT)?);
            let meta = Meta {
                message,
                exp,
                pur: purpose,
            };
            codec::to_json(&Envelope { _rails: meta }, JsonStyle::ACTIVE_SUPPORT)?
        }
        RailsEnvelope::Data => {
            #[derive(Serialize)]
            struct Meta<'a, T: ?Sized> {
                data: &'a T,
                #[serde(skip_serializing_if = "Option::is_none")]
                exp: Option<String>,
                pur: &'a str,
            }
            let meta = Meta {
                data: value,
                exp,
                pur: purpose,
            };
            codec::to_json(&Envelope { _rails: meta }, JsonStyle::ACTIVE_SUPPORT)?
        }
    })
}

#[derive(Serialize)]
struct Envelope<M> {
    _rails: M,
}

/// Rack's `escape` for the characters a Rails cookie holds: base64 and `-`.
fn rack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// `Time#iso8601(3)` in UTC: `2023-11-14T23:13:20.000Z`.
fn format_iso8601(secs: u64) -> Result<String> {
    const MAX: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if secs > MAX {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "expires_at is past year 9999",
        ));
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    Ok(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

/// Parses what `Time.iso8601` accepts from Rails: `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`,
/// to unix milliseconds. Times before 1970 give `None`.
fn parse_iso8601_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &b[start..i.min(start + 3)];
        ms = frac
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(3)
            .fold(0, |acc, &c| acc * 10 + i64::from(c - b'0'));
    }
    let offset_secs = match b.get(i..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    u64::try_from(secs.checked_mul(1000)?.checked_add(ms)?).ok()
}

// Howard Hinnant's civil-from-days algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `Rails.application.key_generator.generate_key(salt, N)`: PBKDF2 over `secret_key_base`,
/// 1000 rounds, HMAC-SHA1 or HMAC-SHA256 by the version; what the encrypted and the signed
/// cookie jars share, with their own salt and length.
#[derive(Clone)]
struct KeyGenerator<const N: usize> {
    version: RailsVersion,
    secret: Secret,
    salt: String,
    key: Zeroizing<[u8; N]>,
}

impl<const N: usize> KeyGenerator<N> {
    fn new(version: RailsVersion, secret: Secret, salt: &str) -> Result<Self> {
        if secret.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the Rails secret_key_base is empty",
            ));
        }
        let mut generator = Self {
            version,
            secret,
            salt: String::new(),
            key: Zeroizing::new([0; N]),
        };
        generator.set_salt(salt.to_owned());
        Ok(generator)
    }

    /// Another salt: runs the derivation again.
    fn set_salt(&mut self, salt: String) {
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

    fn key(&self) -> &[u8] {
        &self.key[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn iso8601() {
        assert_eq!(
            format_iso8601(1_700_003_600).unwrap(),
            "2023-11-14T23:13:20.000Z"
        );
        assert_eq!(format_iso8601(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_iso8601_ms("2023-11-14T23:13:20.000Z"),
            Some(1_700_003_600_000)
        );
        assert_eq!(
            parse_iso8601_ms("2023-11-14T23:13:20Z"),
            Some(1_700_003_600_000)
        );
        assert_eq!(
            parse_iso8601_ms("2023-11-14T23:13:20.5Z"),
            Some(1_700_003_600_500)
        );
        assert_eq!(
            parse_iso8601_ms("2023-11-15T00:13:20+01:00"),
            Some(1_700_003_600_000)
        );
        assert_eq!(parse_iso8601_ms("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_iso8601_ms("2023-11-14 23:13:20Z"), None);
        for s in [0u64, 951_782_400, 1_700_003_600, 253_402_300_799] {
            let t = format_iso8601(s).unwrap();
            assert_eq!(parse_iso8601_ms(&t), Some(s * 1000), "{t}");
        }
        assert!(format_iso8601(253_402_300_800).is_err());
    }

    #[test]
    fn expiry_and_purpose() {
        let r = Rails::new(RailsVersion::V6_1, Secret::from("s"), "_a_session").unwrap();
        for env in [RailsEnvelope::Message, RailsEnvelope::Data] {
            let r = r.clone().with_envelope(env);
            let c = r.write(&json!({"u": 1}), Some(1000)).unwrap();
            let s = r.open(&c, 999).unwrap();
            assert_eq!((s.data, s.expires_at), (json!({"u": 1}), Some(1000)));
            assert_eq!(r.open(&c, 1000).unwrap_err().kind(), ErrorKind::Expired);
            let other = Rails::new(RailsVersion::V6_1, Secret::from("s"), "_b_session").unwrap();
            assert_eq!(other.open(&c, 5).unwrap_err().kind(), ErrorKind::Invalid);
            let v72 = Rails::new(RailsVersion::V7_2, Secret::from("s"), "_a_session").unwrap();
            assert_eq!(v72.open(&c, 5).unwrap_err().kind(), ErrorKind::Invalid);
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(rack_escape("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }
}
