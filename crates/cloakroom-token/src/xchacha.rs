//! XChaCha20-Poly1305 built from HChaCha20 (the `chacha20` crate) and the IETF
//! ChaCha20-Poly1305 AEAD (ring).
//!
//! XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha §2.3) is exactly: subkey = HChaCha20(key,
//! nonce[0..16]), then ChaCha20-Poly1305 under the subkey with the 12-byte nonce
//! `0x00000000 || nonce[16..24]`. ring's ChaCha20-Poly1305 is several times faster here than
//! the pure-Rust `chacha20poly1305` crate, whose AVX2 Poly1305 backend is slow on short
//! messages; the composition keeps the wire format and is checked against the draft's test
//! vector and against `chacha20poly1305` itself in the tests.

use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroize;

/// Nonce length of XChaCha20-Poly1305.
pub(crate) const NONCE_LEN: usize = 24;
/// Tag length of Poly1305.
pub(crate) const TAG_LEN: usize = 16;

/// The ChaCha20-Poly1305 key for one nonce: HChaCha20(key, nonce[0..16]), the subkey, as a
/// ring key. The caller may keep it for later tokens with the same nonce (see
/// `codec::SubkeyCache`); it is valid only for nonces that start with those 16 bytes.
pub(crate) fn subkey(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> LessSafeKey {
    let mut sub = chacha20::hchacha::<U10>(
        GenericArray::from_slice(key),
        GenericArray::from_slice(&nonce[..16]),
    );
    // CHACHA20_POLY1305 takes any 32-byte key, so this cannot fail.
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &sub).unwrap_or_else(|_| unreachable!());
    sub.as_mut_slice().zeroize();
    LessSafeKey::new(unbound)
}

/// A ring key made from 32 zero bytes, written over a cached subkey before its memory is
/// freed (ring's keys do not zeroize themselves).
pub(crate) fn zero_key() -> LessSafeKey {
    let unbound =
        UnboundKey::new(&CHACHA20_POLY1305, &[0u8; 32]).unwrap_or_else(|_| unreachable!());
    LessSafeKey::new(unbound)
}

/// The IETF nonce under the subkey: `0x00000000 || nonce[16..24]`.
fn short_nonce(nonce: &[u8; NONCE_LEN]) -> Nonce {
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(&nonce[16..]);
    Nonce::assume_unique_for_key(short)
}

/// Encrypts `in_out` in place and returns the tag.
pub(crate) fn seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
) -> [u8; TAG_LEN] {
    let tag = subkey(key, nonce)
        .seal_in_place_separate_tag(short_nonce(nonce), Aad::from(aad), in_out)
        // ring refuses only messages over 256 GiB; tokens are at most 4 KiB.
        .unwrap_or_else(|_| unreachable!());
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Decrypts `ciphertext || tag` in place; returns the plaintext length, or `None` if the tag
/// does not verify.
#[cfg(test)]
pub(crate) fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
) -> Option<usize> {
    open_with(&subkey(key, nonce), nonce, aad, in_out)
}

/// [`open`] with the nonce's subkey already made ([`subkey`] of the same key and nonce).
pub(crate) fn open_with(
    subkey: &LessSafeKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
) -> Option<usize> {
    subkey
        .open_in_place(short_nonce(nonce), Aad::from(aad), in_out)
        .ok()
        .map(|plain| plain.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// draft-irtf-cfrg-xchacha-03, §2.2.1: HChaCha20.
    #[test]
    fn hchacha20_test_vector() {
        let key: Vec<u8> = (0u8..32).collect();
        let input = unhex("000000090000004a0000000031415927");
        let out = chacha20::hchacha::<U10>(
            GenericArray::from_slice(&key),
            GenericArray::from_slice(&input),
        );
        assert_eq!(
            hex::encode(out),
            "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
        );
    }

    /// draft-irtf-cfrg-xchacha-03, §A.3.1: XChaCha20-Poly1305 AEAD.
    #[test]
    fn xchacha20_poly1305_test_vector() {
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] =
            unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .try_into()
                .unwrap();
        let nonce: [u8; 24] = unhex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let expected_ct = unhex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb\
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452\
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
             21f9664c97637da9768812f615c68b13b52e",
        );
        let expected_tag = "c0875924c1c7987947deafd8780acf49";
        let mut buf = plaintext.to_vec();
        let tag = seal(&key, &nonce, &aad, &mut buf);
        assert_eq!(hex::encode(&buf), hex::encode(&expected_ct));
        assert_eq!(hex::encode(tag), expected_tag);
        buf.extend_from_slice(&tag);
        let n = open(&key, &nonce, &aad, &mut buf).unwrap();
        assert_eq!(&buf[..n], plaintext);
        buf[0] ^= 1;
        assert!(open(&key, &nonce, &aad, &mut buf).is_none());
    }
}
