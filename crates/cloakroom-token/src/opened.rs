//! What opening a token returns, kept on the stack for the payloads sessions carry.

use std::fmt;

use crate::TokenKind;

/// Payloads up to this many bytes are held inside [`Opened`] itself, so opening a token whose
/// payload fits (a session id or CSRF secret is 32 bytes) allocates nothing.
pub(crate) const INLINE_PAYLOAD: usize = 128;

/// A payload: inline when it fits, else on the heap.
#[derive(Clone)]
enum Payload {
    Inline {
        len: u8,
        bytes: [u8; INLINE_PAYLOAD],
    },
    Heap(Vec<u8>),
}

impl Payload {
    fn new(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_PAYLOAD => {
                let mut inline = [0u8; INLINE_PAYLOAD];
                inline[..bytes.len()].copy_from_slice(bytes);
                Self::Inline { len, bytes: inline }
            }
            _ => Self::Heap(bytes.to_vec()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

/// A token that verified: its application bytes and the times inside its MAC or tag.
#[derive(Clone)]
pub struct Opened {
    payload: Payload,
    issued_at: u64,
    expires_at: u64,
    kind: TokenKind,
    primary: bool,
}

impl Opened {
    pub(crate) fn new(
        payload: &[u8],
        issued_at: u64,
        expires_at: u64,
        kind: TokenKind,
        primary: bool,
    ) -> Self {
        Self {
            payload: Payload::new(payload),
            issued_at,
            expires_at,
            kind,
            primary,
        }
    }

    /// The application bytes.
    pub fn payload(&self) -> &[u8] {
        self.payload.as_slice()
    }

    /// Takes the application bytes (a copy for a payload of up to 128 bytes, which is held
    /// inline).
    pub fn into_payload(self) -> Vec<u8> {
        match self.payload {
            Payload::Heap(bytes) => bytes,
            inline @ Payload::Inline { .. } => inline.as_slice().to_vec(),
        }
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

impl PartialEq for Opened {
    fn eq(&self, other: &Self) -> bool {
        self.payload() == other.payload()
            && self.issued_at == other.issued_at
            && self.expires_at == other.expires_at
            && self.kind == other.kind
            && self.primary == other.primary
    }
}

impl Eq for Opened {}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload may be secret (a sealed token's data): show its size only.
        f.debug_struct("Opened")
            .field("payload_len", &self.payload().len())
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("kind", &self.kind)
            .field("primary", &self.primary)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_inline_and_on_the_heap_read_back_the_same() {
        for len in [0, 1, 127, 128, 129, 300] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let opened = Opened::new(&bytes, 1, 2, TokenKind::Signed, true);
            assert_eq!(opened.payload(), bytes.as_slice());
            assert_eq!(opened.clone(), opened);
            assert_eq!(
                matches!(opened.payload, Payload::Inline { .. }),
                len <= INLINE_PAYLOAD
            );
            assert_eq!(opened.into_payload(), bytes);
        }
        let a = Opened::new(b"a", 1, 2, TokenKind::Signed, true);
        assert_ne!(a, Opened::new(b"b", 1, 2, TokenKind::Signed, true));
        assert_ne!(a, Opened::new(b"a", 1, 3, TokenKind::Signed, true));
    }
}
