//! `import`: open another framework's session cookie, and with `--store` turn it into a
//! Cloakroom session.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use cloakroom::{CookieUpdate, Device, Policy, SessionManager, Store};
use cloakroom_interop::{
    Django, ErrorKind, Flask, Legacy, LegacySession, Pyramid, Rails, RailsVersion, Secret,
};
use cloakroom_stores::StoreUrl;
use cloakroom_token::ErrorKind as TokenErrorKind;

use crate::cli::{Framework, ImportArgs, RailsVersionArg};
use crate::{keys, Failure};

/// Reads a secret file (mode 0600 required), less one trailing newline.
fn read_secret(path: &Path) -> anyhow::Result<Secret> {
    let mut file = cloakroom_token::read_private_file(path, "secret file")?;
    // Move the bytes out (no copy): they go on into `Secret`, which zeroizes them on drop.
    let mut bytes = std::mem::take(&mut *file);
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

/// `reader` with `--salt` and `--max-age` applied where they were given, through its
/// framework's `with_salt` and its way to set the max age; its defaults where not.
fn with_options<R: Into<Legacy>>(
    mut reader: R,
    args: &ImportArgs,
    with_salt: impl FnOnce(R, String) -> R,
    with_max_age: impl FnOnce(R, Option<u64>) -> R,
) -> Legacy {
    if let Some(salt) = &args.salt {
        reader = with_salt(reader, salt.clone());
    }
    if args.max_age.is_some() {
        reader = with_max_age(reader, args.max_age);
    }
    reader.into()
}

fn reader(args: &ImportArgs, secret: Secret) -> anyhow::Result<Legacy> {
    let legacy: Legacy = match args.from {
        Framework::Flask => with_options(
            Flask::new(secret)?,
            args,
            Flask::with_salt,
            Flask::with_max_age,
        ),
        Framework::Django => with_options(
            Django::new(secret)?,
            args,
            Django::with_salt,
            Django::with_max_age,
        ),
        Framework::Pyramid => with_options(
            Pyramid::new(secret)?,
            args,
            Pyramid::with_salt,
            Pyramid::with_timeout,
        ),
        Framework::Rails => {
            let version = match args.rails_version {
                RailsVersionArg::V6_1 => RailsVersion::V6_1,
                RailsVersionArg::V7_2 => RailsVersion::V7_2,
            };
            let mut r = Rails::new(version, secret, args.cookie_name.clone())?;
            if let Some(salt) = &args.salt {
                r = r.with_salt(salt.clone());
            }
            r.into()
        }
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
    // Everything that can be refused is checked before the store is touched.
    let mut out = to_json(&session);
    if let Some(url) = &args.store {
        let target = StoreUrl::parse(url).map_err(|e| anyhow!("--store: {e}"))?;
        let user = user_id(&session, &args.user_field)?;
        let created = create_session(&args, &target, &session, user)?;
        out["cloakroom"] = created;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The user id under `field`: a string as is, a number in decimal.
fn user_id(session: &LegacySession, field: &str) -> anyhow::Result<String> {
    let fields = || match &session.data {
        serde_json::Value::Object(map) if !map.is_empty() => {
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        }
        _ => "none".to_owned(),
    };
    match session.data.get(field) {
        None => bail!(
            "the {} session has no field {field:?} to take the user id from (choose one with \
             --user-field NAME; its fields: {})",
            session.framework,
            fields()
        ),
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(_) => bail!(
            "the {} session's field {field:?} is not a user id (a non-empty string or a number)",
            session.framework
        ),
    }
}

/// Logs `user` in to a new server-mode session in the store; the `cloakroom` part of the
/// output.
fn create_session(
    args: &ImportArgs,
    target: &StoreUrl,
    session: &LegacySession,
    user: String,
) -> anyhow::Result<serde_json::Value> {
    let ring = keys::load(args.keys.as_deref())?;
    let policy = Policy::default()
        .with_absolute(Duration::from_secs(args.absolute))?
        .with_idle(Duration::from_secs(args.idle))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let store: Arc<dyn Store> = crate::store::open_url(target.clone()).await?;
        let manager = SessionManager::new(&ring, store)?
            .with_cookie_name(&args.cloakroom_cookie_name)
            .context("--cloakroom-cookie-name")?
            .with_policy(policy);
        let mut new = manager.load(None).await?;
        let device = Device::new().with_label(format!("imported from {}", session.framework));
        new.login(user.clone(), device)?;
        let commit = manager.commit(new).await?;
        let CookieUpdate::Set { value, max_age } = commit.cookie else {
            bail!("the store did not keep the new session");
        };
        Ok(serde_json::json!({
            "cookie_name": manager.cookie_name(),
            "cookie": value,
            "user_id": user,
            "max_age": max_age,
        }))
    })
}
