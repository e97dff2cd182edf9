//! Minting and opening tokens for one purpose.

use std::fmt;
use std::mem::MaybeUninit;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::opened::Opened;
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

/// Compares two MACs in constant time with `subtle`: the words' differences are ORed
/// together branch-free, and `subtle` turns the result into a [`subtle::Choice`] behind its
/// optimisation barrier. `subtle`'s own comparison of byte slices puts that barrier (a call)
/// after each of the 32 bytes, which costs about 25 ns of a 270 ns verify (measured in
/// docs/benchmarks.md); one barrier is as constant-time and costs about 1 ns.
fn ct_eq32(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq as _;
    let diff = a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .fold(0u64, |diff, (x, y)| {
            let x = u64::from_ne_bytes(x.try_into().unwrap_or_default());
            let y = u64::from_ne_bytes(y.try_into().unwrap_or_default());
            diff | (x ^ y)
        });
    diff.ct_eq(&0).into()
}

/// A stack buffer that holds the decoded bytes of any token within [`MAX_TOKEN_LEN`]. It is
/// left uninitialised (the decoder writes before anything reads), so its size costs nothing.
const MAX_DECODED: usize = b64::decoded_len_max(MAX_TOKEN_LEN);

/// Checks an envelope (its MAC or tag has verified) against `now` and returns what opened.
fn open_envelope(
    envelope: &[u8],
    now: u64,
    kind: TokenKind,
    primary: bool,
) -> Result<Opened, Error> {
    let (issued_at, expires_at) = envelope_times(envelope).ok_or_else(Error::invalid)?;
    if now >= expires_at {
        return Err(Error::expired());
    }
    Ok(Opened::new(
        &envelope[HEADER_LEN..],
        issued_at,
        expires_at,
        kind,
        primary,
    ))
}

/// Decodes a sealed token's box text into a stack buffer and opens it there. The plaintext
/// left in the buffer is overwritten before returning.
fn open_box(key: &DerivedKey, text: &[u8], now: u64, primary: bool) -> Result<Opened, Error> {
    let mut buf = [MaybeUninit::<u8>::uninit(); MAX_DECODED];
    let sealed = b64::decode_uninit(text, &mut buf).ok_or_else(Error::invalid)?;
    if sealed.len() < NONCE_LEN + HEADER_LEN + TAG_LEN {
        return Err(Error::invalid());
    }
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
    let opened = open_envelope(plain, now, TokenKind::Sealed, primary);
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

    /// What opening a token of the kind `prefix` starts needs first: the key its id names,
    /// whether that is the primary key, and the text after `<kid>.`. `Invalid` for a token
    /// too long, of another kind, or naming no key of the ring.
    fn key_for<'t>(
        &self,
        token: &'t [u8],
        prefix: &[u8],
    ) -> Result<(&DerivedKey, bool, &'t [u8]), Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::invalid());
        }
        let rest = token.strip_prefix(prefix).ok_or_else(Error::invalid)?;
        let (kid, body) = split_kid(rest).ok_or_else(Error::invalid)?;
        let (index, key) = self.find(kid).ok_or_else(Error::invalid)?;
        Ok((key, index == self.primary, body))
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
        let (key, primary, body) = self.key_for(bytes, SIGNED_PREFIX)?;
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
        // The envelope is decoded only now that the MAC has verified, into a stack buffer.
        let payload_text = &body[..body.len() - MAC_TEXT_LEN - 1];
        let mut buf = [MaybeUninit::<u8>::uninit(); MAX_DECODED];
        let envelope = b64::decode_uninit(payload_text, &mut buf).ok_or_else(Error::invalid)?;
        open_envelope(envelope, now, TokenKind::Signed, primary)
    }

    /// Mints a sealed token `e1.<kid>.<box>` with the primary key and a fresh random nonce.
    ///
    /// # Errors
    /// As [`Codec::sign`].
    pub fn seal(&self, payload: &[u8], issued_at: u64, expires_at: u64) -> Result<String, Error> {
        // ThreadRng is a CSPRNG (ChaCha12) seeded from the operating system and reseeded
        // periodically; 192-bit random nonces never repeat in practice.
        self.seal_with_rng(&mut rand::thread_rng(), payload, issued_at, expires_at)
    }

    /// [`Codec::seal`] with the nonce drawn from `rng` (24 bytes, one `fill_bytes` call), for a
    /// caller that brings its own cryptographic RNG: a sans-IO host without the thread RNG, or
    /// a test that wants reproducible tokens from a seeded one.
    ///
    /// The `CryptoRng` bound is the point: two tokens sealed under one key with one nonce
    /// reveal both plaintexts' XOR and allow forgeries, so a seeded RNG must never be reused
    /// with its seed outside tests.
    ///
    /// # Errors
    /// As [`Codec::sign`].
    pub fn seal_with_rng<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        payload: &[u8],
        issued_at: u64,
        expires_at: u64,
    ) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
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
        let (key, primary, body) = self.key_for(token.as_bytes(), SEALED_PREFIX)?;
        // The box is decoded and opened in a stack buffer, so a token that fails costs no
        // allocation, and one whose payload fits in `Opened` none at all.
        open_box(key, body, now, primary)
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
