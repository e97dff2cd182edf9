//! `sign`, `open`, `inspect` and `hmac`.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use cloakroom_token::{ErrorKind, TokenKind};

use crate::cli::{KeySource, OpenArgs, SignArgs};
use crate::{keys, Failure};

fn now(source: &KeySource) -> anyhow::Result<u64> {
    match source.now {
        Some(t) => Ok(t),
        None => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs()),
    }
}

/// The argument's bytes, or standard input's for `-`.
fn arg_or_stdin(arg: &str) -> anyhow::Result<Vec<u8>> {
    if arg != "-" {
        return Ok(arg.as_bytes().to_vec());
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("reading standard input")?;
    Ok(buf)
}

fn token_arg(arg: &str) -> anyhow::Result<String> {
    let bytes = arg_or_stdin(arg)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("the token is not text"))?;
    Ok(text.trim().to_owned())
}

pub(crate) fn sign(args: SignArgs) -> Result<(), Failure> {
    let ring = keys::load(args.source.keys.as_deref())?;
    let codec = ring.codec(&args.purpose)?;
    let data = arg_or_stdin(&args.data)?;
    let issued = now(&args.source)?;
    let expires = issued
        .checked_add(args.ttl)
        .ok_or_else(|| anyhow!("--ttl is too long"))?;
    let token = if args.sealed {
        codec.seal(&data, issued, expires)?
    } else {
        codec.sign(&data, issued, expires)?
    };
    println!("{token}");
    Ok(())
}

pub(crate) fn open(args: OpenArgs) -> Result<(), Failure> {
    let ring = keys::load(args.source.keys.as_deref())?;
    let codec = ring.codec(&args.purpose)?;
    let token = token_arg(&args.token)?;
    let opened = codec
        .open(&token, now(&args.source)?)
        .map_err(|e| match e.kind() {
            kind @ (ErrorKind::Invalid | ErrorKind::Expired) => Failure::Rejected(kind),
            _ => Failure::Usage(e.into()),
        })?;
    let mut out = std::io::stdout().lock();
    out.write_all(opened.payload())?;
    if out.is_terminal() && !opened.payload().ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn time(unix: u64) -> String {
    let rfc = UNIX_EPOCH
        .checked_add(Duration::from_secs(unix))
        .filter(|t| {
            t.duration_since(UNIX_EPOCH)
                .is_ok_and(|d| d.as_secs() < 253_402_300_800)
        })
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "beyond year 9999".to_owned());
    format!("{unix} ({rfc})")
}

pub(crate) fn inspect(token: &str) -> Result<(), Failure> {
    let token = token_arg(token)?;
    let info = cloakroom_token::inspect(&token)
        .map_err(|_| anyhow!("this does not have the shape of a Cloakroom token (s1.… or e1.…)"))?;
    let kind = match info.kind {
        TokenKind::Signed => "signed (s1): payload readable, MAC-protected",
        TokenKind::Sealed => "sealed (e1): payload encrypted",
        _ => "unknown",
    };
    println!("kind:        {kind}");
    println!("key id:      {}", info.key_id);
    println!("length:      {} bytes", info.len);
    match &info.claims {
        Some(claims) => {
            println!("issued at:   {}", time(claims.issued_at));
            println!("expires at:  {}", time(claims.expires_at));
            println!("payload:     {}", claims.payload.escape_ascii());
        }
        None => println!("payload:     (encrypted; times are inside the encryption)"),
    }
    println!("verified:    NO (inspect has no key; `cloakroom open` verifies)");
    Ok(())
}

/// The key bytes: the file's, else `--key`'s, else standard input's; one trailing newline
/// (`\n` or `\r\n`) of a file or stdin is dropped.
fn hmac_key(key: Option<&str>, key_file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let mut bytes = match (key, key_file) {
        (_, Some(path)) => {
            std::fs::read(path).with_context(|| format!("reading --key-file {}", path.display()))?
        }
        (Some(key), None) => return Ok(key.as_bytes().to_vec()),
        (None, None) => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading the key from standard input (end with Ctrl-D)");
            }
            arg_or_stdin("-")?
        }
    };
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(anyhow!(
            "the HMAC key is empty (give it with --key-file FILE or on standard input)"
        ));
    }
    Ok(bytes)
}

pub(crate) fn hmac(
    key: Option<&str>,
    key_file: Option<&Path>,
    message: &str,
) -> Result<(), Failure> {
    let key = hmac_key(key, key_file)?;
    let mac = cloakroom_token::hmac_sha256(&key, message.as_bytes());
    println!("{}", hex::encode(mac));
    Ok(())
}
