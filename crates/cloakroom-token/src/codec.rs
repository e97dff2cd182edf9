//! Minting and opening tokens for one purpose.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::subkeys::SubkeyCache;
use crate::xchacha::{self, NONCE_LEN, TAG_LEN};
use crate::{b64, Error, ErrorKind, KeyId, KeyRing};

/// The longest token this crate mints or opens, in bytes (a browser keeps 4096 bytes per
/// cookie, name and attributes included).
pub const MAX_TOKEN_LEN: usize = 4096;

/// The envelope's version byte.
pub const ENVELOPE_VERSION: u8 = 1;

/// HKDF salt for every derived key.
pub const HKDF_SALT: &[u8] = b"cloakroom/1";

/// Envelope header: version (1) + issued_at (8) + expires_at (8).
const HEADER_LEN: usize = 17;
const MAC_LEN: usize = 32;
const MAC_TEXT_LEN: usize = b64::encoded_len(MAC_LEN);
const SIGNED_PREFIX: &[u8] = b"s1.";
const SEALED_PREFIX: &[u8] = b"e1.";

/// The kind of a token, read from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenKind {
    /// `s1.<kid>.<payload>.<mac>`: readable by anyone, forgeable by no one.
    Signed,
    /// `e1.<kid>.<box>`: readable and forgeable by no one.
    Sealed,
}

/// A token that verified: its application bytes and the times inside its MAC or tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    payload: Vec<u8>,
    issued_at: u64,
    expires_at: u64,
    kind: TokenKind,
    primary: bool,
}

impl Opened {
    /// The application bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the application bytes.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// When the token was minted, in unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// When the token stops opening, in unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// Whether the token was signed or sealed.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// Whether the token was minted with the ring's current primary key. When it was not, the
    /// caller may mint a fresh token so that the old key can be retired sooner.
    pub fn minted_with_primary(&self) -> bool {
        self.primary
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload may be secret (a sealed token's data): show its size only.
        f.debug_struct("Opened")
            .field("payload_len", &self.payload.len())
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("kind", &self.kind)
            .field("primary", &self.primary)
            .finish()
    }
}

/// Keys derived from one master key for one purpose.
struct DerivedKey {
    id: KeyId,
    /// HMAC-SHA256 keyed with K_sign, with `u16be(len(purpose)) || purpose` already absorbed,
    /// so a verify clones it and hashes only the token text.
    mac: Hmac<Sha256>,
    seal: Zeroizing<[u8; 32]>,
    /// `u16be(len(purpose)) || purpose || "e1." || kid || "."`: the sealed kind's AAD.
    seal_aad: Vec<u8>,
    /// The subkeys of sealed tokens that opened recently (see `subkeys.rs`).
    subkeys: SubkeyCache,
}

impl Drop for DerivedKey {
    fn drop(&mut self) {
        // RustCrypto's HMAC state does not zeroize itself; overwrite it with a state keyed by
        // zeros. `black_box` keeps the store from being optimised away.
        self.mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default());
        std::hint::black_box(&self.mac);
    }
}

/// Mints and opens tokens of one purpose (usually the cookie name) with one key ring.
///
/// Build it once with [`KeyRing::codec`] and keep it: the HKDF derivations and the keyed HMAC
/// states are made there, so each verify costs only the hashing of the token itself.
///
/// The codec is sans-IO: times are passed in as unix seconds, and the only thing it asks the
/// operating system for is randomness for sealed tokens' nonces.
pub struct Codec {
    purpose: String,
    keys: Vec<DerivedKey>,
    primary: usize,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            purpose,
            keys,
            primary,
        } = self;
        f.debug_struct("Codec")
            .field("purpose", purpose)
            .field("keys", &keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .field("primary", &keys[*primary].id)
            .finish()
    }
}

impl KeyRing {
    /// Derives the keys for `purpose` and returns a codec for it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if `purpose` is empty or longer than 65535 bytes.
    pub fn codec(&self, purpose: &str) -> Result<Codec, Error> {
        Codec::new(self, purpose)
    }
}

/// Derives the 32-byte key for `label` (`sign:` or `seal:`) and `purpose` from a master
/// secret: HKDF-SHA256 with salt `cloakroom/1` and info `label || purpose`.
pub fn derive_key(master: &[u8], label: &str, purpose: &str) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), master);
    let mut out = Zeroizing::new([0u8; 32]);
    let mut info = Vec::with_capacity(label.len() + purpose.len());
    info.extend_from_slice(label.as_bytes());
    info.extend_from_slice(purpose.as_bytes());
    // 32 bytes is far below HKDF-SHA256's limit of 8160.
    hk.expand(&info, out.as_mut())
        .unwrap_or_else(|_| unreachable!());
    out
}

