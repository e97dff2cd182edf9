//! The one error type of this crate.

use std::fmt;

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The token is not one we minted for this purpose with this key ring. Deliberately says
    /// nothing more: not which check failed, nor where.
    Invalid,
    /// The token is authentic but its `expires_at` has passed. Only ever reported after the
    /// MAC or AEAD tag has verified.
    Expired,
    /// A token would exceed [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN) bytes.
    TooLarge,
    /// The caller passed something unusable (an expiry before issue time, a bad purpose).
    InvalidInput,
    /// A key ring is malformed: bad TOML, a short secret, a duplicate id, no primary key.
    KeyRing,
    /// A key file has unsafe permissions (readable by group or other).
    Permissions,
    /// Reading or writing a key file failed.
    Io,
    /// The operating system's random number generator failed.
    Random,
}

/// The error type of `cloakroom-token`.
///
/// Opening a token fails with [`ErrorKind::Invalid`] or [`ErrorKind::Expired`] only, and its
/// message is exactly `invalid` or `expired`: a forger learns nothing about which check failed.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    detail: Option<String>,
    source: Option<std::io::Error>,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// An error of `kind` alone: no detail, no source.
    const fn bare(kind: ErrorKind) -> Self {
        Self {
            kind,
            detail: None,
            source: None,
        }
    }

    pub(crate) const fn invalid() -> Self {
        Self::bare(ErrorKind::Invalid)
    }

    pub(crate) const fn expired() -> Self {
        Self::bare(ErrorKind::Expired)
    }

    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            detail: Some(detail.into()),
            ..Self::bare(kind)
        }
    }

    #[cfg(feature = "keyfile")]
    pub(crate) fn io(detail: impl Into<String>, source: std::io::Error) -> Self {
        Self {
            source: Some(source),
            ..Self::new(ErrorKind::Io, detail)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.detail) {
            (ErrorKind::Invalid, _) => f.write_str("invalid"),
            (ErrorKind::Expired, _) => f.write_str("expired"),
            (_, Some(detail)) => f.write_str(detail),
            (kind, None) => write!(f, "{kind:?}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
