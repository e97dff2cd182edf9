//! Reading and writing key ring files. The token codec itself never touches a file; these
//! functions do, and only when called.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write};
use std::path::Path;

use zeroize::Zeroizing;

use crate::{Error, ErrorKind, KeyRing};

/// The environment variable that may hold a key ring's TOML (for containers).
pub const KEYS_ENV: &str = "CLOAKROOM_KEYS";

impl KeyRing {
    /// Loads a key ring from a TOML file.
    ///
    /// On Unix the file must not be readable or writable by group or other: a key file with
    /// mode 0644 is refused with an error that names the file and its mode and says
    /// `chmod 600`.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file cannot be read, [`ErrorKind::Permissions`] if its mode is
    /// too open, [`ErrorKind::KeyRing`] if its content is not a valid key ring.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = read_private_file(path, "key file")?;
        let shown = path.display();
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::new(
                ErrorKind::KeyRing,
                format!("{shown}: the key file is not UTF-8"),
            )
        })?;
        Self::from_toml(text).map_err(|e| Error::new(e.kind(), format!("{shown}: {e}")))
    }

    /// Loads the key ring from the environment variable [`KEYS_ENV`] (`CLOAKROOM_KEYS`), which
    /// holds the same TOML as a key file. Returns `Ok(None)` if the variable is not set.
    ///
    /// # Errors
    /// [`ErrorKind::KeyRing`] if the variable is set but is not valid UTF-8 or not a valid
    /// key ring.
    pub fn from_env() -> Result<Option<Self>, Error> {
        match std::env::var(KEYS_ENV) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                Self::from_toml(&text)
                    .map(Some)
                    .map_err(|e| Error::new(e.kind(), format!("{KEYS_ENV}: {e}")))
            }
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::new(
                ErrorKind::KeyRing,
                format!("{KEYS_ENV} is not valid UTF-8"),
            )),
        }
    }

    /// The key ring a server starts with, in one line: from the environment variable
    /// [`KEYS_ENV`] (`CLOAKROOM_KEYS`) if it is set, else from the file at `path`, which is
    /// created on first use.
    ///
    /// - `CLOAKROOM_KEYS` set: its TOML is the ring, and `path` is not touched. A value that is
    ///   not a valid ring is an error, never a reason to fall back to the file.
    /// - else, `path` exists: it is loaded as by [`KeyRing::load`] (mode 0600 checked).
    /// - else: a new ring is generated and written to `path` with mode 0600, atomically and
    ///   without ever replacing a file (written beside it, then linked into place; if another
    ///   process created `path` meanwhile, that file is loaded instead). A warning naming the
    ///   file is logged (through `tracing` if a subscriber is installed, else on stderr): the
    ///   file must be kept secret, backed up, and shared by every instance of the site.
    ///
    /// Sessions then survive restarts: a restarted server opens the cookies it minted before.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("keys.toml");
    /// use cloakroom_token::KeyRing;
    ///
    /// let ring = KeyRing::from_env_or_file(&path)?; // first start: creates the file
    /// let again = KeyRing::from_env_or_file(&path)?; // a restart: the same ring
    /// let codec = ring.codec("__Host-session")?;
    /// let token = codec.sign(b"user:950", 1_767_225_600, 1_767_227_400)?;
    /// assert!(again.codec("__Host-session")?.verify(&token, 1_767_225_601).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::KeyRing`] if `CLOAKROOM_KEYS` or the file is not a valid key ring;
    /// [`ErrorKind::Permissions`] if the file is readable or writable by group or other;
    /// [`ErrorKind::Io`] if the file (or its directory) cannot be read, or the new file cannot
    /// be written; [`ErrorKind::Random`] if no randomness is available for a new ring.
    pub fn from_env_or_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        match Self::from_env()? {
            Some(ring) => Ok(ring),
            None => Self::load_or_create(path.as_ref()).map(|(ring, _)| ring),
        }
    }

    /// Loads the ring at `path`, or creates it there if there is no file; says which.
    fn load_or_create(path: &Path) -> Result<(Self, Origin), Error> {
        match fs::symlink_metadata(path) {
            Ok(_) => return Self::load(path).map(|ring| (ring, Origin::Loaded)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("cannot look for key file {}: {e}", path.display()),
                    e,
                ))
            }
        }
        let ring = Self::generate()?;
        if !create_exclusive(path, &ring.to_toml())? {
            // Another process created it between our look and our write: use theirs.
            return Self::load(path).map(|ring| (ring, Origin::Loaded));
        }
        let message = format!(
            "generated a new key ring in {} (mode 0600): keep it secret and back it up; every \
             instance of this site must use this same ring (this file or {KEYS_ENV}), and \
             losing it signs every user out",
            path.display()
        );
        if tracing::dispatcher::has_been_set() {
            tracing::warn!("{message}");
        } else {
            eprintln!("cloakroom: {message}");
        }
        Ok((ring, Origin::Created))
    }

    /// Writes the ring to `path` with mode 0600.
    ///
    /// Without `overwrite`, an existing file is never touched. With it, the new ring is written
    /// to a temporary file beside `path`, synced, and renamed over it, so a crash leaves the old
    /// ring or the new one, never half of either.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file exists (without `overwrite`) or cannot be written.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<(), Error> {
        let shown = path.display();
        let text = self.to_toml();
        if !overwrite {
            let mut file = private_options().create_new(true).open(path).map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::AlreadyExists {
                    format!("{shown} already exists; pass --force to replace it")
                } else {
                    format!("cannot create key file {shown}: {e}")
                };
                Error::io(what, e)
            })?;
            return write_synced(&mut file, &text)
                .map_err(|e| Error::io(format!("cannot write key file {shown}: {e}"), e));
        }
        let tmp = temp_beside(path, &format!(".tmp{}", std::process::id()))?;
        let result = (|| {
            let mut file = private_options().create_new(true).open(&tmp)?;
            write_synced(&mut file, &text)?;
            fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        result.map_err(|e: std::io::Error| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("cannot write key file {shown}: {e}"), e)
        })
    }
}

