//! Strict base64url without padding (RFC 4648 §5).
//!
//! Decoding refuses padding, characters outside the URL-safe alphabet and non-canonical
//! encodings (stray low bits in the last character), so no two strings decode to the same
//! bytes and no two strings open as one token.
//!
//! The codec is `base64-simd`, whose AVX2/SSSE3 decoder (chosen at run time, with a scalar
//! fallback) decodes a token's 108-character payload in well under half the time of the
//! `base64` crate's scalar engine; decoding was a third of a verify before (docs/benchmarks.md).
//! The unit tests hold it to the `base64` crate's strict `URL_SAFE_NO_PAD` engine.

use std::mem::MaybeUninit;

use base64_simd::{AsOut as _, Out, URL_SAFE_NO_PAD};

/// Encodes `bytes` and appends the text to `out`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_append(bytes, out);
}

/// Length of the encoding of `n` bytes.
pub(crate) const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Largest number of bytes `n` characters can decode to.
pub(crate) const fn decoded_len_max(n: usize) -> usize {
    n * 3 / 4
}

/// The number of bytes `text` decodes to, or `None` if no canonical encoding has its length
/// (one character past a multiple of four).
pub(crate) const fn decoded_len(text_len: usize) -> Option<usize> {
    let n = decoded_len_max(text_len);
    if encoded_len(n) == text_len {
        Some(n)
    } else {
        None
    }
}

/// Decodes `text` into a new vector, or `None` if it is not canonical base64url.
pub(crate) fn decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; decoded_len(text.len())?];
    decode_exact(text, &mut out)?;
    Some(out)
}

/// Decodes `text` into `out`, which must be exactly the decoded length; `None` if the lengths
/// disagree or `text` is not canonical base64url. Allocates nothing.
pub(crate) fn decode_exact(text: &[u8], out: &mut [u8]) -> Option<()> {
    if decoded_len(text.len()) != Some(out.len()) {
        return None;
    }
    // The length check above makes `out` exactly the decoded length, so the decoder's
    // "output too short" assertion cannot fire.
    URL_SAFE_NO_PAD.decode(text, out.as_out()).ok().map(|_| ())
}

/// Decodes `text` into the start of `buf`, which need not be initialised, and returns the
/// decoded bytes; `None` if `buf` is too short or `text` is not canonical base64url.
/// Allocates nothing and spends no time zeroing the buffer.
pub(crate) fn decode_uninit<'b>(
    text: &[u8],
    buf: &'b mut [MaybeUninit<u8>],
) -> Option<&'b mut [u8]> {
    let out = buf.get_mut(..decoded_len(text.len())?)?;
    URL_SAFE_NO_PAD
        .decode(text, Out::from_uninit_slice(out))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as REFERENCE;
    use base64::Engine as _;
    use proptest::prelude::*;

    #[test]
    fn refuses_non_canonical_and_padding() {
        // "AA" is [0]; "AB" carries stray low bits in its last character.
        assert_eq!(decode(b"AA"), Some(vec![0]));
        assert_eq!(decode(b"AB"), None);
        assert_eq!(decode(b"AAA"), Some(vec![0, 0]));
        assert_eq!(decode(b"AAB"), None);
        assert_eq!(decode(b"AA=="), None);
        assert_eq!(decode(b"AAA="), None);
        assert_eq!(decode(b"A+"), None);
        assert_eq!(decode(b"A/"), None);
        assert_eq!(decode(b"A"), None);
        assert_eq!(decode(b""), Some(vec![]));
        let mut one = [0u8; 1];
        assert!(decode_exact(b"AB", &mut one).is_none());
        assert!(decode_exact(b"AA", &mut one).is_some());
        // A wrong output length is refused, never a panic.
        let mut two = [0u8; 2];
        assert!(decode_exact(b"AA", &mut two).is_none());
        assert!(decode_exact(b"AAAAA", &mut [0u8; 3]).is_none());
        // A bad character in the SIMD part of a long input (the first 32 characters).
        let mut long = vec![b'A'; 108];
        assert!(decode(&long).is_some());
        for i in [0, 17, 31, 32, 63, 100, 107] {
            for bad in [b'+', b'/', b'=', b'.', 0x80, 0] {
                long[i] = bad;
                assert!(decode(&long).is_none(), "byte {bad:#x} at {i}");
            }
            long[i] = b'A';
        }
    }

    #[test]
    fn lengths_agree_with_the_engine() {
        for n in 0..200 {
            let mut s = String::new();
            encode_into(&vec![7u8; n], &mut s);
            assert_eq!(s.len(), encoded_len(n));
            assert_eq!(decoded_len_max(s.len()), n);
            assert_eq!(decoded_len(s.len()), Some(n));
            assert_eq!(s, REFERENCE.encode(vec![7u8; n]));
        }
        assert_eq!(decoded_len(1), None);
        assert_eq!(decoded_len(5), None);
    }

    proptest! {
        /// Byte for byte the `base64` crate's strict engine: the same bytes out, the same
        /// strings refused (the alphabet, padding, stray bits, lengths), for text that is
        /// mostly valid (so the decoder's vector path runs) with a few changed characters.
        #[test]
        fn decodes_exactly_like_the_reference(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            cut in 0usize..4,
        ) {
            let mut text = REFERENCE.encode(&bytes).into_bytes();
            for (at, byte) in edits {
                if !text.is_empty() {
                    let at = at % text.len();
                    text[at] = byte;
                }
            }
            text.truncate(text.len().saturating_sub(cut));
            prop_assert_eq!(decode(&text), REFERENCE.decode(&text).ok());
        }

        #[test]
        fn encodes_exactly_like_the_reference(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut s = String::from("prefix.");
            encode_into(&bytes, &mut s);
            prop_assert_eq!(s, format!("prefix.{}", REFERENCE.encode(&bytes)));
        }
    }
}
