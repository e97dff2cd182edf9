//! [`SqliteOptions`] and [`Synchronous`]: how to open a SQLite store.

use super::*;

/// How hard SQLite pushes a commit to the disk (`PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `NORMAL` (the default): a commit is written to the write-ahead log before it is
    /// acknowledged, and the log is `fsync`ed at checkpoints. An acknowledged write survives
    /// the process being killed (`kill -9`, a panic, an OOM kill): the log is in the OS page
    /// cache. A power loss or kernel crash may lose the last commits before a checkpoint
    /// (never corrupting the database).
    #[default]
    Normal,
    /// `FULL`: the log is `fsync`ed on every commit, so an acknowledged write also survives a
    /// power loss. The cost is one `fsync` per write (session create, update, touch,
    /// delete): from tens of microseconds on a good NVMe disk to several milliseconds on
    /// network or rotating storage, and it serialises writers on the disk.
    Full,
}

impl Synchronous {
    pub(super) fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// How to open a [`SqliteStore`]: the file is required, everything else has a default.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub(super) path: PathBuf,
    pub(super) synchronous: Synchronous,
    pub(super) busy_timeout: Duration,
    pub(super) max_idle_readers: usize,
    pub(super) max_readers: usize,
}

impl SqliteOptions {
    /// The database file `path` (created `0600` if missing), `synchronous = NORMAL`, a busy
    /// timeout of 5 s, and up to 4 idle reader connections.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            max_idle_readers: 4,
            max_readers: DEFAULT_MAX_READERS,
        }
    }

    /// Sets how commits reach the disk; see [`Synchronous`].
    #[must_use]
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long an operation waits for a lock held by another connection (another process,
    /// or a backup) before it fails with [`ErrorKind::Unavailable`].
    #[must_use]
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many reader connections are kept open between reads (more, up to
    /// [`SqliteOptions::with_max_readers`], are opened while many reads run at once, and
    /// closed after).
    #[must_use]
    pub fn with_max_idle_readers(mut self, readers: usize) -> Self {
        self.max_idle_readers = readers;
        self
    }

    /// How many reader connections may be open at once (default 16, at least 1): a read
    /// beyond it waits for a reader to come free instead of opening another connection
    /// (each holds a file descriptor and SQLite's page cache).
    #[must_use]
    pub fn with_max_readers(mut self, readers: usize) -> Self {
        self.max_readers = readers.max(1);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reader connections open at once, unless configured otherwise.
const DEFAULT_MAX_READERS: usize = 16;