/// Where [`KeyRing::load_or_create`] got its ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Loaded,
    Created,
}

/// A hidden temporary file beside `path`: its name with a leading `.` and `suffix`.
///
/// # Errors
/// `InvalidInput` if `path` does not end in a file name.
fn temp_beside(path: &Path, suffix: &str) -> Result<std::path::PathBuf, Error> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a file name", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(suffix);
    Ok(path.with_file_name(tmp_name))
}

/// Writes `text` to a new file at `path`, mode 0600, never replacing an existing file: the
/// text goes to a temporary file beside it, synced, which is then hard-linked into place (an
/// atomic "create if absent"), so no reader ever sees half a key ring. Returns `false` if
/// `path` already exists. On a file system without hard links, `path` is created with
/// `create_new` and written in place.
fn create_exclusive(path: &Path, text: &str) -> Result<bool, Error> {
    let shown = path.display();
    let cannot = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => " (does its directory exist?)",
            std::io::ErrorKind::PermissionDenied => " (is its directory writable by this user?)",
            _ => "",
        };
        Error::io(format!("cannot create key file {shown}: {e}{hint}"), e)
    };
    let tmp = temp_beside(
        path,
        &format!(".new{}-{:016x}", std::process::id(), rand::random::<u64>()),
    )?;
    let mut file = private_options()
        .create_new(true)
        .open(&tmp)
        .map_err(cannot)?;
    let linked = write_synced(&mut file, text).and_then(|()| fs::hard_link(&tmp, path));
    drop(file);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) if path.exists() => return Err(cannot(e)),
        Err(_) => {
            // No hard links here (or the write failed): create the file itself, exclusively.
            let mut file = match private_options().create_new(true).open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(cannot(e)),
            };
            write_synced(&mut file, text).map_err(cannot)?;
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(cannot)?;
    }
    Ok(true)
}

/// Reads a file that holds secrets (`what` names it in messages, e.g. `"key file"`).
///
/// On Unix a file readable or writable by group or other is refused with
/// [`ErrorKind::Permissions`] and a message that names the file and its mode and says
/// `chmod 600`. The bytes are zeroized when the result is dropped.
///
/// # Errors
/// [`ErrorKind::Io`] if the file cannot be opened or read, [`ErrorKind::Permissions`] if its
/// mode is too open.
pub fn read_private_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let shown = path.display();
    let mut file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {what} {shown}: {e}"), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {what} {shown}: {e}"), e))?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{what} {shown} is not a regular file"),
        ));
    }
    check_mode(&file, path, what)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read {what} {shown}: {e}"), e))?;
    Ok(bytes)
}

