//! What the networked stores (Redis, PostgreSQL) share about reaching their server: the
//! store's own URL options, the plaintext guard, and the TLS trust roots.
//!
//! # URL options
//!
//! These query parameters are read (and removed) by the store before the rest of the URL
//! goes to the client library:
//!
//! | parameter | meaning |
//! |---|---|
//! | `ca=PATH` | trust the CA certificates in the PEM file `PATH` (instead of the system's) |
//! | `allow_plaintext_to_remote_host` (or `=true`/`=1`) | allow a connection without TLS to a host that is not this machine |
//!
//! # The plaintext guard
//!
//! A session record is a bearer credential's state: sending it unencrypted across a network
//! lets anyone on the path read and rewrite sessions. So a store refuses to connect without
//! TLS to any host that is not a loopback address (`127.0.0.0/8`, `::1`, the name
//! `localhost`) or a Unix socket, unless `allow_plaintext_to_remote_host` is set. Host names
//! are not resolved for this check: any name other than `localhost` counts as remote.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloakroom::store::{Error, ErrorKind};

use crate::url::is_conninfo;

/// The store options a URL may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UrlOptions {
    /// `ca=PATH`.
    pub(crate) ca: Option<PathBuf>,
    /// `allow_plaintext_to_remote_host`.
    pub(crate) allow_plaintext_to_remote_host: bool,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, message.into())
}

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`, as in a path).
fn percent_decode(s: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("a bad %-escape in a store URL option"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("a store URL option is not UTF-8"))
}

fn parse_flag(name: &str, value: Option<&str>) -> Result<bool, Error> {
    match value {
        None | Some("" | "1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(invalid(format!(
            "the store URL option `{name}` takes true or false"
        ))),
    }
}

/// Removes the store's own query parameters (see the module docs) from `url` and returns
/// the rest of the URL with the options they set.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for an option given a bad value or given twice.
pub(crate) fn take_options(url: &str) -> Result<(String, UrlOptions), Error> {
    if is_conninfo(url) {
        return take_conninfo_options(url);
    }
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let Some((base, query)) = before_fragment.split_once('?') else {
        return Ok((url.to_owned(), UrlOptions::default()));
    };
    let mut taken = Taken::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        if !taken.take("store URL option", name, value, percent_decode)? {
            kept.push(pair);
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Ok((out, taken.options))
}

/// The `keyword=value` pairs of a connection string, each as (keyword, decoded value, the
/// pair as written). Values may be single-quoted, with `\'` and `\\` escapes (libpq's
/// rules).
pub(crate) fn conninfo_pairs(s: &str) -> Result<Vec<(String, String, String)>, Error> {
    let mut pairs = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(invalid(format!(
                "the PostgreSQL connection string has `{key}` without `=value`"
            )));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(invalid("an unfinished escape in a connection string")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(invalid("an unclosed quote in a connection string")),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(invalid("an unfinished escape in a connection string")),
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(s.len(), |(i, _)| *i);
        pairs.push((key, value, s[start..end].to_owned()));
    }
    Ok(pairs)
}

/// [`take_options`] for a key=value connection string: `ca=PATH` and
/// `allow_plaintext_to_remote_host=true` are the store's, the rest is PostgreSQL's.
fn take_conninfo_options(s: &str) -> Result<(String, UrlOptions), Error> {
    let mut taken = Taken::default();
    let mut kept = Vec::new();
    for (key, value, written) in conninfo_pairs(s)? {
        // Values come unquoted and unescaped already.
        if !taken.take("store option", &key, Some(&value), |v| Ok(v.to_owned()))? {
            kept.push(written);
        }
    }
    Ok((kept.join(" "), taken.options))
}

/// The store's own options read so far from a URL's query or a connection string: each may
/// be given once.
#[derive(Default)]
struct Taken {
    options: UrlOptions,
    seen_allow: bool,
}