/// Raw HMAC-SHA256 of `message` under `key`, for comparing with other tools (the CLI's
/// `cloakroom hmac`). Tokens never use this directly: their keys are derived per purpose.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn purpose_prefix(purpose: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + purpose.len());
    // Codec::new checked that the length fits in a u16.
    out.extend_from_slice(&(purpose.len() as u16).to_be_bytes());
    out.extend_from_slice(purpose.as_bytes());
    out
}

fn envelope_times(envelope: &[u8]) -> Option<(u64, u64)> {
    if envelope.len() < HEADER_LEN || envelope[0] != ENVELOPE_VERSION {
        return None;
    }
    let issued = u64::from_be_bytes(envelope[1..9].try_into().ok()?);
    let expires = u64::from_be_bytes(envelope[9..17].try_into().ok()?);
    Some((issued, expires))
}

fn write_header(out: &mut Vec<u8>, issued_at: u64, expires_at: u64) {
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&issued_at.to_be_bytes());
    out.extend_from_slice(&expires_at.to_be_bytes());
}

fn check_times(issued_at: u64, expires_at: u64) -> Result<(), Error> {
    if expires_at <= issued_at {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("expires_at ({expires_at}) must be after issued_at ({issued_at})"),
        ));
    }
    Ok(())
}

fn check_size(len: usize) -> Result<(), Error> {
    if len > MAX_TOKEN_LEN {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("the token would be {len} bytes, over the limit of {MAX_TOKEN_LEN}"),
        ));
    }
    Ok(())
}

/// Compares two MACs in constant time: every byte is read whatever the others hold, and the
/// one data-dependent branch is on the OR of all differences, hidden behind `black_box`.
fn ct_eq32(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u64;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or_default());
        let y = u64::from_ne_bytes(y.try_into().unwrap_or_default());
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The envelope header's bytes rounded up to whole base64 groups (18), and their text (24
/// characters): a signed token's payload text splits there into the header (plus the first
/// application byte) and the rest of the application bytes, each decodable on its own.
const HEAD_GROUP_LEN: usize = HEADER_LEN.div_ceil(3) * 3;
const HEAD_GROUP_TEXT_LEN: usize = HEAD_GROUP_LEN / 3 * 4;

/// Decodes a signed token's payload text (its MAC has verified) into the times and the
/// application bytes. The header is decoded into a stack buffer and checked first, so an
/// expired token allocates nothing; the application bytes are decoded straight into the
/// returned vector, its one allocation (none for an empty payload).
fn open_envelope_text(text: &[u8], now: u64) -> Result<(u64, u64, Vec<u8>), Error> {
    let (head_text, rest_text) = text.split_at(text.len().min(HEAD_GROUP_TEXT_LEN));
    let mut head = [0u8; HEAD_GROUP_LEN];
    let head_len = b64::decoded_len(head_text.len()).ok_or_else(Error::invalid)?;
    let head = &mut head[..head_len];
    b64::decode_exact(head_text, head).ok_or_else(Error::invalid)?;
    let (issued_at, expires_at) = envelope_times(head).ok_or_else(Error::invalid)?;
    if now >= expires_at {
        return Err(Error::expired());
    }
    let first = &head[HEADER_LEN..];
    let rest_len = b64::decoded_len(rest_text.len()).ok_or_else(Error::invalid)?;
    let mut payload = Vec::with_capacity(first.len() + rest_len);
    payload.extend_from_slice(first);
    payload.resize(first.len() + rest_len, 0);
    b64::decode_exact(rest_text, &mut payload[first.len()..]).ok_or_else(Error::invalid)?;
    Ok((issued_at, expires_at, payload))
}

/// Stack buffer sizes for opening a sealed token's box: the box of a 64-byte payload is 121
/// bytes; no box of a token within [`MAX_TOKEN_LEN`] exceeds `MAX_BOX`.
const SMALL_BOX: usize = 256;
const MEDIUM_BOX: usize = 1024;
const MAX_BOX: usize = b64::decoded_len_max(MAX_TOKEN_LEN);

