//! cloakroomd end to end: real sockets, the real binary where a process is needed.

#[path = "it/support.rs"]
mod support;

#[path = "it/store_verbs.rs"]
mod store_verbs;
