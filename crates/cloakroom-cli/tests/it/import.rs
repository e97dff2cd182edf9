//! `cloakroom import`: cookies made by the real Flask, Django and Rails packages.

use std::path::Path;
use std::process::Output;

use crate::support::{cloakroom, ok, stderr, stdout, write_secret};

/// `import --from FROM --secret-file SECRET EXTRA... COOKIE`.
fn import_args<'a>(
    from: &'a str,
    secret: &'a str,
    extra: &[&'a str],
    cookie: &'a str,
) -> Vec<&'a str> {
    let mut args = vec!["import", "--from", from, "--secret-file", secret];
    args.extend_from_slice(extra);
    args.push(cookie);
    args
}

/// Runs `cloakroom import --from FROM --secret-file SECRET EXTRA... COOKIE` in `d`.
fn import(d: &Path, from: &str, secret: &str, extra: &[&str], cookie: &str) -> Output {
    cloakroom(d, &import_args(from, secret, extra, cookie))
}

/// Runs the same, which must succeed; what it printed.
fn import_ok(d: &Path, from: &str, secret: &str, extra: &[&str], cookie: &str) -> String {
    ok(d, &import_args(from, secret, extra, cookie))
}

/// Frameworks and Rails versions are value enums: anything else is refused by name, never
/// read as a default.
#[test]
fn import_refuses_unknown_frameworks_and_rails_versions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (flag, value, listed) in [
        ("--from", "laravel", "flask, pyramid, django, rails"),
        ("--rails-version", "7.1", "6.1, 7.2"),
    ] {
        let mut args = vec!["import", "--secret-file", "s", "x", flag, value];
        if flag != "--from" {
            args.extend(["--from", "rails"]);
        }
        let o = cloakroom(d, &args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(listed), "{}", stderr(&o));
    }
}

/// `cloakroom import` on cookies made by the real Django and Rails packages
/// (crates/cloakroom-testdata/data/interop-vectors.json).
#[test]
fn import_opens_real_framework_cookies() {
    let v = cloakroom_testdata::interop_vectors();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let dj = &v["django_signed_cookies_session"];
    write_secret(d, "django.secret", dj["secret_key"].as_str().unwrap());
    let cookie = dj["cookie"].as_str().unwrap();
    let now = dj["timestamp"].as_u64().unwrap().to_string();
    let now = now.as_str();
    let out = import_ok(d, "django", "django.secret", &["--now", now], cookie);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(dj["serialized_json"].as_str().unwrap()).unwrap();
    assert_eq!(got["data"], want, "{out}");
    assert_eq!(got["framework"], "django");
    // Past Django's default two-week max age: expired.
    let late = (now.parse::<u64>().unwrap() + 1_209_601).to_string();
    let o = import(d, "django", "django.secret", &["--now", &late], cookie);
    assert_eq!((o.status.code(), stderr(&o).trim()), (Some(1), "expired"));
    // The wrong framework's secret: invalid.
    let o = import(d, "flask", "django.secret", &[], cookie);
    assert_eq!((o.status.code(), stderr(&o).trim()), (Some(1), "invalid"));

    let rails = &v["rails_7_2_encrypted_cookie"];
    write_secret(
        d,
        "rails.secret",
        rails["secret_key_base"].as_str().unwrap(),
    );
    let out = import_ok(
        d,
        "rails",
        "rails.secret",
        &["--cookie-name", rails["cookie_name"].as_str().unwrap()],
        rails["cookie"].as_str().unwrap(),
    );
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(rails["serialized_json"].as_str().unwrap()).unwrap();
    assert_eq!(got["data"], want, "{out}");

    // A secret file others can read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            d.join("rails.secret"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let o = import(d, "rails", "rails.secret", &[], "x");
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    }
}

