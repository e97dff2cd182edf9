//! The session cookie on the wire: every value of its name read from `Cookie`, and the
//! `Set-Cookie` line written, both with the `cookie` crate.

use cookie::time::{Duration, OffsetDateTime};
use cookie::Cookie;
use http::{header, HeaderMap};

use cloakroom::CookieUpdate;

/// The session cookie's `SameSite` attribute ([`Builder::with_same_site`](crate::Builder::with_same_site)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SameSite {
    /// Sent only with requests the site itself starts: a link from another site arrives
    /// logged out.
    Strict,
    /// Sent with same-site requests and top-level navigations (a link from another site
    /// arrives logged in; a cross-site form POST does not). The default.
    #[default]
    Lax,
    /// Sent with every request, cross-site ones included (an embedded widget, a payment
    /// provider's POST back). Needs `Secure`, so not with plain http; the CSRF layer is
    /// then the only defence against cross-site requests.
    None,
}

impl SameSite {
    fn to_cookie(self) -> cookie::SameSite {
        match self {
            Self::Strict => cookie::SameSite::Strict,
            Self::Lax => cookie::SameSite::Lax,
            Self::None => cookie::SameSite::None,
        }
    }
}

/// How the layer writes its cookie.
#[derive(Debug, Clone)]
pub(crate) struct CookieOptions {
    pub(crate) name: String,
    pub(crate) domain: Option<String>,
    pub(crate) same_site: SameSite,
    pub(crate) secure: bool,
    /// No `Max-Age`: the browser drops the cookie when it closes (a remembered login still
    /// gets one).
    pub(crate) browser_session: bool,
}

impl CookieOptions {
    pub(crate) fn cookie(&self, name: &str, value: String) -> Cookie<'static> {
        let mut c = Cookie::new(name.to_owned(), value);
        c.set_http_only(true);
        c.set_same_site(self.same_site.to_cookie());
        c.set_secure(self.secure);
        c.set_path("/");
        if let Some(domain) = &self.domain {
            c.set_domain(domain.clone());
        }
        c
    }

    /// The `Set-Cookie` value for `update`, or `None` for [`CookieUpdate::Keep`]. The removal
    /// carries the same `Domain`, `Path` and `SameSite` as the cookie it removes (a browser
    /// removes only the cookie those match), with `Max-Age=0` and an `Expires` in 1970.
    pub(crate) fn set_cookie(&self, update: &CookieUpdate, remembered: bool) -> Option<String> {
        self.set_cookie_named(&self.name, update, remembered)
    }

    /// As [`CookieOptions::set_cookie`], for another cookie of the layer's (the anonymous
    /// CSRF cookie) with the same attributes.
    pub(crate) fn set_cookie_named(
        &self,
        name: &str,
        update: &CookieUpdate,
        remembered: bool,
    ) -> Option<String> {
        match update {
            CookieUpdate::Set { value, max_age } => {
                let mut c = self.cookie(name, value.clone());
                if !self.browser_session || remembered {
                    let secs = i64::try_from(*max_age).unwrap_or(i64::MAX);
                    c.set_max_age(Duration::seconds(secs));
                }
                Some(c.to_string())
            }
            CookieUpdate::Remove => {
                let mut c = self.cookie(name, String::new());
                c.set_max_age(Duration::ZERO);
                c.set_expires(OffsetDateTime::UNIX_EPOCH);
                Some(c.to_string())
            }
            _ => None,
        }
    }
}

/// Every value of cookie `name` in the request's `Cookie` headers, in the order sent
/// (browsers send the cookie with the longest path first, then the oldest first).
pub(crate) fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == name)
        .map(|c| c.value_trimmed().to_owned())
        .collect()
}

/// The first value of cookie `name`.
#[cfg_attr(not(feature = "migrate"), allow(dead_code))]
pub(crate) fn first(headers: &HeaderMap, name: &str) -> Option<String> {
    values(headers, name).into_iter().next()
}

/// `domain` as a `Domain` attribute: host name labels (letters, digits, `-`), a leading dot
/// dropped (RFC 6265 ignores it), lower case.
///
/// # Errors
/// A message saying what is wrong.
pub(crate) fn check_domain(domain: &str) -> Result<String, String> {
    let d = domain
        .strip_prefix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if d.is_empty() || d.len() > 253 || !d.split('.').all(label_ok) {
        return Err(format!(
            "cookie domain {domain:?} is not a host name (like example.com)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> CookieOptions {
        CookieOptions {
            name: "__Host-session".into(),
            domain: None,
            same_site: SameSite::Lax,
            secure: true,
            browser_session: false,
        }
    }

    #[test]
    fn set_and_remove_lines() {
        let set = CookieUpdate::Set {
            value: "s1.k.abc.def".into(),
            max_age: 43_200,
        };
        let o = options();
        assert_eq!(
            o.set_cookie(&set, false).unwrap(),
            "__Host-session=s1.k.abc.def; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=43200"
        );
        assert_eq!(
            o.set_cookie(&CookieUpdate::Remove, false).unwrap(),
            "__Host-session=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(o.set_cookie(&CookieUpdate::Keep, false), None);

        let o = CookieOptions {
            name: "__Secure-s".into(),
            domain: Some("example.com".into()),
            same_site: SameSite::Strict,
            secure: true,
            browser_session: true,
        };
        assert_eq!(
            o.set_cookie(&set, false).unwrap(),
            "__Secure-s=s1.k.abc.def; HttpOnly; SameSite=Strict; Secure; Path=/; Domain=example.com"
        );
        assert_eq!(
            o.set_cookie(&set, true).unwrap(),
            "__Secure-s=s1.k.abc.def; HttpOnly; SameSite=Strict; Secure; Path=/; Domain=example.com; Max-Age=43200",
            "a remembered login outlives the browser"
        );
        assert_eq!(
            o.set_cookie(&CookieUpdate::Remove, false).unwrap(),
            "__Secure-s=; HttpOnly; SameSite=Strict; Secure; Path=/; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn reads_every_value_of_the_name() {
        let h = crate::proxy::headers(
            "cookie",
            &[
                "a=1; __Host-session=first; junk; __Host-session=\"second\"",
                "b=2; __Host-session=third",
            ],
        );
        assert_eq!(values(&h, "__Host-session"), ["first", "second", "third"]);
        assert_eq!(first(&h, "b").as_deref(), Some("2"));
        assert_eq!(first(&h, "session"), None);
        assert!(values(&HeaderMap::new(), "a").is_empty());
    }

    #[test]
    fn domains() {
        assert_eq!(check_domain(".Example.COM").unwrap(), "example.com");
        assert_eq!(check_domain("a-b.example.com").unwrap(), "a-b.example.com");
        for bad in [
            "",
            ".",
            "example..com",
            "exa mple.com",
            "-a.com",
            "a;b",
            "ex/ample.com",
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
    }
}
