//! CSRF: a per-session secret, masked tokens, and the origin check.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind};

/// Length of the CSRF secret in bytes.
pub const CSRF_SECRET_LEN: usize = 32;

/// Length of a masked CSRF token in characters: base64url of `pad || pad XOR secret`.
pub const CSRF_TOKEN_LEN: usize = 86;

/// A session's CSRF secret. It never leaves the session unmasked. `Debug` prints no bytes,
/// equality is constant-time, the bytes are zeroized on drop.
#[derive(Clone)]
pub struct CsrfSecret(Zeroizing<[u8; CSRF_SECRET_LEN]>);

impl CsrfSecret {
    /// A fresh secret from the OS CSPRNG.
    ///
    /// # Errors
    /// [`ErrorKind::Random`] if the OS generator fails.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = Zeroizing::new([0u8; CSRF_SECRET_LEN]);
        getrandom::getrandom(bytes.as_mut()).map_err(Error::random)?;
        Ok(Self(bytes))
    }

    /// A secret from its bytes.
    pub fn from_bytes(bytes: [u8; CSRF_SECRET_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw bytes.
    pub fn expose(&self) -> &[u8; CSRF_SECRET_LEN] {
        &self.0
    }

    /// A freshly masked token: a new random pad each call, so no two responses carry the
    /// same token (BREACH).
    pub fn mask(&self) -> String {
        let mut pad = [0u8; CSRF_SECRET_LEN];
        rand::thread_rng().fill_bytes(&mut pad);
        self.mask_with_pad(&pad)
    }

    /// The token for a given pad: base64url-nopad(`pad || pad XOR secret`).
    pub fn mask_with_pad(&self, pad: &[u8; CSRF_SECRET_LEN]) -> String {
        let mut raw = Zeroizing::new([0u8; 2 * CSRF_SECRET_LEN]);
        raw[..CSRF_SECRET_LEN].copy_from_slice(pad);
        for i in 0..CSRF_SECRET_LEN {
            raw[CSRF_SECRET_LEN + i] = pad[i] ^ self.0[i];
        }
        URL_SAFE_NO_PAD.encode(raw.as_ref())
    }

    /// Whether `token` is a masking of this secret. Constant-time in the secret; a token of
    /// the wrong shape is refused before any comparison.
    pub fn verify(&self, token: &str) -> bool {
        match unmask_csrf_token(token) {
            Some(other) => bool::from(self.0.ct_eq(other.0.as_ref())),
            None => false,
        }
    }
}

/// Removes the mask from a token, giving the secret it carries, or `None` if it is not 86
/// characters of canonical base64url.
pub fn unmask_csrf_token(token: &str) -> Option<CsrfSecret> {
    if token.len() != CSRF_TOKEN_LEN {
        return None;
    }
    let mut raw = Zeroizing::new([0u8; 2 * CSRF_SECRET_LEN]);
    let n = URL_SAFE_NO_PAD
        .decode_slice(token.as_bytes(), raw.as_mut())
        .ok()?;
    if n != 2 * CSRF_SECRET_LEN {
        return None;
    }
    let mut secret = [0u8; CSRF_SECRET_LEN];
    for i in 0..CSRF_SECRET_LEN {
        secret[i] = raw[i] ^ raw[CSRF_SECRET_LEN + i];
    }
    Some(CsrfSecret::from_bytes(secret))
}

impl PartialEq for CsrfSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(other.0.as_ref()).into()
    }
}

impl Eq for CsrfSecret {}

impl fmt::Debug for CsrfSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfSecret(..)")
    }
}

