//! Verbs and statuses: the ASCII words of frame 3.

use std::fmt;

macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every word of this protocol version, in the order the document lists them.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The ASCII word on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)*
                }
            }

            /// The word for these bytes, if it is one of this version (exact, case-sensitive).
            pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
                match bytes {
                    $(b if b == $word.as_bytes() => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// What a request asks for (frame 3 of a request).
    Verb {
        /// Liveness and version check.
        Ping = "PING",
        /// Store: create a record.
        Create = "CREATE",
        /// Store: load a live record.
        Load = "LOAD",
        /// Store: compare-and-swap a whole record.
        Update = "UPDATE",
        /// Store: apply per-key changes atomically.
        Apply = "APPLY",
        /// Store: slide the idle deadline.
        Touch = "TOUCH",
        /// Store: delete a record.
        Delete = "DELETE",
        /// The live sessions of a user.
        SessionsOf = "SESSIONS_OF",
        /// Store: delete a user's sessions, maybe but one.
        RevokeUserSessions = "REVOKE_USER_SESSIONS",
        /// Store: read a user's epoch.
        UserEpoch = "USER_EPOCH",
        /// Store: increment a user's epoch.
        BumpUserEpoch = "BUMP_USER_EPOCH",
        /// Store: delete a batch of expired records.
        PurgeExpired = "PURGE_EXPIRED",
        /// Cookie: the session behind a cookie value.
        Open = "OPEN",
        /// Cookie: a new session and its cookie.
        Issue = "ISSUE",
        /// Cookie: log a user in (cycles the id).
        Login = "LOGIN",
        /// Cookie: end the session behind a cookie.
        Logout = "LOGOUT",
        /// Cookie: set and remove keys.
        Set = "SET",
        /// Cookie: remove keys.
        Remove = "REMOVE",
        /// Cookie: queue a flash message.
        Flash = "FLASH",
        /// Cookie: a CSRF token for a page, or verify one.
        Csrf = "CSRF",
        /// Cookie: end every other session of the cookie's user.
        SignOutOthers = "SIGN_OUT_OTHERS",
        /// End every session of a user and bump the user's epoch.
        RevokeUser = "REVOKE_USER",
        /// End one session by id hash.
        EndSession = "END_SESSION",
        /// Store, for operators: the live records whose id hash starts with a hex prefix.
        FindPrefix = "FIND_PREFIX",
        /// Store, for operators: live and expired-not-purged counts, and bytes.
        Stats = "STATS",
    }
}

words! {
    /// How a request went (frame 3 of a reply).
    Status {
        /// Done; the body is the verb's answer.
        Ok = "OK",
        /// No live session (or record) of that id.
        NotFound = "NOT_FOUND",
        /// The record exists already, or its version moved on.
        Conflict = "CONFLICT",
        /// A cookie value or token that does not verify.
        Invalid = "INVALID",
        /// A cookie that verified but whose session or token has expired.
        Expired = "EXPIRED",
        /// The store behind the daemon failed; retry later.
        Unavailable = "UNAVAILABLE",
        /// The store holds a record under that id that does not decode (a damaged store);
        /// fail closed, as for `UNAVAILABLE`.
        Corrupt = "CORRUPT",
        /// The frames or body are not what the verb takes.
        BadRequest = "BAD_REQUEST",
        /// The version frame is not `CRP1`.
        BadVersion = "BAD_VERSION",
        /// The verb is not one of this version.
        UnknownVerb = "UNKNOWN_VERB",
        /// The body exceeds a limit.
        TooLarge = "TOO_LARGE",
        /// The daemon failed; a bug to report.
        Internal = "INTERNAL",
        /// The daemon's store cannot do this at all (memcached cannot list its records).
        Unsupported = "UNSUPPORTED",
    }
}

/// The longest verb or status word, in bytes. Longer frames are rejected before any lookup.
pub const MAX_WORD_LEN: usize = 32;