/// Decodes a sealed token's box text (`box_len` bytes, at most `N`) into a stack buffer and
/// opens it there; returns the times and the application bytes, the one allocation, made only
/// once the tag has verified and the token is live. The plaintext left in the buffer is
/// overwritten before returning.
fn open_box<const N: usize>(
    key: &DerivedKey,
    text: &[u8],
    box_len: usize,
    now: u64,
) -> Result<(u64, u64, Vec<u8>), Error> {
    let mut buf = [0u8; N];
    let sealed = buf.get_mut(..box_len).ok_or_else(Error::invalid)?;
    b64::decode_exact(text, sealed).ok_or_else(Error::invalid)?;
    let (nonce, in_out) = sealed.split_at_mut(NONCE_LEN);
    let nonce: &[u8; NONCE_LEN] = (&*nonce).try_into().map_err(|_| Error::invalid())?;
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&nonce[..16]);
    // The subkey of a token opened before, else computed (and kept once the tag verifies).
    let opened = key.subkeys.with(&prefix, |subkey| {
        xchacha::open_with(subkey, nonce, &key.seal_aad, in_out)
    });
    let plain_len = match opened {
        Some(plain_len) => plain_len,
        None => {
            let subkey = xchacha::subkey(&key.seal, nonce);
            let plain_len = xchacha::open_with(&subkey, nonce, &key.seal_aad, in_out);
            if plain_len.is_some() {
                key.subkeys.insert(prefix, subkey);
            }
            plain_len
        }
    }
    .ok_or_else(Error::invalid)?;
    let plain = &mut in_out[..plain_len];
    let opened =
        envelope_times(plain)
            .ok_or_else(Error::invalid)
            .and_then(|(issued_at, expires_at)| {
                if now >= expires_at {
                    Err(Error::expired())
                } else {
                    Ok((issued_at, expires_at, plain[HEADER_LEN..].to_vec()))
                }
            });
    // The caller now owns the only copy it needs; `black_box` keeps these stores from being
    // optimised away as dead.
    plain.fill(0);
    std::hint::black_box(&plain);
    opened
}

/// Splits `<kid>.<rest>` after a kind prefix.
fn split_kid(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let dot = text.iter().position(|&c| c == b'.')?;
    Some((&text[..dot], &text[dot + 1..]))
}

