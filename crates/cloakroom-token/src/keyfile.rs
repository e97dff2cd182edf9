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
        let file_name = path.file_name().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{shown} is not a file name"),
            )
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
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

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = KeyRing::load(Path::new("/nonexistent/keys.toml")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.to_string().contains("/nonexistent/keys.toml"));
        assert!(std::error::Error::source(&err).is_some());
    }
}