impl Taken {
    /// Takes the pair `name` (= `value`) if it is one of the store's options, and says
    /// whether it was. `kind` is what the messages call such an option; `decode` turns the
    /// `ca` path as written into the path meant.
    fn take(
        &mut self,
        kind: &str,
        name: &str,
        value: Option<&str>,
        decode: impl FnOnce(&str) -> Result<String, Error>,
    ) -> Result<bool, Error> {
        match name {
            "ca" => {
                if self.options.ca.is_some() {
                    return Err(invalid(format!("the {kind} `ca` is given twice")));
                }
                let path = decode(value.unwrap_or(""))?;
                if path.is_empty() {
                    return Err(invalid(format!("the {kind} `ca` needs a file path")));
                }
                self.options.ca = Some(PathBuf::from(path));
            }
            "allow_plaintext_to_remote_host" => {
                if self.seen_allow {
                    return Err(invalid(format!("the {kind} `{name}` is given twice")));
                }
                self.seen_allow = true;
                self.options.allow_plaintext_to_remote_host = parse_flag(name, value)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Whether `host` (a name or an address, IPv6 possibly in brackets) is this machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The error for a plaintext connection to `host` without the option that allows it.
pub(crate) fn plaintext_refused(store: &str, host: &str, tls_hint: &str) -> Error {
    invalid(format!(
        "refusing to connect to {store} at {host} without TLS: it is not this machine, and \
         session records would cross the network in plaintext; {tls_hint}, or add \
         `allow_plaintext_to_remote_host` (the URL option or the builder method) if the \
         network is trusted"
    ))
}

/// The PEM file of CA certificates at `path`, read whole (to hand to a TLS library).
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("cannot read the CA file {}", path.display()),
        )
        .with_source(e)
    })?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(invalid(format!(
            "the CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

/// A rustls client configuration (the `ring` provider, TLS 1.2 and 1.3) that trusts the CA
/// certificates in `ca`, or the system's when `ca` is `None`.
#[cfg(feature = "postgres")]
pub(crate) fn rustls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca {
        let pem = read_ca_file(path)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                invalid(format!(
                    "the CA file {} does not parse: {e}",
                    path.display()
                ))
            })?;
            roots.add(cert).map_err(|e| {
                invalid(format!(
                    "the CA file {} holds a certificate rustls refuses: {e}",
                    path.display()
                ))
            })?;
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A system store may hold a certificate rustls cannot use; the others still
            // count.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(invalid(
                "no system CA certificates were found for TLS; name a CA file with `ca=PATH`",
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("cannot configure TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_options_are_taken_out_of_the_url() {
        let (rest, o) = take_options(
            "postgres://u@db/x?sslmode=require&ca=/etc/ssl/my%20ca.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@db/x?sslmode=require&application_name=a");
        assert_eq!(o.ca, Some(PathBuf::from("/etc/ssl/my ca.pem")));
        assert!(!o.allow_plaintext_to_remote_host);

        let (rest, o) = take_options("redis://h:1/2?allow_plaintext_to_remote_host").unwrap();
        assert_eq!(rest, "redis://h:1/2");
        assert!(o.allow_plaintext_to_remote_host);
        let (_, o) = take_options("redis://h?allow_plaintext_to_remote_host=false").unwrap();
        assert!(!o.allow_plaintext_to_remote_host);

        let (rest, o) = take_options("rediss://h:1#insecure").unwrap();
        assert_eq!(rest, "rediss://h:1#insecure");
        assert_eq!(o, UrlOptions::default());
    }

    #[test]
    fn store_options_are_taken_out_of_a_connection_string() {
        let s = "host=db.example port=5432 ca='/etc/ssl/my ca.pem' dbname=s \
                 allow_plaintext_to_remote_host=false password='a b\\'c'";
        assert!(is_conninfo(s));
        let (rest, o) = take_options(s).unwrap();
        assert_eq!(
            rest,
            "host=db.example port=5432 dbname=s password='a b\\'c'"
        );
        assert_eq!(o.ca.as_deref(), Some(Path::new("/etc/ssl/my ca.pem")));
        assert!(!o.allow_plaintext_to_remote_host);
        let pairs = conninfo_pairs(&rest).unwrap();
        assert_eq!(pairs[3].1, "a b'c");
        let (_, o) = take_options("host=h allow_plaintext_to_remote_host=true").unwrap();
        assert!(o.allow_plaintext_to_remote_host);
        for bad in ["host=h ca=", "host=h port", "host='h", "host=h ca=a ca=b"] {
            assert_eq!(
                take_options(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad}"
            );
        }
        assert!(!is_conninfo("postgres://u@h/db?host=x"));
        assert!(!is_conninfo("redis://h"));
    }

    #[test]
    fn bad_options_are_refused() {
        for url in [
            "redis://h?allow_plaintext_to_remote_host=maybe",
            "redis://h?ca=",
            "redis://h?ca=a&ca=b",
            "redis://h?ca=%zz",
        ] {
            let err = take_options(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "db.example",
            "192.0.2.1",
            "[2001:db8::1]",
            "localhost.example",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