impl Codec {
    fn new(ring: &KeyRing, purpose: &str) -> Result<Self, Error> {
        if purpose.is_empty() || purpose.len() > usize::from(u16::MAX) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a purpose must be 1 to 65535 bytes",
            ));
        }
        let prefix = purpose_prefix(purpose);
        let keys = ring
            .keys()
            .iter()
            .map(|key| {
                let sign = derive_key(key.secret().expose(), "sign:", purpose);
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(sign.as_ref())
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                mac.update(&prefix);
                let mut seal_aad = prefix.clone();
                seal_aad.extend_from_slice(SEALED_PREFIX);
                seal_aad.extend_from_slice(key.id().as_str().as_bytes());
                seal_aad.push(b'.');
                DerivedKey {
                    id: key.id().clone(),
                    mac,
                    seal: derive_key(key.secret().expose(), "seal:", purpose),
                    seal_aad,
                    subkeys: SubkeyCache::default(),
                }
            })
            .collect();
        Ok(Self {
            purpose: purpose.to_owned(),
            keys,
            primary: ring.primary_index(),
        })
    }

    /// The purpose this codec binds its tokens to.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    fn find(&self, kid: &[u8]) -> Option<(usize, &DerivedKey)> {
        self.keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.id.as_str().as_bytes() == kid)
    }

    /// Mints a signed token `s1.<kid>.<payload>.<mac>` with the primary key.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if `expires_at <= issued_at`; [`ErrorKind::TooLarge`] if
    /// the token would exceed [`MAX_TOKEN_LEN`] bytes (the message names the size).
    pub fn sign(&self, payload: &[u8], issued_at: u64, expires_at: u64) -> Result<String, Error> {
        check_times(issued_at, expires_at)?;
        let key = &self.keys[self.primary];
        let kid = key.id.as_str();
        let len = SIGNED_PREFIX.len()
            + kid.len()
            + 1
            + b64::encoded_len(HEADER_LEN + payload.len())
            + 1
            + MAC_TEXT_LEN;
        check_size(len)?;
        let mut envelope = Vec::with_capacity(HEADER_LEN + payload.len());
        write_header(&mut envelope, issued_at, expires_at);
        envelope.extend_from_slice(payload);
        let mut token = String::with_capacity(len);
        token.push_str("s1.");
        token.push_str(kid);
        token.push('.');
        b64::encode_into(&envelope, &mut token);
        let mut mac = key.mac.clone();
        mac.update(token.as_bytes());
        let tag = mac.finalize().into_bytes();
        token.push('.');
        b64::encode_into(&tag, &mut token);
        debug_assert_eq!(token.len(), len);
        Ok(token)
    }

    /// Opens a signed token.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] for anything that is not a signed token minted by this key ring
    /// for this purpose; [`ErrorKind::Expired`] if it is, but `now >= expires_at`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Opened, Error> {
        let bytes = token.as_bytes();
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(Error::invalid());
        }
        let rest = bytes
            .strip_prefix(SIGNED_PREFIX)
            .ok_or_else(Error::invalid)?;
        let (kid, body) = split_kid(rest).ok_or_else(Error::invalid)?;
        let (index, key) = self.find(kid).ok_or_else(Error::invalid)?;
        if body.len() < MAC_TEXT_LEN + 1 || body[body.len() - MAC_TEXT_LEN - 1] != b'.' {
            return Err(Error::invalid());
        }
        let signed_len = bytes.len() - MAC_TEXT_LEN - 1;
        let mut tag = [0u8; MAC_LEN];
        b64::decode_exact(&bytes[signed_len + 1..], &mut tag).ok_or_else(Error::invalid)?;
        let mut mac = key.mac.clone();
        mac.update(&bytes[..signed_len]);
        if !ct_eq32(&mac.finalize().into_bytes().into(), &tag) {
            return Err(Error::invalid());
        }
        let payload_text = &body[..body.len() - MAC_TEXT_LEN - 1];
        let (issued_at, expires_at, payload) = open_envelope_text(payload_text, now)?;
        Ok(Opened {
            payload,
            issued_at,
            expires_at,
            kind: TokenKind::Signed,
            primary: index == self.primary,
        })
    }

    /// Mints a sealed token `e1.<kid>.<box>` with the primary key and a fresh random nonce.
    ///
    /// # Errors
    /// As [`Codec::sign`].
    pub fn seal(&self, payload: &[u8], issued_at: u64, expires_at: u64) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        // ThreadRng is a CSPRNG (ChaCha12) seeded from the operating system and reseeded
        // periodically; 192-bit random nonces never repeat in practice.
        rand::thread_rng().fill_bytes(&mut nonce);
        self.seal_inner(payload, issued_at, expires_at, &nonce)
    }

    /// Mints a sealed token with a caller-chosen nonce, for known-answer tests only.
    ///
    /// Never use this in production: two tokens sealed under one key with one nonce reveal
    /// both plaintexts' XOR and allow forgeries.
    ///
    /// # Errors
    /// As [`Codec::sign`].
    #[cfg(feature = "test-vectors")]
    pub fn seal_with_nonce(
        &self,
        payload: &[u8],
        issued_at: u64,
        expires_at: u64,
        nonce: &[u8; 24],
    ) -> Result<String, Error> {
        self.seal_inner(payload, issued_at, expires_at, nonce)
    }

    fn seal_inner(
        &self,
        payload: &[u8],
        issued_at: u64,
        expires_at: u64,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<String, Error> {
        check_times(issued_at, expires_at)?;
        let key = &self.keys[self.primary];
        let kid = key.id.as_str();
        let box_len = NONCE_LEN + HEADER_LEN + payload.len() + TAG_LEN;
        let len = SEALED_PREFIX.len() + kid.len() + 1 + b64::encoded_len(box_len);
        check_size(len)?;
        let mut sealed = Zeroizing::new(Vec::with_capacity(box_len));
        sealed.extend_from_slice(nonce);
        write_header(&mut sealed, issued_at, expires_at);
        sealed.extend_from_slice(payload);
        let tag = xchacha::seal(&key.seal, nonce, &key.seal_aad, &mut sealed[NONCE_LEN..]);
        sealed.extend_from_slice(&tag);
        let mut token = String::with_capacity(len);
        token.push_str("e1.");
        token.push_str(kid);
        token.push('.');
        b64::encode_into(&sealed, &mut token);
        debug_assert_eq!(token.len(), len);
        Ok(token)
    }

    /// Opens a sealed token.
    ///
    /// # Errors
    /// As [`Codec::verify`].
    pub fn unseal(&self, token: &str, now: u64) -> Result<Opened, Error> {
        let bytes = token.as_bytes();
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(Error::invalid());
        }
        let rest = bytes
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(Error::invalid)?;
        let (kid, body) = split_kid(rest).ok_or_else(Error::invalid)?;
        let (index, key) = self.find(kid).ok_or_else(Error::invalid)?;
        let box_len = b64::decoded_len(body.len()).ok_or_else(Error::invalid)?;
        if box_len < NONCE_LEN + HEADER_LEN + TAG_LEN {
            return Err(Error::invalid());
        }
        // The box is decoded and opened in a stack buffer, so a token that fails costs no
        // allocation; three sizes keep the buffer's zeroing in proportion to the token.
        let (issued_at, expires_at, payload) = if box_len <= SMALL_BOX {
            open_box::<SMALL_BOX>(key, body, box_len, now)
        } else if box_len <= MEDIUM_BOX {
            open_box::<MEDIUM_BOX>(key, body, box_len, now)
        } else {
            open_box::<MAX_BOX>(key, body, box_len, now)
        }?;
        Ok(Opened {
            payload,
            issued_at,
            expires_at,
            kind: TokenKind::Sealed,
            primary: index == self.primary,
        })
    }

    /// Opens a token of either kind.
    ///
    /// # Errors
    /// As [`Codec::verify`].
    pub fn open(&self, token: &str, now: u64) -> Result<Opened, Error> {
        if token.as_bytes().starts_with(SEALED_PREFIX) {
            self.unseal(token, now)
        } else {
            self.verify(token, now)
        }
    }
}

