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
///
/// `Debug` shows the framework, the times and the data's top-level keys (or its JSON type and
/// length), never a value: a legacy session holds CSRF secrets and user ids.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct LegacySession {
    /// Which framework's cookie this was.
    pub framework: Framework,
    /// The session, as JSON: a Flask, Pyramid or Django session dict, a Rails session hash.
    pub data: Value,
    /// When it was signed (Flask, Django) or created (Pyramid, floored). For Rails, whose
    /// cookies carry no issue time, `exp` minus the reader's max age
    /// ([`Rails::with_max_age`](crate::Rails::with_max_age)), or `None` without one.
    pub issued_at: Option<u64>,
    /// When it was last accessed (Pyramid only, floored).
    pub accessed_at: Option<u64>,
    /// The first second at which the framework would refuse it: signing time + max age + 1
    /// (Flask, Django), last access + timeout + 1 (Pyramid), the envelope's `exp` rounded up
    /// (Rails). `None` where no expiry applies.
    pub expires_at: Option<u64>,
}

impl fmt::Debug for LegacySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            framework,
            data,
            issued_at,
            accessed_at,
            expires_at,
        } = self;
        f.debug_struct("LegacySession")
            .field("framework", framework)
            .field("data", &KeysOnly(data))
            .field("issued_at", issued_at)
            .field("accessed_at", accessed_at)
            .field("expires_at", expires_at)
            .finish()
    }
}

/// A JSON value shown without its contents: an object's keys, or the type and length.
struct KeysOnly<'a>(&'a Value);

impl fmt::Debug for KeysOnly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Object(map) => f
                .debug_struct("Object")
                .field("keys", &map.keys().collect::<Vec<_>>())
                .finish(),
            Value::Array(items) => write!(f, "Array(len {})", items.len()),
            Value::String(s) => write!(f, "String(len {})", s.len()),
            Value::Number(_) => f.write_str("Number"),
            Value::Bool(_) => f.write_str("Bool"),
            Value::Null => f.write_str("Null"),
        }
    }
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

    /// How long a cookie stays good, in seconds: the max age of Flask and Django, the timeout
    /// of Pyramid, the max age given to [`Rails::with_max_age`](crate::Rails::with_max_age).
    /// `None` where the check is off (and for Rails without one), so a cookie could be good
    /// forever.
    pub fn max_age(&self) -> Option<u64> {
        match self {
            Self::Flask(f) => f.max_age(),
            Self::Pyramid(p) => p.timeout(),
            Self::Django(d) => d.max_age(),
            Self::Rails(r) => r.max_age(),
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
    use crate::{
        Rails, RailsVersion, Secret, DJANGO_DEFAULT_MAX_AGE, FLASK_DEFAULT_MAX_AGE,
        PYRAMID_DEFAULT_TIMEOUT,
    };
    use serde_json::json;

    const T: u64 = 1_700_000_000;

    #[test]
    fn debug_shows_keys_and_times_never_values() {
        let session = LegacySession {
            framework: Framework::Flask,
            data: json!({
                "csrf_token": "s3cr3t-csrf",
                "user_id": 4242,
                "nested": {"inner": "inner-secret"},
            }),
            issued_at: Some(T),
            accessed_at: None,
            expires_at: Some(T + 10),
        };
        let shown = format!("{session:?}");
        for key in ["csrf_token", "user_id", "nested", "Flask", "1700000000"] {
            assert!(shown.contains(key), "{shown}");
        }
        for value in ["s3cr3t", "4242", "inner"] {
            assert!(!shown.contains(value), "{value} leaked: {shown}");
        }
        let string = LegacySession {
            data: json!("a-secret-string"),
            ..session.clone()
        };
        let shown = format!("{string:?}");
        assert!(
            !shown.contains("secret") && shown.contains("len 15"),
            "{shown}"
        );
        let list = LegacySession {
            data: json!(["x-secret", 1]),
            ..session
        };
        assert!(!format!("{list:?}").contains("x-secret"));
    }

    /// Opens `cookie` at the last good second and at the first bad one.
    fn ages_out(legacy: &Legacy, cookie: &str, last_good: u64) {
        let s = legacy.open(cookie, last_good).unwrap();
        assert_eq!(
            s.expires_at,
            Some(last_good + 1),
            "{:?}",
            legacy.framework()
        );
        let e = legacy.open(cookie, last_good + 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Expired, "{:?}", legacy.framework());
    }

    /// `legacy` has the max age `max_age`, and `cookie`, which it wrote at `T`, ages out by it.
    fn has_max_age(legacy: impl Into<Legacy>, cookie: &str, max_age: u64) {
        let legacy = legacy.into();
        assert_eq!(legacy.max_age(), Some(max_age), "{:?}", legacy.framework());
        ages_out(&legacy, cookie, T + max_age);
    }

    #[test]
    fn every_reader_has_and_enforces_a_max_age() {
        let session = json!({"u": 1});
        let flask = Flask::new(Secret::from("f")).unwrap();
        let cookie = flask.write(&session, T).unwrap();
        has_max_age(flask, &cookie, FLASK_DEFAULT_MAX_AGE);
        let django = Django::new(Secret::from("d")).unwrap();
        let cookie = django.write(&session, T).unwrap();
        has_max_age(django, &cookie, DJANGO_DEFAULT_MAX_AGE);
        let pyramid = Pyramid::new(Secret::from("p")).unwrap();
        let cookie = pyramid.write(&session, T).unwrap();
        has_max_age(pyramid, &cookie, PYRAMID_DEFAULT_TIMEOUT);

        // Turning a check off shows as no max age (the migration refuses such a reader).
        for off in [
            Legacy::from(Flask::new(Secret::from("f")).unwrap().with_max_age(None)),
            Legacy::from(Pyramid::new(Secret::from("p")).unwrap().with_timeout(None)),
            Legacy::from(Django::new(Secret::from("d")).unwrap().with_max_age(None)),
        ] {
            assert_eq!(off.max_age(), None, "{:?}", off.framework());
        }
    }

    #[test]
    fn rails_has_a_max_age_only_when_given_one() {
        let rails =
            Rails::new(RailsVersion::V7_2, Secret::from("0123456789abcdef"), "_app").unwrap();
        let forever = rails.write(&json!({"u": 1}), None).unwrap();
        let hour = rails.write(&json!({"u": 1}), Some(T + 3600)).unwrap();
        let day = rails.write(&json!({"u": 1}), Some(T + 86_400)).unwrap();
        // Rails' own rule: no `exp`, no end.
        let plain = Legacy::from(rails.clone());
        assert_eq!(plain.max_age(), None);
        assert!(plain.open(&forever, u64::MAX / 2000).is_ok());

        let aged = Legacy::from(rails.with_max_age(Some(3600)));
        assert_eq!(aged.max_age(), Some(3600));
        let s = aged.open(&hour, T + 10).unwrap();
        assert_eq!((s.issued_at, s.expires_at), (Some(T), Some(T + 3600)));
        ages_out(&aged, &hour, T + 3599);
        // Without `exp` its age is unknown; an `exp` further than the max age is too long.
        assert_eq!(
            aged.open(&forever, T).unwrap_err().kind(),
            ErrorKind::Expired
        );
        assert_eq!(aged.open(&day, T).unwrap_err().kind(), ErrorKind::Expired);
        assert!(aged.open(&day, T + 86_400 - 3600).is_ok());
    }

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
