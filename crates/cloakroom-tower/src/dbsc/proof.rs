//! The browser's signed proof (a JWT in `Secure-Session-Response`): parsing, the public
//! key it names or the session holds, and the signature check, with `ring` doing the
//! ECDSA P-256 and RSA PKCS#1 v1.5 verification.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The largest proof accepted, in bytes (an RS256 proof with an 8192-bit key in it is about
/// 3 KB).
const MAX_PROOF_LEN: usize = 8 * 1024;

/// A proof that failed: nothing more is said (a failed verification says "invalid").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

/// A signature algorithm of the draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Alg {
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 to 8192 bits.
    RS256,
}

impl Alg {
    fn parse(name: &str) -> Result<Self, Invalid> {
        match name {
            "ES256" => Ok(Self::ES256),
            "RS256" => Ok(Self::RS256),
            _ => Err(Invalid),
        }
    }
}

/// A public key as the session keeps it: the raw parts, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub(crate) enum PublicKey {
    /// A P-256 point, uncompressed (`04 || x || y`).
    #[serde(rename = "EC")]
    Ec { point: String },
    /// An RSA modulus and exponent, big-endian.
    #[serde(rename = "RSA")]
    Rsa { n: String, e: String },
}

impl PublicKey {
    fn alg(&self) -> Alg {
        match self {
            Self::Ec { .. } => Alg::ES256,
            Self::Rsa { .. } => Alg::RS256,
        }
    }

    /// Bytes naming this key alone, for the marker that binds it to one session.
    pub(crate) fn fingerprint_input(&self) -> Vec<u8> {
        match self {
            Self::Ec { point } => format!("EC\0{point}").into_bytes(),
            Self::Rsa { n, e } => format!("RSA\0{n}\0{e}").into_bytes(),
        }
    }

    fn from_jwk(jwk: &Jwk) -> Result<Self, Invalid> {
        match jwk.kty.as_str() {
            "EC" => {
                if jwk.crv.as_deref() != Some("P-256") {
                    return Err(Invalid);
                }
                let x = b64(jwk.x.as_deref().ok_or(Invalid)?)?;
                let y = b64(jwk.y.as_deref().ok_or(Invalid)?)?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(Invalid);
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(Self::Ec {
                    point: URL_SAFE_NO_PAD.encode(point),
                })
            }
            "RSA" => {
                let n = b64(jwk.n.as_deref().ok_or(Invalid)?)?;
                let e = b64(jwk.e.as_deref().ok_or(Invalid)?)?;
                // 2048 to 8192 bits, as ring verifies; no leading zero byte.
                if !(256..=1024).contains(&n.len()) || n[0] == 0 || e.is_empty() || e.len() > 4 {
                    return Err(Invalid);
                }
                Ok(Self::Rsa {
                    n: URL_SAFE_NO_PAD.encode(n),
                    e: URL_SAFE_NO_PAD.encode(e),
                })
            }
            _ => Err(Invalid),
        }
    }

    /// Whether `signature` over `message` verifies with this key under `alg`.
    fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> Result<(), Invalid> {
        if alg != self.alg() {
            return Err(Invalid);
        }
        match self {
            Self::Ec { point } => {
                let point = b64(point)?;
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .map_err(|_| Invalid)
            }
            Self::Rsa { n, e } => {
                let (n, e) = (b64(n)?, b64(e)?);
                RsaPublicKeyComponents { n, e }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                    .map_err(|_| Invalid)
            }
        }
    }
}

fn b64(text: &str) -> Result<Vec<u8>, Invalid> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| Invalid)
}

/// A JSON Web Key, the fields this draft's keys use.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    /// Where Chromium puts the key.
    jwk: Option<Jwk>,
}

#[derive(Deserialize)]
struct Claims {
    aud: Option<String>,
    jti: Option<String>,
    sub: Option<String>,
    /// Where the draft puts the key.
    key: Option<Jwk>,
}

/// A proof whose signature has been checked.
#[derive(Debug)]
pub(crate) struct Proof {
    /// The key it was signed with.
    pub(crate) key: PublicKey,
    /// The challenge it answers (`jti`).
    pub(crate) challenge: String,
    /// The audience (the URL it was sent to), if given.
    pub(crate) aud: Option<String>,
    /// The session identifier (`sub`), if given: refresh proofs carry it.
    pub(crate) sub: Option<String>,
}

struct Parsed {
    alg: Alg,
    header_key: Option<PublicKey>,
    claims: Claims,
    signed: String,
    signature: Vec<u8>,
}

/// The value of `Secure-Session-Response`: an sf-string holding the JWT (a bare JWT is
/// taken too).
fn parse(value: &str) -> Result<Parsed, Invalid> {
    let jwt = crate::dbsc::sf_string(value).ok_or(Invalid)?;
    if jwt.len() > MAX_PROOF_LEN {
        return Err(Invalid);
    }
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid);
    };
    let header: Header = serde_json::from_slice(&b64(h)?).map_err(|_| Invalid)?;
    let claims: Claims = serde_json::from_slice(&b64(c)?).map_err(|_| Invalid)?;
    if header.typ.as_deref().is_some_and(|t| t != "dbsc+jwt") {
        return Err(Invalid);
    }
    let alg = Alg::parse(&header.alg)?;
    let header_key = header.jwk.as_ref().map(PublicKey::from_jwk).transpose()?;
    Ok(Parsed {
        alg,
        header_key,
        claims,
        signed: format!("{h}.{c}"),
        signature: b64(s)?,
    })
}

impl Parsed {
    fn into_proof(self, key: PublicKey) -> Result<Proof, Invalid> {
        key.verify(self.alg, self.signed.as_bytes(), &self.signature)?;
        Ok(Proof {
            key,
            challenge: self.claims.jti.ok_or(Invalid)?,
            aud: self.claims.aud,
            sub: self.claims.sub,
        })
    }
}

/// A registration proof: signed with the key it carries (in the JWT header's `jwk`, where
/// Chromium puts it, or the `key` claim, where the draft does; both must agree).
pub(crate) fn verify_registration(value: &str) -> Result<Proof, Invalid> {
    let parsed = parse(value)?;
    let claim_key = parsed
        .claims
        .key
        .as_ref()
        .map(PublicKey::from_jwk)
        .transpose()?;
    let key = match (&parsed.header_key, claim_key) {
        (Some(h), Some(c)) if *h == c => c,
        (Some(_), Some(_)) | (None, None) => return Err(Invalid),
        (Some(h), None) => h.clone(),
        (None, Some(c)) => c,
    };
    parsed.into_proof(key)
}

/// A refresh proof: signed with the session's key (a key named in the proof must be it).
pub(crate) fn verify_refresh(value: &str, key: &PublicKey) -> Result<Proof, Invalid> {
    let parsed = parse(value)?;
    let named = [
        parsed.header_key.clone(),
        parsed
            .claims
            .key
            .as_ref()
            .map(PublicKey::from_jwk)
            .transpose()?,
    ];
    if named.iter().flatten().any(|k| k != key) {
        return Err(Invalid);
    }
    parsed.into_proof(key.clone())
}
