//! The one error type of this crate; it answers as an HTTP response.

use std::borrow::Cow;
use std::fmt;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use cloakroom::BoxError;

/// Seconds a client is asked to wait (`Retry-After`) when the session store is unavailable.
pub const RETRY_AFTER_SECS: u32 = 2;

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An extractor or the CSRF layer ran without the [`SessionLayer`](crate::SessionLayer)
    /// around it (or `CurrentUser<U>` without a loader for `U`): a wiring bug, answered 500.
    NotInstalled,
    /// The session was used after its response was sent (a handle kept by a spawned task).
    Finished,
    /// No logged-in user (or the [`UserLoader`](crate::UserLoader) no longer knows them): 401.
    Unauthorized,
    /// A CSRF check failed: 403.
    Forbidden,
    /// The session store or the user store is unavailable: 503 with `Retry-After`, never a
    /// carry-on as anonymous.
    Unavailable,
    /// The session layer refused: see [`Error::session_kind`].
    Session,
}

/// The error type of `cloakroom-tower`. Handlers may return it (it implements
/// [`IntoResponse`]), so `?` on a session call answers with the right status.
///
/// The response body says only the status's reason; the details go to the log.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The session layer's own kind, for [`ErrorKind::Session`] and for an unavailable
    /// session store.
    pub fn session_kind(&self) -> Option<cloakroom::ErrorKind> {
        self.source
            .as_deref()
            .and_then(|s| s.downcast_ref::<cloakroom::Error>())
            .map(cloakroom::Error::kind)
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::NotInstalled | ErrorKind::Finished => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Session => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<cloakroom::Error> for Error {
    fn from(e: cloakroom::Error) -> Self {
        use cloakroom::ErrorKind as K;
        let kind = match e.kind() {
            // A store that is down, or a session so contended the retries ran out: the
            // request may succeed later; it must not succeed now as someone else.
            K::Unavailable | K::Conflict => ErrorKind::Unavailable,
            K::Forbidden => ErrorKind::Forbidden,
            _ => ErrorKind::Session,
        };
        Self {
            kind,
            message: Cow::Owned(e.to_string()),
            source: Some(Box::new(e)),
        }
    }
}

/// A store error met by the layer itself (a migration marker, a DBSC record): as the
/// session layer's error it becomes, so [`Error::session_kind`] reads the same.
impl From<cloakroom::store::Error> for Error {
    fn from(e: cloakroom::store::Error) -> Self {
        Self::from(cloakroom::Error::from(e))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log();
        status_response(self.status())
    }
}

impl Error {
    /// Logs the error: server errors at error level, refusals at debug.
    fn log(&self) {
        let status = self.status();
        if status.is_server_error() {
            // Messages of this crate and of `cloakroom` name hash prefixes, never ids.
            tracing::error!(kind = ?self.kind, error = %self, source = ?self.source.as_ref().and_then(|s| s.source()).map(ToString::to_string), "session request failed");
        } else {
            tracing::debug!(kind = ?self.kind, error = %self, "session request refused");
        }
    }

    /// The response for this error with an empty body of any type (the layer serves any
    /// response body), after logging it.
    pub(crate) fn into_bare_response<B: Default>(self) -> http::Response<B> {
        self.log();
        bare_response(self.status())
    }
}

/// A response for `status` with an empty body of any type: `Retry-After` on a 503, and
/// `Cache-Control: no-store`.
pub(crate) fn bare_response<B: Default>(status: StatusCode) -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    *response.status_mut() = status;
    with_error_headers(response)
}

/// A plain-text response for `status`, with `Retry-After` on a 503.
pub(crate) fn status_response(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("error");
    with_error_headers((status, format!("{} {reason}\n", status.as_u16())).into_response())
}

/// Adds what every error response carries: `Retry-After` on a 503, and
/// `Cache-Control: no-store`.
fn with_error_headers<B>(mut response: http::Response<B>) -> http::Response<B> {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