/// What can be read from a token without a key. It says nothing about whether the token is
/// authentic: anyone can write a token that inspects well.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspected {
    /// The kind, from the prefix.
    pub kind: TokenKind,
    /// The key id the token names.
    pub key_id: String,
    /// For a signed token: the claimed issue time, expiry and application bytes. A sealed
    /// token shows none of these without its key.
    pub claims: Option<Claims>,
    /// The token's length in bytes.
    pub len: usize,
}

/// The unverified contents of a signed token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claims {
    /// Claimed issue time, unix seconds.
    pub issued_at: u64,
    /// Claimed expiry, unix seconds.
    pub expires_at: u64,
    /// Claimed application bytes.
    pub payload: Vec<u8>,
}

/// Reads a token's structure without verifying it.
///
/// # Errors
/// [`ErrorKind::Invalid`] if the text does not have a token's shape.
pub fn inspect(token: &str) -> Result<Inspected, Error> {
    let bytes = token.as_bytes();
    let (kind, rest) = if let Some(rest) = bytes.strip_prefix(SIGNED_PREFIX) {
        (TokenKind::Signed, rest)
    } else if let Some(rest) = bytes.strip_prefix(SEALED_PREFIX) {
        (TokenKind::Sealed, rest)
    } else {
        return Err(Error::invalid());
    };
    let (kid, body) = split_kid(rest).ok_or_else(Error::invalid)?;
    if !KeyId::is_valid(kid) {
        return Err(Error::invalid());
    }
    let claims = match kind {
        TokenKind::Signed => {
            let (payload_text, mac_text) = split_kid(body).ok_or_else(Error::invalid)?;
            let mut tag = [0u8; MAC_LEN];
            b64::decode_exact(mac_text, &mut tag).ok_or_else(Error::invalid)?;
            let envelope = b64::decode(payload_text).ok_or_else(Error::invalid)?;
            let (issued_at, expires_at) = envelope_times(&envelope).ok_or_else(Error::invalid)?;
            Some(Claims {
                issued_at,
                expires_at,
                payload: envelope[HEADER_LEN..].to_vec(),
            })
        }
        TokenKind::Sealed => {
            let sealed = b64::decode(body).ok_or_else(Error::invalid)?;
            if sealed.len() < NONCE_LEN + HEADER_LEN + TAG_LEN {
                return Err(Error::invalid());
            }
            None
        }
    };
    Ok(Inspected {
        kind,
        key_id: String::from_utf8_lossy(kid).into_owned(),
        claims,
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq32_sees_every_byte() {
        let a = [0x5au8; 32];
        assert!(ct_eq32(&a, &a));
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!ct_eq32(&a, &b), "byte {i} bit {bit}");
            }
        }
    }
}
