//! What every test of the binary uses: run it, read what it printed, write a secret file.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// `cloakroom ARGS` in `dir`, with no key ring or store from the environment and no colour,
/// standard input closed: to run, or to spawn.
pub(crate) fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("CLOAKROOM_KEYS")
        .env_remove("CLOAKROOM_KEYS_FILE")
        .env_remove("CLOAKROOM_STORE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// Runs [`command`]`(dir, args)`.
pub(crate) fn cloakroom(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("run cloakroom")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cloakroom ARGS`, which must succeed; what it printed.
pub(crate) fn ok(dir: &Path, args: &[&str]) -> String {
    let o = cloakroom(dir, args);
    assert!(
        o.status.success(),
        "{args:?}: exit {:?}: {}",
        o.status.code(),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs `cloakroom ARGS`, which must succeed and print one JSON value.
pub(crate) fn json(dir: &Path, args: &[&str]) -> Value {
    let text = ok(dir, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {text}"))
}

/// Writes `secret` and a newline to `dir/name`, created `0600` as a secret file must be.
pub(crate) fn write_secret(dir: &Path, name: &str, secret: &str) {
    use std::io::Write as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(dir.join(name))
        .unwrap()
        .write_all(format!("{secret}\n").as_bytes())
        .unwrap();
}
