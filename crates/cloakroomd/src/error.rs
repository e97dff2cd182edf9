//! The one error type of the daemon.

use std::fmt;

/// What went wrong starting or running a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The flags or the config file are wrong (unknown key, bad value).
    Config,
    /// A listener would be open to the network without CURVE and a client allow-list.
    Insecure,
    /// The key ring (or the CURVE key file) cannot be read, created or parsed.
    Keys,
    /// The store cannot be opened.
    Store,
    /// A socket cannot be made or bound.
    Socket,
    /// A file or directory cannot be made or changed.
    Io,
}

/// The error type of `cloakroomd`.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The exit status the binary ends with: 2 for a usage or configuration error
    /// (including an insecure listener), 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Config | ErrorKind::Insecure => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
