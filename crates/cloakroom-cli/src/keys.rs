//! `keygen`, `rotate`, and finding the key ring.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use cloakroom_token::{KeyRing, KEYS_ENV};

use crate::Failure;

/// The environment variable naming the key file.
pub(crate) const KEYS_FILE_ENV: &str = "CLOAKROOM_KEYS_FILE";

/// The key file a command uses when none is named: CLOAKROOM_KEYS_FILE, else ./keys.toml.
fn default_file() -> PathBuf {
    std::env::var_os(KEYS_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("keys.toml"))
}

/// Loads the key ring: --keys, else CLOAKROOM_KEYS_FILE, else CLOAKROOM_KEYS, else ./keys.toml.
pub(crate) fn load(explicit: Option<&Path>) -> anyhow::Result<KeyRing> {
    if let Some(path) = explicit {
        return Ok(KeyRing::load(path)?);
    }
    if std::env::var_os(KEYS_FILE_ENV).is_none_or(|v| v.is_empty()) {
        if let Some(ring) = KeyRing::from_env()? {
            return Ok(ring);
        }
    }
    let path = default_file();
    if !path.exists() {
        bail!(
            "no key ring: {} does not exist (create one with `cloakroom keygen --out {}`, \
             or pass --keys FILE, or set {KEYS_FILE_ENV} or {KEYS_ENV})",
            path.display(),
            path.display()
        );
    }
    Ok(KeyRing::load(&path)?)
}

pub(crate) fn keygen(out: &Path, force: bool) -> Result<(), Failure> {
    let ring = KeyRing::generate()?;
    ring.save(out, force)?;
    eprintln!(
        "wrote a new key ring to {} (mode 0600, primary key {}); keep it secret and out of \
         version control",
        out.display(),
        ring.primary().id()
    );
    if let Some(warning) = git_would_track(out) {
        eprintln!("{warning}");
    }
    Ok(())
}

/// The warning to print when `path` lies in a git work tree that does not ignore it, so a
/// `git add -A` would commit the key ring. `None` when it is ignored, when the directory is not
/// in a work tree, and when git is not installed: only a clear "not ignored" answer warns.
fn git_would_track(path: &Path) -> Option<String> {
    let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = parent.unwrap_or(Path::new("."));
    let name = path.file_name()?;
    // `git check-ignore -q`: exit 0 ignored, 1 not ignored, 128 not a work tree (or an error).
    let status = Command::new("git")
        .args(["check-ignore", "-q", "--"])
        .arg(name)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    (status.code() == Some(1)).then(|| {
        format!(
            "warning: {} is inside a git work tree and git does not ignore it: a key ring must \
             never be committed. Add it to .gitignore, e.g. run: echo '/{}' >> {}",
            path.display(),
            name.to_string_lossy(),
            parent
                .map_or_else(|| ".gitignore".into(), |d| d.join(".gitignore"))
                .display()
        )
    })
}

pub(crate) fn rotate(keys: Option<&Path>) -> Result<(), Failure> {
    let path = keys.map(Path::to_path_buf).unwrap_or_else(default_file);
    let mut ring = KeyRing::load(&path)?;
    let id = ring.rotate()?.clone();
    ring.save(&path, true)
        .with_context(|| format!("rotating {}", path.display()))?;
    eprintln!(
        "added primary key {id} to {}; {} key(s) in the ring, the old ones still open their tokens",
        path.display(),
        ring.keys().len()
    );
    Ok(())
}
