//! The framework secret: `SECRET_KEY`, `secret`, `secret_key_base`.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};

/// A framework's secret as the framework holds it: Flask's and Django's `SECRET_KEY`,
/// Pyramid's `secret`, Rails' `secret_key_base`. Text secrets are used as their UTF-8 bytes,
/// which is what every one of these frameworks does.
///
/// Zeroized on drop, compared in constant time, never printed: `Debug` shows only the length.
/// There is deliberately no `Serialize`.
///
/// A secret made from text (`From<&str>`, `From<String>`) remembers that it was text: webob,
/// under Pyramid, encodes a text secret as Latin-1 where it can (see [`crate::Pyramid`]).
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    text: bool,
}

impl Secret {
    /// Wraps the secret's bytes, as a framework given a byte string (Python `bytes`) uses them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes.into()),
            text: false,
        }
    }

    /// Wraps a text secret (Python `str`, a Ruby string): its UTF-8 bytes, remembered as text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            bytes: Zeroizing::new(text.into().into_bytes()),
            text: true,
        }
    }

    /// Whether the secret was given as text.
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The secret's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the secret is empty (every framework refuses to sign with one).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The secret, unless it is empty: every framework refuses to sign with none. `empty` is
    /// the error's message, naming the framework's setting.
    pub(crate) fn non_empty(self, empty: &'static str) -> Result<Self> {
        if self.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, empty));
        }
        Ok(self)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::text(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::text(s)
    }
}

impl From<&[u8]> for Secret {
    fn from(b: &[u8]) -> Self {
        Self::new(b)
    }
}

impl From<Vec<u8>> for Secret {
    fn from(b: Vec<u8>) -> Self {
        Self::new(b)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.as_slice().ct_eq(other.bytes.as_slice()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_bytes() {
        let s = Secret::from("hunter2-hunter2");
        let shown = format!("{s:?}");
        assert_eq!(shown, "Secret(15 bytes)");
        assert!(!shown.contains("hunter"));
    }

    #[test]
    fn equality() {
        assert_eq!(Secret::from("a"), Secret::from(b"a".as_slice()));
        assert_ne!(Secret::from("a"), Secret::from("b"));
        assert_ne!(Secret::from("a"), Secret::from("aa"));
    }
}