/// `cloakroom import --store sqlite:PATH`: a Django and a Flask cookie made by the real
/// packages become Cloakroom sessions in a SQLite file, which the cloakroom library opens.
#[test]
fn import_with_store_creates_a_cloakroom_session() {
    let v = cloakroom_testdata::interop_vectors();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let help = ok(d, &["import", "--help"]);
    assert!(
        help.contains("--store") && help.contains("sqlite:PATH") && help.contains("--user-field"),
        "{help}"
    );
    ok(d, &["keygen", "--out", "ring.toml"]);
    let db = d.join("sessions.db");
    let store = format!("sqlite:{}", db.display());

    let dj = &v["django_signed_cookies_session"];
    write_secret(d, "django.secret", dj["secret_key"].as_str().unwrap());
    let dj_cookie = dj["cookie"].as_str().unwrap();
    let dj_now = dj["timestamp"].as_u64().unwrap().to_string();
    let django = |extra: &[&str]| {
        let mut args = vec!["--now", &dj_now, "--store", &store, "--keys", "ring.toml"];
        args.extend_from_slice(extra);
        import(d, "django", "django.secret", &args, dj_cookie)
    };

    // The default field `user_id` is not in a Django session: exit 2, saying what to do.
    let o = django(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("\"user_id\"") && e.contains("--user-field") && e.contains("_auth_user_id"),
        "{e}"
    );
    assert!(stdout(&o).is_empty());

    let o = django(&["--user-field", "_auth_user_id"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(dj["serialized_json"].as_str().unwrap()).unwrap();
    assert_eq!(out["data"], want, "the decoded session is still printed");
    assert_eq!(out["cloakroom"]["cookie_name"], "__Host-session");
    assert_eq!(out["cloakroom"]["user_id"], "1");
    assert_eq!(out["cloakroom"]["max_age"], 12 * 3600);
    let dj_new = out["cloakroom"]["cookie"].as_str().unwrap().to_owned();

    // A Flask cookie into the same file, with its default `user_id` (a number).
    let fl = &v["flask_session"];
    write_secret(d, "flask.secret", fl["secret_key"].as_str().unwrap());
    let fl_now = (fl["timestamp"].as_u64().unwrap() + 60).to_string();
    let out = import_ok(
        d,
        "flask",
        "flask.secret",
        &[
            "--now",
            &fl_now,
            "--store",
            &format!("sqlite://{}", db.display()),
            "--keys",
            "ring.toml",
            "--cloakroom-cookie-name",
            "app-session",
        ],
        fl["vectors"][0]["cookie"].as_str().unwrap(),
    );
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["cloakroom"]["user_id"], "42");
    assert_eq!(out["cloakroom"]["cookie_name"], "app-session");
    let fl_new = out["cloakroom"]["cookie"].as_str().unwrap().to_owned();

    // The service's side: the same key ring and SQLite file open both cookies.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use std::sync::Arc;
        let ring = cloakroom::KeyRing::load(&d.join("ring.toml")).unwrap();
        let store: Arc<dyn cloakroom::Store> =
            Arc::new(cloakroom_stores::SqliteStore::open(&db).await.unwrap());
        let default = cloakroom::SessionManager::new(&ring, store.clone()).unwrap();
        let session = default.load(Some(&dj_new)).await.unwrap();
        assert_eq!(session.user_id(), Some("1"));
        assert!(!session.is_new());
        assert_eq!(
            session.device().label.as_deref(),
            Some("imported from django")
        );
        assert_eq!(default.sessions_of("1").await.unwrap().len(), 1);
        // Bound to its cookie name: the Flask import's cookie does not open as __Host-session.
        assert!(default
            .load(Some(&fl_new))
            .await
            .unwrap()
            .user_id()
            .is_none());
        let named = cloakroom::SessionManager::new(&ring, store.clone())
            .unwrap()
            .with_cookie_name("app-session")
            .unwrap();
        assert_eq!(
            named.load(Some(&fl_new)).await.unwrap().user_id(),
            Some("42")
        );
        // Another key ring does not open it.
        let other = cloakroom::SessionManager::new(&cloakroom::KeyRing::generate().unwrap(), store)
            .unwrap();
        assert!(other.load(Some(&dj_new)).await.unwrap().user_id().is_none());
    });

    // An expired legacy cookie creates nothing: exit 1 as without --store.
    let late = (dj_now.parse::<u64>().unwrap() + 1_209_601).to_string();
    let o = import(
        d,
        "django",
        "django.secret",
        &[
            "--now",
            &late,
            "--store",
            &store,
            "--keys",
            "ring.toml",
            "--user-field",
            "_auth_user_id",
        ],
        dj_cookie,
    );
    assert_eq!((o.status.code(), stderr(&o).trim()), (Some(1), "expired"));
    rt.block_on(async {
        let store = cloakroom_stores::SqliteStore::open(&db).await.unwrap();
        let ring = cloakroom::KeyRing::load(&d.join("ring.toml")).unwrap();
        let m = cloakroom::SessionManager::new(&ring, std::sync::Arc::new(store)).unwrap();
        assert_eq!(m.sessions_of("1").await.unwrap().len(), 1, "no new session");
    });

    // An unknown store scheme: exit 2 naming the supported ones; a store that cannot be
    // reached: exit 2 naming it; a missing key ring: exit 2.
    for (bad_store, keys, needle) in [
        ("mysql://h/db", "ring.toml", "sqlite://PATH"),
        ("memory", "ring.toml", "starts with a scheme"),
        (
            "redis://127.0.0.1:1",
            "ring.toml",
            "cannot open the store redis://127.0.0.1:1",
        ),
        (store.as_str(), "missing.toml", "missing.toml"),
    ] {
        let o = import(
            d,
            "django",
            "django.secret",
            &[
                "--now",
                &dj_now,
                "--store",
                bad_store,
                "--keys",
                keys,
                "--user-field",
                "_auth_user_id",
            ],
            dj_cookie,
        );
        assert_eq!(o.status.code(), Some(2), "{bad_store}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{bad_store}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
}
