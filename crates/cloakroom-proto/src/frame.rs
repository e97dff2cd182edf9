//! The three frames every request and reply starts with, and the two after them.

use crate::error::{DecodeError, ErrorKind};
use crate::types::RequestId;
use crate::verb::MAX_WORD_LEN;

/// The protocol version frame of this version: the ASCII bytes `CRP1`.
pub const PROTOCOL: &str = "CRP1";

/// The frames of a message after the delimiter, version and request id checks.
#[derive(Debug)]
pub(crate) struct Split<'a> {
    pub(crate) id: RequestId,
    pub(crate) word: &'a [u8],
    pub(crate) body: &'a [u8],
}

/// Reads the common layout `["", "CRP1", id, word, body]`. Errors before the request id
/// is read are [`ErrorKind::Unreadable`]; later ones carry the id (see
/// [`DecodeError::answer`]), so the caller decides whether they are answered.
pub(crate) fn split<B: AsRef<[u8]>>(frames: &[B]) -> Result<Split<'_>, DecodeError> {
    let unreadable = |detail: String| DecodeError::new(ErrorKind::Unreadable, detail);
    let [delimiter, version, id, rest @ ..] = frames else {
        return Err(unreadable(format!(
            "{} frames; a message has at least 3",
            frames.len()
        )));
    };
    if !delimiter.as_ref().is_empty() {
        return Err(unreadable(
            "the first frame is not the empty delimiter".into(),
        ));
    }
    let Ok(id) = <[u8; 8]>::try_from(id.as_ref()) else {
        return Err(unreadable(format!(
            "the request id is {} bytes, not 8",
            id.as_ref().len()
        )));
    };
    let id = RequestId(id);
    if version.as_ref() != PROTOCOL.as_bytes() {
        return Err(DecodeError::new(
            ErrorKind::BadVersion,
            format!(
                "unsupported protocol version {}; this side speaks {PROTOCOL}",
                shown(version.as_ref())
            ),
        )
        .answer(id));
    }
    let [word, body] = rest else {
        return Err(DecodeError::new(
            ErrorKind::Malformed,
            format!(
                "{} frames; a {PROTOCOL} message has exactly 5",
                frames.len()
            ),
        )
        .answer(id));
    };
    Ok(Split {
        id,
        word: word.as_ref(),
        body: body.as_ref(),
    })
}

/// A word from the wire as it may appear in an error message: quoted when it is short
/// printable ASCII, otherwise described by its length only.
pub(crate) fn shown(word: &[u8]) -> String {
    if word.len() <= MAX_WORD_LEN && word.iter().all(|b| b.is_ascii_graphic()) {
        format!("`{}`", String::from_utf8_lossy(word))
    } else {
        format!("({} bytes)", word.len())
    }
}

/// Assembles the five frames of a message.
pub(crate) fn assemble(id: RequestId, word: &str, body: Vec<u8>) -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        PROTOCOL.as_bytes().to_vec(),
        id.0.to_vec(),
        word.as_bytes().to_vec(),
        body,
    ]
}
