//! Strict base64url without padding (RFC 4648 §5).
//!
//! Decoding refuses padding, characters outside the URL-safe alphabet and non-canonical
//! encodings (stray low bits in the last character), so no two strings decode to the same
//! bytes and no two strings open as one token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Encodes `bytes` and appends the text to `out`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(bytes, out);
}

/// Length of the encoding of `n` bytes.
pub(crate) const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Largest number of bytes `n` characters can decode to.
pub(crate) const fn decoded_len_max(n: usize) -> usize {
    n * 3 / 4
}

/// Decodes `text` into a new vector, or `None` if it is not canonical base64url.
pub(crate) fn decode(text: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Decodes `text` into `out`, which must be exactly the decoded length.
pub(crate) fn decode_exact(text: &[u8], out: &mut [u8]) -> Option<()> {
    if decoded_len_max(text.len()) != out.len() || encoded_len(out.len()) != text.len() {
        return None;
    }
    match URL_SAFE_NO_PAD.decode_slice_unchecked(text, out) {
        Ok(n) if n == out.len() => Some(()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_canonical_and_padding() {
        // "AA" is [0]; "AB" carries stray low bits in its last character.
        assert_eq!(decode(b"AA"), Some(vec![0]));
        assert_eq!(decode(b"AB"), None);
        assert_eq!(decode(b"AA=="), None);
        assert_eq!(decode(b"A+"), None);
        assert_eq!(decode(b"A"), None);
        let mut one = [0u8; 1];
        assert!(decode_exact(b"AB", &mut one).is_none());
        assert!(decode_exact(b"AA", &mut one).is_some());
    }

    #[test]
    fn lengths_agree_with_the_engine() {
        for n in 0..200 {
            let mut s = String::new();
            encode_into(&vec![7u8; n], &mut s);
            assert_eq!(s.len(), encoded_len(n));
            assert_eq!(decoded_len_max(s.len()), n);
        }
    }
}
