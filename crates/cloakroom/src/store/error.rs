//! The error type of the [`Store`](super::Store) trait: only what a store can mean.

use std::borrow::Cow;

use crate::error::{error_type, BoxError};

/// What went wrong in a store, for callers that branch on it.
///
/// These are the only failures a store can report. The session layer's own failures (a CSRF
/// check, the random generator, an application value, the token codec, a session ended
/// while a request ran) are kinds of [`crate::ErrorKind`], which a store cannot return.
/// `From<store::Error> for cloakroom::Error` maps each kind below to the session kind of
/// the same name, keeping the message and the source.
///
/// A store cannot say what only the session layer can:
///
/// ```compile_fail
/// use cloakroom::store::{Error, ErrorKind};
///
/// let _ = Error::new(ErrorKind::Forbidden, "a store has no CSRF check to fail");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The record does not exist (or has expired, which is the same thing): from
    /// [`Store::update`](super::Store::update), [`Store::apply`](super::Store::apply) and
    /// [`Store::touch`](super::Store::touch). The session layer treats the session as ended.
    NotFound,
    /// A compare-and-swap lost: the record changed since it was read, or
    /// [`Store::create`](super::Store::create) found the id already taken. Retry from a
    /// fresh read.
    Conflict,
    /// The backend cannot be reached or refused to work (down, locked, disk full,
    /// read-only), with its own error as `source()`. A web layer answers 503 and never
    /// carries on as anonymous.
    Unavailable,
    /// Stored bytes do not decode as a record. The session layer treats the session as
    /// absent; the error is still reported so an operator can see it.
    Corrupt,
    /// The caller passed something the store cannot use: a bad id-hash prefix, a record
    /// whose version would overflow or that does not encode, a bad store URL or option.
    InvalidInput,
    /// A record is larger than the backend keeps (memcached's item limit); the message
    /// names the size. Nothing was written.
    TooLarge,
    /// The store cannot do this operation at all (memcached cannot list its sessions). The
    /// message names the store and the operation.
    Unsupported,
}

error_type! {
    /// The error type of the [`Store`](super::Store) trait and of every store.
    ///
    /// Like [`std::io::Error`]: a [`kind`](Error::kind) to branch on, a message for people, and
    /// the backend's own error kept as [`source`](std::error::Error::source). Stores build it
    /// with [`Error::new`] or a shorthand ([`Error::unavailable`], [`Error::corrupt`], ...) and
    /// attach their backend's error with [`Error::with_source`]. The session layer turns it
    /// into a [`crate::Error`] with `?`.
    ///
    /// ```
    /// use cloakroom::store::{Error, ErrorKind};
    ///
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    /// let e = Error::unavailable("cannot reach redis", io);
    /// assert_eq!(e.kind(), ErrorKind::Unavailable);
    ///
    /// // The session layer's error keeps the kind, the message and the source.
    /// let session: cloakroom::Error = e.into();
    /// assert_eq!(session.kind(), cloakroom::ErrorKind::Unavailable);
    /// assert_eq!(session.to_string(), "cannot reach redis");
    /// assert!(std::error::Error::source(&session).is_some());
    /// ```
    pub struct Error(ErrorKind);
}

impl Error {
    /// The parts, for the conversion into the session layer's error.
    pub(crate) fn into_parts(self) -> (ErrorKind, Cow<'static, str>, Option<BoxError>) {
        (self.kind, self.message, self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_kind_keeps_its_name_message_and_source_in_the_session_error() {
        let cases = [
            (ErrorKind::NotFound, crate::ErrorKind::NotFound),
            (ErrorKind::Conflict, crate::ErrorKind::Conflict),
            (ErrorKind::Unavailable, crate::ErrorKind::Unavailable),
            (ErrorKind::Corrupt, crate::ErrorKind::Corrupt),
            (ErrorKind::InvalidInput, crate::ErrorKind::InvalidInput),
            (ErrorKind::TooLarge, crate::ErrorKind::TooLarge),
            (ErrorKind::Unsupported, crate::ErrorKind::Unsupported),
        ];
        for (store, session) in cases {
            let backend = std::io::Error::other("the backend's own words");
            let e = crate::Error::from(Error::new(store, "what failed").with_source(backend));
            assert_eq!(e.kind(), session);
            assert_eq!(e.to_string(), "what failed");
            let source = std::error::Error::source(&e).expect("the source is kept");
            assert_eq!(source.to_string(), "the backend's own words");
            assert!(source.downcast_ref::<std::io::Error>().is_some());
        }
    }
}