/// Whether an HTTP method is safe (RFC 9110 §9.2.1): GET, HEAD, OPTIONS, TRACE. Safe
/// methods need no CSRF token and must change nothing.
pub fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// Refuses cross-site unsafe requests by their `Sec-Fetch-Site` and `Origin` headers, the
/// first line of CSRF defence before the token (OWASP CSRF cheat sheet, "Fetch Metadata" and
/// "Verifying Origin").
///
/// For an unsafe method:
/// - `Sec-Fetch-Site: same-origin` or `none` (typed by the user) passes; `same-site` and
///   `cross-site` are refused (a sibling subdomain is not trusted).
/// - Without `Sec-Fetch-Site`, an `Origin` must be one of the allowed origins
///   (`scheme://host[:port]`, compared exactly, ASCII case-insensitively); `Origin: null` is
///   refused.
/// - With neither header (old browsers, non-browser clients) the request passes this check
///   and must still carry a valid token.
///
/// ```
/// use cloakroom::OriginCheck;
///
/// let check = OriginCheck::new(["https://shop.example"]);
/// assert!(check.check("POST", None, Some("same-origin")).is_ok());
/// assert!(check.check("POST", Some("https://evil.example"), Some("cross-site")).is_err());
/// assert!(check.check("POST", Some("https://evil.example"), None).is_err());
/// assert!(check.check("POST", Some("https://shop.example"), None).is_ok());
/// assert!(check.check("GET", Some("https://evil.example"), Some("cross-site")).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct OriginCheck {
    allowed: Vec<String>,
}

impl OriginCheck {
    /// A check accepting requests from `allowed` origins, e.g. `https://shop.example`.
    pub fn new<I, S>(allowed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            allowed: allowed
                .into_iter()
                .map(|s| s.into().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Checks one request.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] for a cross-site unsafe request.
    pub fn check(
        &self,
        method: &str,
        origin: Option<&str>,
        sec_fetch_site: Option<&str>,
    ) -> Result<(), Error> {
        if is_safe_method(method) {
            return Ok(());
        }
        if let Some(site) = sec_fetch_site {
            return match site.trim().to_ascii_lowercase().as_str() {
                "same-origin" | "none" => Ok(()),
                _ => Err(Error::new(
                    ErrorKind::Forbidden,
                    "cross-site request refused (Sec-Fetch-Site)",
                )),
            };
        }
        match origin {
            None => Ok(()),
            Some(origin) => {
                let origin = origin.trim().to_ascii_lowercase();
                if origin != "null" && self.allowed.contains(&origin) {
                    Ok(())
                } else {
                    Err(Error::new(
                        ErrorKind::Forbidden,
                        "cross-site request refused (Origin)",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_verify() {
        let s = CsrfSecret::generate().unwrap();
        let a = s.mask();
        let b = s.mask();
        assert_ne!(a, b);
        assert_eq!(a.len(), CSRF_TOKEN_LEN);
        assert!(s.verify(&a) && s.verify(&b));
        let other = CsrfSecret::generate().unwrap();
        assert!(!other.verify(&a));
        assert!(!s.verify(""));
        assert!(!s.verify(&a[1..]));
        let mut flipped = a.clone().into_bytes();
        flipped[50] = if flipped[50] == b'A' { b'B' } else { b'A' };
        assert!(!s.verify(std::str::from_utf8(&flipped).unwrap()));
        assert_eq!(format!("{s:?}"), "CsrfSecret(..)");
    }

    #[test]
    fn origin_rules() {
        let c = OriginCheck::new(["https://Shop.example/"]);
        assert!(c.check("POST", None, None).is_ok());
        assert!(c.check("POST", Some("https://shop.example"), None).is_ok());
        assert!(c.check("DELETE", Some("null"), None).is_err());
        assert!(c.check("PUT", Some("http://shop.example"), None).is_err());
        assert!(c.check("POST", None, Some("same-site")).is_err());
        assert!(c.check("POST", None, Some("none")).is_ok());
        assert_eq!(
            c.check("PATCH", None, Some("cross-site"))
                .unwrap_err()
                .kind(),
            ErrorKind::Forbidden
        );
        assert!(c.check("HEAD", None, Some("cross-site")).is_ok());
    }
}
