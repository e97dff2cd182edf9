//! Flash messages: queued for the next page, shown once.

use serde::{Deserialize, Serialize};

/// How a flash message should be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Level {
    /// For developers.
    Debug,
    /// Neutral information.
    Info,
    /// Something worked.
    Success,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Error,
}

/// One flash message. Queue with [`Session::flash`](crate::Session::flash), read (and
/// remove) with [`Session::take_flashes`](crate::Session::take_flashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Flash {
    /// The level.
    pub level: Level,
    /// The text (escape it when rendering: it may echo user input).
    pub message: String,
}

impl Flash {
    /// A message.
    pub fn new(level: Level, message: impl Into<String>) -> Self {
        Self {
            level,
            message: message.into(),
        }
    }
}
