//! cloakroomd end to end: real sockets, the real binary where a process is needed.

#[path = "it/support.rs"]
mod support;

#[path = "it/store_verbs.rs"]
mod store_verbs;

#[path = "it/cookie_verbs.rs"]
mod cookie_verbs;

#[path = "it/process.rs"]
mod process;

#[path = "it/feed.rs"]
mod feed;

#[path = "it/malformed.rs"]
mod malformed;

#[path = "it/reliability.rs"]
mod reliability;

#[path = "it/curve.rs"]
mod curve;

#[path = "it/faults.rs"]
mod faults;