fn write_synced(file: &mut File, text: &str) -> std::io::Result<()> {
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

#[cfg(unix)]
fn check_mode(file: &File, path: &Path, what: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {what} {}: {e}", path.display()), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::new(
            ErrorKind::Permissions,
            format!(
                "{what} {} has mode {mode:04o}, readable by group or other; run: chmod 600 {}",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_file: &File, _path: &Path, _what: &str) -> Result<(), Error> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_mode_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let ring = KeyRing::generate().unwrap();
        ring.save(&path, false).unwrap();
        let err = ring.save(&path, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        let loaded = KeyRing::load(&path).unwrap();
        assert!(loaded.primary().secret() == ring.primary().secret());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let err = KeyRing::load(&path).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permissions);
            let msg = err.to_string();
            assert!(msg.contains("0644") && msg.contains("chmod 600") && msg.contains("keys.toml"));
        }

        let mut rotated = loaded;
        rotated.rotate().unwrap();
        rotated.save(&path, true).unwrap();
        let again = KeyRing::load(&path).unwrap();
        assert_eq!(again.primary().id().as_str(), "k2");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    fn opens_the_other_s_tokens(a: &KeyRing, b: &KeyRing) -> bool {
        let now = 1_767_225_600;
        let token = a
            .codec("__Host-session")
            .unwrap()
            .sign(b"user:950", now, now + 1800)
            .unwrap();
        b.codec("__Host-session")
            .unwrap()
            .verify(&token, now + 1)
            .is_ok()
    }

    #[test]
    fn first_start_creates_a_0600_file_and_a_restart_loads_the_same_ring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let (first, origin) = KeyRing::load_or_create(&path).unwrap();
        assert_eq!(origin, Origin::Created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (second, origin) = KeyRing::load_or_create(&path).unwrap();
        assert_eq!(origin, Origin::Loaded);
        assert!(opens_the_other_s_tokens(&first, &second));
        assert!(!opens_the_other_s_tokens(
            &first,
            &KeyRing::generate().unwrap()
        ));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keys.toml"], "no temporary file left");
    }

    #[test]
    fn a_file_it_cannot_use_is_an_error_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        KeyRing::load_or_create(&path).unwrap();
        let before = fs::read(&path).unwrap();

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
            let err = KeyRing::from_env_or_file(&path).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permissions, "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), before, "the file was replaced");
        }

        let bad = dir.path().join("bad.toml");
        private_options()
            .create_new(true)
            .open(&bad)
            .unwrap()
            .write_all(b"[[keys]]\nid = \"k1\"\n")
            .unwrap();
        let err = KeyRing::load_or_create(&bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyRing, "{err}");
        assert!(err.to_string().contains("bad.toml"), "{err}");
        assert_eq!(fs::read(&bad).unwrap(), b"[[keys]]\nid = \"k1\"\n");

        // A directory where the file should be, and a parent that is not a directory.
        let err = KeyRing::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        let err = KeyRing::load_or_create(&path.join("keys.toml")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(err.to_string().contains("keys.toml/keys.toml"), "{err}");
        let err = KeyRing::load_or_create(&dir.path().join("no/such/dir/keys.toml")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(
            err.to_string().contains("does its directory exist"),
            "{err}"
        );
    }

    /// One test for everything that sets `CLOAKROOM_KEYS`, so no two tests race on it.
    #[test]
    fn the_environment_wins_and_a_bad_value_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let from_file = KeyRing::from_env_or_file(&path).unwrap();
        let in_env = KeyRing::generate().unwrap();

        std::env::set_var(KEYS_ENV, in_env.to_toml().as_str());
        let got = KeyRing::from_env_or_file(&path);
        let elsewhere = dir.path().join("never.toml");
        let untouched = KeyRing::from_env_or_file(&elsewhere);
        std::env::set_var(KEYS_ENV, "[[keys]]\nid = \"k1\"\nsecret = \"short\"\n");
        let bad = KeyRing::from_env_or_file(&path);
        std::env::remove_var(KEYS_ENV);

        let got = got.unwrap();
        assert!(opens_the_other_s_tokens(&in_env, &got));
        assert!(!opens_the_other_s_tokens(&from_file, &got));
        untouched.unwrap();
        assert!(
            !elsewhere.exists(),
            "a file was created although the environment had a ring"
        );
        let err = bad.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyRing, "{err}");
        assert!(err.to_string().contains(KEYS_ENV), "{err}");
        assert!(opens_the_other_s_tokens(
            &from_file,
            &KeyRing::from_env_or_file(&path).unwrap()
        ));
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = KeyRing::load(Path::new("/nonexistent/keys.toml")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.to_string().contains("/nonexistent/keys.toml"));
        assert!(std::error::Error::source(&err).is_some());
    }
}
