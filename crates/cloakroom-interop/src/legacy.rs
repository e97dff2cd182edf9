//! One type over the four formats, for code that does not care which framework made a cookie:
//! the migration middleware and `cloakroom import`.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::django::Django;
use crate::error::{Error, ErrorKind, Result};
use crate::flask::Flask;
use crate::pyramid::Pyramid;
use crate::rails::Rails;

/// The framework a cookie came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framework {
    /// Flask's `SecureCookieSessionInterface` (itsdangerous).
    Flask,
    /// Pyramid's `SignedCookieSessionFactory`.
    Pyramid,
    /// Django's `signed_cookies` session backend.
    Django,
    /// Rails' encrypted cookie store.
    Rails,
}

impl Framework {
    /// The lower-case name: `flask`, `pyramid`, `django`, `rails`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flask => "flask",
            Self::Pyramid => "pyramid",
            Self::Django => "django",
            Self::Rails => "rails",
        }
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Framework {
    type Err = Error;

    /// Parses `flask`, `pyramid`, `django` or `rails` (any case).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "flask" => Ok(Self::Flask),
            "pyramid" => Ok(Self::Pyramid),
            "django" => Ok(Self::Django),
            "rails" => Ok(Self::Rails),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                "unknown framework: expected flask, pyramid, django or rails",
            )),
        }
    }
}

/// An opened legacy session: the data as the framework stored it, and its times.
///
/// All times are unix seconds. `expires_at` is the first second at which the framework itself
/// would refuse the cookie, where the framework has such a time.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LegacySession {
    /// Which framework's cookie this was.
    pub framework: Framework,
    /// The session, as JSON: a Flask, Pyramid or Django session dict, a Rails session hash.
    pub data: Value,
    /// When it was signed (Flask, Django) or created (Pyramid, floored). `None` for Rails,
    /// whose cookies carry no issue time.
    pub issued_at: Option<u64>,
    /// When it was last accessed (Pyramid only, floored).
    pub accessed_at: Option<u64>,
    /// The first second at which the framework would refuse it: signing time + max age + 1
    /// (Flask, Django), last access + timeout + 1 (Pyramid), the envelope's `exp` rounded up
    /// (Rails). `None` where no expiry applies.
    pub expires_at: Option<u64>,
}

/// A legacy session cookie reader for one app, whichever framework it runs on.
///
/// ```
/// use cloakroom_interop::{Django, Flask, Legacy, Secret};
/// use serde_json::json;
///
/// let flask = Flask::new(Secret::from("flask-secret"))?;
/// let cookie = flask.write(&json!({"user_id": 7}), 1_700_000_000)?;
///
/// let legacy: Legacy = flask.into();
/// assert_eq!(legacy.cookie_name(), "session");
/// let session = legacy.open(&cookie, 1_700_000_001)?;
/// assert_eq!(session.data["user_id"], 7);
///
/// let other: Legacy = Django::new(Secret::from("django-secret"))?.into();
/// assert!(other.open(&cookie, 1_700_000_001).is_err());
/// # Ok::<(), cloakroom_interop::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Legacy {
    /// A Flask app.
    Flask(Flask),
    /// A Pyramid app.
    Pyramid(Pyramid),
    /// A Django app.
    Django(Django),
    /// A Rails app.
    Rails(Rails),
}

impl Legacy {
    /// Opens a session cookie of this app at unix time `now`, by the framework's own rules.
    ///
    /// # Errors
    ///
    /// As the framework's own `open`: [`ErrorKind::Invalid`], [`ErrorKind::Expired`],
    /// [`ErrorKind::Unsupported`] or [`ErrorKind::TooLarge`].
    pub fn open(&self, cookie: &str, now: u64) -> Result<LegacySession> {
        match self {
            Self::Flask(f) => f.open(cookie, now),
            Self::Pyramid(p) => p.open(cookie, now),
            Self::Django(d) => d.open(cookie, now),
            Self::Rails(r) => r.open(cookie, now),
        }
    }

    /// The name of the app's session cookie, to find it in a request and to expire it.
    pub fn cookie_name(&self) -> &str {
        match self {
            Self::Flask(f) => f.cookie_name(),
            Self::Pyramid(p) => p.cookie_name(),
            Self::Django(d) => d.cookie_name(),
            Self::Rails(r) => r.cookie_name(),
        }
    }

    /// Which framework this is.
    pub fn framework(&self) -> Framework {
        match self {
            Self::Flask(_) => Framework::Flask,
            Self::Pyramid(_) => Framework::Pyramid,
            Self::Django(_) => Framework::Django,
            Self::Rails(_) => Framework::Rails,
        }
    }
}

impl From<Flask> for Legacy {
    fn from(f: Flask) -> Self {
        Self::Flask(f)
    }
}

impl From<Pyramid> for Legacy {
    fn from(p: Pyramid) -> Self {
        Self::Pyramid(p)
    }
}

impl From<Django> for Legacy {
    fn from(d: Django) -> Self {
        Self::Django(d)
    }
}

impl From<Rails> for Legacy {
    fn from(r: Rails) -> Self {
        Self::Rails(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framework_names() {
        for f in [
            Framework::Flask,
            Framework::Pyramid,
            Framework::Django,
            Framework::Rails,
        ] {
            assert_eq!(f.name().parse::<Framework>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("FLASK".parse::<Framework>().unwrap(), Framework::Flask);
        assert_eq!(
            "sinatra".parse::<Framework>().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
