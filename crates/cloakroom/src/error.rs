//! The session layer's error type. Stores have their own, [`crate::store::Error`], which
//! converts into this one kind by kind.

/// A boxed backend error, kept as an [`Error`]'s `source()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One shape for the crate's two error types ([`Error`] and [`crate::store::Error`]): the
/// struct (a kind, a message for people, the backend's error as `source()`), the
/// constructors both have, `Display` (the message alone) and `std::error::Error`. Each
/// type's own doc comment goes inside the invocation, on its `pub struct` line.
macro_rules! error_type {
    ($(#[$meta:meta])* pub struct $name:ident($kind:ident);) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            kind: $kind,
            message: ::std::borrow::Cow<'static, str>,
            source: Option<$crate::error::BoxError>,
        }

        impl $name {
            /// An error of `kind` with a message for people.
            pub fn new(kind: $kind, message: impl Into<::std::borrow::Cow<'static, str>>) -> Self {
                Self {
                    kind,
                    message: message.into(),
                    source: None,
                }
            }

            /// Keeps `source` (the backend's own error) as this error's source.
            #[must_use]
            pub fn with_source(mut self, source: impl Into<$crate::error::BoxError>) -> Self {
                self.source = Some(source.into());
                self
            }

            #[doc = concat!("[`", stringify!($kind), "::NotFound`].")]
            pub fn not_found() -> Self {
                Self::new($kind::NotFound, "session not found")
            }

            #[doc = concat!("[`", stringify!($kind), "::Conflict`].")]
            pub fn conflict() -> Self {
                Self::new(
                    $kind::Conflict,
                    "session changed concurrently (version conflict)",
                )
            }

            #[doc = concat!("[`", stringify!($kind), "::Unavailable`] with the backend's error as source.")]
            pub fn unavailable(
                message: impl Into<::std::borrow::Cow<'static, str>>,
                source: impl Into<$crate::error::BoxError>,
            ) -> Self {
                Self::new($kind::Unavailable, message).with_source(source)
            }

            #[doc = concat!("[`", stringify!($kind), "::Corrupt`] with the decoder's error as source.")]
            pub fn corrupt(
                message: impl Into<::std::borrow::Cow<'static, str>>,
                source: impl Into<$crate::error::BoxError>,
            ) -> Self {
                Self::new($kind::Corrupt, message).with_source(source)
            }

            #[doc = concat!("[`", stringify!($kind), "::Unsupported`]: `store` cannot do `operation`, and why.")]
            pub fn unsupported(store: &str, operation: &str, why: &str) -> Self {
                Self::new(
                    $kind::Unsupported,
                    format!("{store} cannot {operation}: {why}"),
                )
            }

            /// What kind of failure this is.
            pub fn kind(&self) -> $kind {
                self.kind
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                // The source is not repeated here: it is reachable through `source()`.
                f.write_str(&self.message)
            }
        }

        impl ::std::error::Error for $name {
            fn source(&self) -> Option<&(dyn ::std::error::Error + 'static)> {
                self.source
                    .as_deref()
                    .map(|e| e as &(dyn ::std::error::Error + 'static))
            }
        }
    };
}
pub(crate) use error_type;

/// What went wrong, for callers that branch on it.
///
/// The first seven kinds are also [store kinds](crate::store::ErrorKind): a store error
/// becomes the session kind of the same name. The others (`Forbidden`, `Random`, `Value`,
/// `Token`, `Ended`) only the session layer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The record does not exist (or has expired, which is the same thing).
    NotFound,
    /// A compare-and-swap lost: the record changed since it was read, or `create` found the
    /// id already taken. Retry from a fresh read.
    Conflict,
    /// The store cannot be reached or refused to work (down, locked, disk full, read-only).
    /// A web layer answers 503 and never carries on as anonymous.
    Unavailable,
    /// Stored bytes do not decode as a record. The session layer treats the session as
    /// absent; the error is still reported so an operator can see it.
    Corrupt,
    /// A client-mode cookie would exceed the 4096 bytes a browser keeps, or a record the
    /// store's limit (memcached's item size). The message names the size.
    TooLarge,
    /// The caller passed something unusable (a reserved key, a deadline before creation).
    InvalidInput,
    /// A request failed a CSRF check: a missing or wrong token, or a cross-site origin.
    Forbidden,
    /// The operating system's random number generator failed.
    Random,
    /// Encoding or decoding an application value failed (a type mismatch on `get`).
    Value,
    /// A failure of the token codec (a key ring problem, not an invalid cookie: invalid
    /// cookies are treated as absent sessions).
    Token,
    /// The session was ended while this request ran; its changes were dropped.
    Ended,
    /// The store cannot do this operation at all (memcached cannot list its sessions). The
    /// message names the store and the operation.
    Unsupported,
}

error_type! {
    /// The error type of the session layer: what [`SessionManager`](crate::SessionManager),
    /// [`Session`](crate::Session) and the [`Purger`](crate::Purger) return.
    ///
    /// A store's [`store::Error`](crate::store::Error) converts into it with `?`: the kind of the
    /// same name, the same message, and the backend's error still reachable through
    /// [`std::error::Error::source`].
    pub struct Error(ErrorKind);
}

impl Error {
    pub(crate) fn token(source: cloakroom_token::Error) -> Self {
        Self::new(ErrorKind::Token, "token codec failed").with_source(source)
    }

    pub(crate) fn random(source: getrandom::Error) -> Self {
        Self::new(ErrorKind::Random, "the OS random number generator failed").with_source(source)
    }
}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        use crate::store::ErrorKind as K;
        let (kind, message, source) = e.into_parts();
        let kind = match kind {
            K::NotFound => ErrorKind::NotFound,
            K::Conflict => ErrorKind::Conflict,
            K::Unavailable => ErrorKind::Unavailable,
            K::Corrupt => ErrorKind::Corrupt,
            K::InvalidInput => ErrorKind::InvalidInput,
            K::TooLarge => ErrorKind::TooLarge,
            K::Unsupported => ErrorKind::Unsupported,
        };
        Self {
            kind,
            message,
            source,
        }
    }
}
