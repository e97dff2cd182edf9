//! The `cloakroom` binary, run as a user would run it: one integration binary, one module
//! per part of the command.

#[path = "it/support.rs"]
mod support;

#[path = "it/tokens.rs"]
mod tokens;

#[path = "it/import.rs"]
mod import;

#[path = "it/operator.rs"]
mod operator;

#[path = "it/bench.rs"]
mod bench;
