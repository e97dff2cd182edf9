//! `import`: open another framework's session cookie.

use std::io::Read as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use cloakroom_interop::{
    Django, ErrorKind, Flask, Legacy, LegacySession, Pyramid, Rails, RailsVersion, Secret,
};
use cloakroom_token::ErrorKind as TokenErrorKind;

use crate::cli::ImportArgs;
use crate::Failure;

/// Reads a secret file, refusing one readable by group or other.
fn read_secret(path: &Path) -> anyhow::Result<Secret> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open secret file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "secret file {} has mode {mode:04o}, readable by group or other; run: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read secret file {}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        bail!("secret file {} is empty", path.display());
    }
    Ok(Secret::from(bytes))
}

fn reader(args: &ImportArgs, secret: Secret) -> anyhow::Result<Legacy> {
    let legacy: Legacy = match args.from.as_str() {
        "flask" => {
            let mut f = Flask::new(secret)?;
            if let Some(salt) = &args.salt {
                f = f.with_salt(salt.clone());
            }
            if args.max_age.is_some() {
                f = f.with_max_age(args.max_age);
            }
            f.into()
        }
        "django" => {
            let mut d = Django::new(secret)?;
            if let Some(salt) = &args.salt {
                d = d.with_salt(salt.clone());
            }
            if args.max_age.is_some() {
                d = d.with_max_age(args.max_age);
            }
            d.into()
        }
        "pyramid" => {
            let mut p = Pyramid::new(secret)?;
            if let Some(salt) = &args.salt {
                p = p.with_salt(salt.clone());
            }
            if args.max_age.is_some() {
                p = p.with_timeout(args.max_age);
            }
            p.into()
        }
        "rails" => {
            let version = if args.rails_version == "6.1" {
                RailsVersion::V6_1
            } else {
                RailsVersion::V7_2
            };
            let mut r = Rails::new(version, secret, args.cookie_name.clone())?;
            if let Some(salt) = &args.salt {
                r = r.with_salt(salt.clone());
            }
            r.into()
        }
        other => bail!("unknown framework {other}"),
    };
    Ok(legacy)
}

fn to_json(s: &LegacySession) -> serde_json::Value {
    serde_json::json!({
        "framework": s.framework.name(),
        "data": s.data,
        "issued_at": s.issued_at,
        "accessed_at": s.accessed_at,
        "expires_at": s.expires_at,
    })
}

pub(crate) fn import(args: ImportArgs) -> Result<(), Failure> {
    let secret = read_secret(&args.secret_file)?;
    let legacy = reader(&args, secret)?;
    let cookie = if args.cookie == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s.trim().to_owned()
    } else {
        args.cookie.clone()
    };
    let now = match args.now {
        Some(t) => t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| anyhow!("the system clock is before 1970"))?
            .as_secs(),
    };
    let session = legacy.open(&cookie, now).map_err(|e| match e.kind() {
        ErrorKind::Invalid => Failure::Rejected(TokenErrorKind::Invalid),
        ErrorKind::Expired => Failure::Rejected(TokenErrorKind::Expired),
        _ => Failure::Usage(e.into()),
    })?;
    println!("{}", serde_json::to_string_pretty(&to_json(&session))?);
    Ok(())
}
