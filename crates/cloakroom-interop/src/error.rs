//! The one error type of this crate.

use std::fmt;

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The cookie is not one the framework would accept with this secret (and salt, purpose,
    /// cookie name). Deliberately says nothing more: not which check failed, nor where.
    Invalid,
    /// The cookie is authentic but too old by the framework's own rule. Only ever reported
    /// after the MAC or the AEAD tag has verified.
    Expired,
    /// The cookie is authentic but holds something this crate will not load: a payload made by
    /// pickle or Ruby Marshal (loading those runs code chosen by whoever wrote the cookie), or
    /// bytes that are not JSON. The message says which.
    Unsupported,
    /// An authentic cookie whose payload inflates past [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN).
    TooLarge,
    /// The caller passed something unusable: an empty secret, a session that does not serialize
    /// to JSON, a timestamp out of range.
    InvalidInput,
    /// The operating system's random number generator failed (writing a Rails cookie).
    Random,
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error type of `cloakroom-interop`.
///
/// Opening a cookie that fails verification gives [`ErrorKind::Invalid`] with the message
/// `invalid`, and a verified but stale one [`ErrorKind::Expired`] with `expired`: a forger
/// learns nothing about which check failed.
pub struct Error {
    kind: ErrorKind,
    detail: Option<&'static str>,
    source: Option<Source>,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// An error of `kind` with `detail` as its message, and no source.
    const fn of(kind: ErrorKind, detail: Option<&'static str>) -> Self {
        Self {
            kind,
            detail,
            source: None,
        }
    }

    pub(crate) const fn invalid() -> Self {
        Self::of(ErrorKind::Invalid, None)
    }

    pub(crate) const fn expired() -> Self {
        Self::of(ErrorKind::Expired, None)
    }

    pub(crate) const fn new(kind: ErrorKind, detail: &'static str) -> Self {
        Self::of(kind, Some(detail))
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        detail: &'static str,
        source: impl Into<Source>,
    ) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(kind, detail)
        }
    }
}

// Hand-written so that a future field cannot print secret-derived bytes by accident; the
// source is printed through its own Debug (a serde_json or io error, never cookie bytes).
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            kind,
            detail,
            source,
        } = self;
        f.debug_struct("Error")
            .field("kind", kind)
            .field("detail", detail)
            .field("source", source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.detail) {
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
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_failures_say_one_word() {
        assert_eq!(Error::invalid().to_string(), "invalid");
        assert_eq!(Error::expired().to_string(), "expired");
        assert_eq!(Error::invalid().kind(), ErrorKind::Invalid);
        assert!(std::error::Error::source(&Error::invalid()).is_none());
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::other("boom");
        let e = Error::with_source(ErrorKind::InvalidInput, "bad", io);
        assert_eq!(e.to_string(), "bad");
        assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "boom");
    }
}
