//! The one error type of this crate.

use std::fmt;

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A ROUTER could not route a message: no peer with that routing id is connected
    /// (`EHOSTUNREACH`, reported because ROUTER sockets are made with `ZMQ_ROUTER_MANDATORY`).
    Unroutable,
    /// A message is larger than the limit configured with
    /// [`SocketBuilder::max_message_size`](crate::SocketBuilder::max_message_size).
    TooLarge,
    /// A bounded queue is full: the reply queue of a socket
    /// ([`ReplySender::send`](crate::ReplySender::send)).
    Full,
    /// The socket, its context or the task that owns it is gone.
    Closed,
    /// The operation is not valid for this socket type or in this state (libzmq `EFSM`,
    /// `ENOTSUP`) or a configuration value was refused (`EINVAL`).
    Invalid,
    /// The call was made outside a tokio runtime with I/O and time enabled.
    NoRuntime,
    /// A feature is missing from the linked libzmq (for example CURVE).
    Unsupported,
    /// The operating system refused something (registering the descriptor, `poll`).
    Io,
    /// Any other libzmq error.
    Zmq,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Unroutable => "unroutable message",
            ErrorKind::TooLarge => "message too large",
            ErrorKind::Full => "queue full",
            ErrorKind::Closed => "socket closed",
            ErrorKind::Invalid => "invalid operation or option",
            ErrorKind::NoRuntime => "no tokio runtime with I/O enabled",
            ErrorKind::Unsupported => "not supported by the linked libzmq",
            ErrorKind::Io => "operating system error",
            ErrorKind::Zmq => "libzmq error",
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every fallible operation in this crate: a [`kind`](Error::kind) to branch
/// on, a short context, and the libzmq or I/O error as [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {context}")]
pub struct Error {
    kind: ErrorKind,
    context: &'static str,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The libzmq error behind this one, if there is one.
    pub fn zmq_error(&self) -> Option<zmq::Error> {
        self.source.as_ref()?.downcast_ref::<zmq::Error>().copied()
    }

    pub(crate) fn new(kind: ErrorKind, context: &'static str) -> Self {
        Error {
            kind,
            context,
            source: None,
        }
    }

    pub(crate) fn zmq(context: &'static str, e: zmq::Error) -> Self {
        let kind = match e {
            zmq::Error::EHOSTUNREACH => ErrorKind::Unroutable,
            zmq::Error::ETERM | zmq::Error::ENOTSOCK => ErrorKind::Closed,
            zmq::Error::EFSM | zmq::Error::ENOTSUP | zmq::Error::EINVAL => ErrorKind::Invalid,
            zmq::Error::EMSGSIZE => ErrorKind::TooLarge,
            _ => ErrorKind::Zmq,
        };
        Error {
            kind,
            context,
            source: Some(Box::new(e)),
        }
    }

    pub(crate) fn io(context: &'static str, e: std::io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            context,
            source: Some(Box::new(e)),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn kind_and_source() {
        let e = Error::zmq("send", zmq::Error::EHOSTUNREACH);
        assert_eq!(e.kind(), ErrorKind::Unroutable);
        assert!(e.source().is_some());
        assert_eq!(e.zmq_error(), Some(zmq::Error::EHOSTUNREACH));
        assert!(e.to_string().contains("unroutable"));
        let e = Error::new(ErrorKind::TooLarge, "send");
        assert!(e.source().is_none());
    }
}
