//! The `cloakroom` binary: a thin shell over `cloakroom_cli::run`.

use std::process::ExitCode;

fn main() -> ExitCode {
    cloakroom_cli::main()
}
