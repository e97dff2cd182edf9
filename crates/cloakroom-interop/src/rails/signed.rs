//! Rails' signed cookies (`cookies.signed[:name]`).

use serde::Serialize;
use sha1::Sha1;

use super::envelope::{check_exp, envelope_json, rack_escape, unwrap_envelope};
use super::keys::{jar_api, Jar};
#[cfg(doc)]
use super::Rails;
use super::{RailsEnvelope, RailsVersion};
use crate::codec::{self, MAX_COOKIE_LEN};
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::legacy::{Framework, LegacySession};
use crate::secret::Secret;

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
    jar: Jar<64>,
}

impl std::fmt::Debug for RailsSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.jar.fmt_as("RailsSigned", f, None)
    }
}

type HmacSha1 = hmac::Hmac<Sha1>;

impl RailsSigned {
    jar_api! {
        new: "The signed cookie `cookie_name` of an app with this `secret_key_base`."
            => RAILS_SIGNED_COOKIE_SALT, |jar| Self { jar };
        with_salt: "Another `signed_cookie_salt` (re-runs the key derivation).";
        cookie_name: "The cookie's name (it is also the purpose, `cookie.NAME`).";
    }

    fn mac(&self) -> HmacSha1 {
        <HmacSha1 as hmac::Mac>::new_from_slice(self.jar.key.key())
            .expect("HMAC takes any key length")
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
        let (data, exp) = unwrap_envelope(value, &self.jar.purpose)?;
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
        let plain = envelope_json(value, expires_at, &self.jar.purpose, self.jar.envelope)?;
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
