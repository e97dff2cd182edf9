//! The one error type of this crate: why a message did not decode, and what to do about it.

use std::fmt;

use crate::reply::Reply;
use crate::types::RequestId;
use crate::verb::Status;

/// What kind of failure a [`DecodeError`] is, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The first three frames are not readable (fewer than three frames, a non-empty
    /// delimiter, a request id that is not 8 bytes): there is no request id to answer to, so
    /// the message is dropped and counted.
    Unreadable,
    /// The version frame is not `CRP1`; answered `BAD_VERSION`.
    BadVersion,
    /// The verb frame is not a verb of this version; answered `UNKNOWN_VERB`.
    UnknownVerb,
    /// The status frame of a reply is not a status of this version (client side only).
    UnknownStatus,
    /// The body exceeds a [`Limits`](crate::Limits) bound; answered `TOO_LARGE`.
    TooLarge,
    /// The frames or the body are not what the verb takes: a missing or extra frame, a body
    /// that is not one MessagePack map, a missing field, a field of the wrong type. Answered
    /// `BAD_REQUEST`.
    Malformed,
}

/// What the receiver of a bad message does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Drop the message and count it; send nothing.
    Drop,
    /// Send an error reply with this request id and status (see [`DecodeError::reply`]).
    Reply {
        /// The request id read from the message.
        id: RequestId,
        /// The status to answer with.
        status: Status,
    },
}

/// A message that did not decode.
///
/// Carries the [`Action`] the receiver takes: a daemon answers [`DecodeError::reply`] when
/// it is `Some`, and otherwise drops the message and counts it. Errors from decoding a
/// reply or a feed message are always [`Action::Drop`]: nobody answers a reply. The message
/// is one line a person can read and never quotes the offending bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    kind: ErrorKind,
    action: Action,
    detail: String,
}

impl DecodeError {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            action: Action::Drop,
            detail: detail.into(),
        }
    }

    /// Marks the error as answerable: a request decoder calls this once the request id has
    /// been read.
    pub(crate) fn answer(mut self, id: RequestId) -> Self {
        let status = match self.kind {
            ErrorKind::Unreadable => return self,
            ErrorKind::BadVersion => Status::BadVersion,
            ErrorKind::UnknownVerb => Status::UnknownVerb,
            ErrorKind::TooLarge => Status::TooLarge,
            ErrorKind::UnknownStatus | ErrorKind::Malformed => Status::BadRequest,
        };
        self.action = Action::Reply { id, status };
        self
    }

    /// The same error, never answered (reply and feed decoding).
    pub(crate) fn dropped(mut self) -> Self {
        self.action = Action::Drop;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether to drop the message or answer it, and with what.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The request id of the message, when its first three frames were readable.
    pub fn request_id(&self) -> Option<RequestId> {
        match self.action {
            Action::Reply { id, .. } => Some(id),
            Action::Drop => None,
        }
    }

    /// The status to answer with, or `None` when the message is dropped.
    pub fn status(&self) -> Option<Status> {
        match self.action {
            Action::Reply { status, .. } => Some(status),
            Action::Drop => None,
        }
    }

    /// The error reply to send (its request id and body), or `None` when the message is
    /// dropped. Encode it with [`Reply::encode`].
    pub fn reply(&self) -> Option<(RequestId, Reply)> {
        match self.action {
            Action::Reply { id, status } => Some((id, Reply::error(status, self.detail.clone()))),
            Action::Drop => None,
        }
    }

    /// The one-line description, as sent in an error reply's `error` field.
    pub fn message(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for DecodeError {}
