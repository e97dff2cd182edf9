//! The `cloakroom` binary, run as a user would run it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cloakroom(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .args(args)
        .current_dir(dir)
        .env_remove("CLOAKROOM_KEYS")
        .env_remove("CLOAKROOM_KEYS_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run cloakroom")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = cloakroom(dir, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn seed_hmac_example() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        ok(dir.path(), &["hmac", "--key", "SEEKRIT", "Hello World"]).trim(),
        "e655f98cb9b3c02f45576f7906d64b0b7f8731f25a5319c42ca666917aca45a4"
    );
}

/// The HMAC key from a file or standard input (never only argv, which `ps` shows), one
/// trailing newline dropped; an empty key is refused.
#[test]
fn hmac_key_from_a_file_or_stdin() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let want = "e655f98cb9b3c02f45576f7906d64b0b7f8731f25a5319c42ca666917aca45a4";
    std::fs::write(d.join("k"), "SEEKRIT\n").unwrap();
    assert_eq!(
        ok(d, &["hmac", "--key-file", "k", "Hello World"]).trim(),
        want
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .args(["hmac", "Hello World"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SEEKRIT\r\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), want);
    std::fs::write(d.join("empty"), "\n").unwrap();
    let o = cloakroom(d, &["hmac", "--key-file", "empty", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
    let o = cloakroom(d, &["hmac", "--key", "a", "--key-file", "k", "x"]);
    assert_eq!(o.status.code(), Some(2), "--key and --key-file conflict");
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

/// Completions for three shells and a man page, generated from the clap definitions.
#[test]
fn completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cloakroom"),
        ("fish", "complete -c cloakroom"),
    ] {
        let text = ok(d, &["completions", shell]);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..200.min(text.len())]
        );
        assert!(
            text.contains("sessions") && text.contains("purge"),
            "{shell}"
        );
    }
    let man = ok(d, &["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH cloakroom"),
        "{}",
        &man[..200]
    );
    assert!(
        man.contains("sessions") && man.contains("CLOAKROOM_STORE"),
        "man page"
    );
}

#[test]
fn keygen_sign_open_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keygen"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("keys.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for sealed in [false, true] {
        let mut args = vec!["sign", "--purpose", "sess", "--ttl", "30m", "user:950"];
        if sealed {
            args.push("--sealed");
        }
        let token = ok(d, &args).trim().to_owned();
        assert!(
            token.starts_with(if sealed { "e1.k1." } else { "s1.k1." }),
            "{token}"
        );
        assert_eq!(ok(d, &["open", "--purpose", "sess", &token]), "user:950");

        // Another purpose, one changed character, expiry: exit 1 with one word.
        let o = cloakroom(d, &["open", "--purpose", "csrf", &token]);
        assert_eq!((o.status.code(), stderr(&o).trim()), (Some(1), "invalid"));
        let mut bad = token.clone().into_bytes();
        let i = bad.len() - 5;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        let o = cloakroom(d, &["open", "--purpose", "sess", &bad]);
        assert_eq!((o.status.code(), stderr(&o).trim()), (Some(1), "invalid"));
        let o = cloakroom(
            d,
            &["open", "--purpose", "sess", "--now", "99999999999", &token],
        );
        assert_eq!((o.status.code(), stderr(&o).trim()), (Some(1), "expired"));
    }
}

/// A key ring written where `git add -A` would commit it gets a warning naming the fix.
#[test]
fn keygen_warns_when_git_would_commit_the_key_ring() {
    let git = |dir: &Path, args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git is installed (apt-get install git)");
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    };
    let warned = |o: &Output| stderr(o).contains("warning:");

    // Outside any work tree: no warning.
    let plain = tempfile::tempdir().unwrap();
    let o = cloakroom(plain.path(), &["keygen"]);
    assert!(o.status.success() && !warned(&o), "{}", stderr(&o));

    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    std::fs::create_dir(r.join("config")).unwrap();

    // Not ignored, in the work tree's root and in a subdirectory (--out from elsewhere).
    let o = cloakroom(r, &["keygen"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(warned(&o), "no warning: {err}");
    assert!(
        err.contains("keys.toml") && err.contains(".gitignore"),
        "{err}"
    );
    let o = cloakroom(
        plain.path(),
        &[
            "keygen",
            "--out",
            &r.join("config/k.toml").display().to_string(),
        ],
    );
    assert!(o.status.success() && warned(&o), "{}", stderr(&o));

    // Ignored: no warning.
    std::fs::write(r.join(".gitignore"), "/prod-keys.toml\nsecret/\n").unwrap();
    std::fs::create_dir(r.join("secret")).unwrap();
    for out in ["prod-keys.toml", "secret/keys.toml"] {
        let o = cloakroom(r, &["keygen", "--out", out]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!warned(&o), "{out} is ignored, yet: {}", stderr(&o));
    }
}

#[test]
fn keygen_refuses_to_overwrite_without_force_and_rotate_keeps_old_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keygen", "--out", "k.toml"]);
    let token = ok(d, &["sign", "--keys", "k.toml", "--purpose", "p", "x"])
        .trim()
        .to_owned();
    let o = cloakroom(d, &["keygen", "--out", "k.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    ok(d, &["rotate", "--keys", "k.toml"]);
    assert_eq!(
        ok(d, &["open", "--keys", "k.toml", "--purpose", "p", &token]),
        "x"
    );
    let fresh = ok(d, &["sign", "--keys", "k.toml", "--purpose", "p", "x"]);
    assert!(fresh.starts_with("s1.k2."), "{fresh}");
    ok(d, &["keygen", "--out", "k.toml", "--force"]);
    let o = cloakroom(d, &["open", "--keys", "k.toml", "--purpose", "p", &token]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a replaced ring no longer opens old tokens"
    );
}

#[test]
fn keys_from_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keygen", "--out", "elsewhere.toml"]);
    let toml = std::fs::read_to_string(d.join("elsewhere.toml")).unwrap();
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
        c.args(args)
            .current_dir(d)
            .env_remove("CLOAKROOM_KEYS")
            .env_remove("CLOAKROOM_KEYS_FILE");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let o = run(
        &[("CLOAKROOM_KEYS_FILE", "elsewhere.toml")],
        &["sign", "--purpose", "p", "a"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o);
    let o = run(
        &[("CLOAKROOM_KEYS", &toml)],
        &["open", "--purpose", "p", token.trim()],
    );
    assert_eq!(stdout(&o), "a", "{}", stderr(&o));
}

#[test]
fn configuration_errors_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = cloakroom(d, &["sign", "--purpose", "p", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cloakroom keygen"), "{}", stderr(&o));

    ok(d, &["keygen"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("keys.toml"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let o = cloakroom(d, &["sign", "--purpose", "p", "x"]);
        assert_eq!(o.status.code(), Some(2));
        let e = stderr(&o);
        assert!(
            e.contains("chmod 600") && e.contains("0644") && e.contains("keys.toml"),
            "{e}"
        );
        std::fs::set_permissions(d.join("keys.toml"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    for args in [
        &["sign", "--purpose", "p", "--ttl", "soon", "x"][..],
        &["sign", "--purpose", "p", "--ttl", "0s", "x"],
        &["sign", "--purpose", "", "x"],
        &["open", "--purpose", "p"],
        &["frobnicate"],
        &["inspect", "not a token"],
    ] {
        let o = cloakroom(d, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
    let big = "x".repeat(5000);
    let o = cloakroom(d, &["sign", "--purpose", "p", &big]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bytes, over the limit of 4096"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn garbage_tokens_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keygen"]);
    for t in [
        "",
        ".",
        "s1.",
        "s1..",
        "e1.k1.",
        "s1.k1.AAAA.",
        "e1.k1.////",
        "s1.k1.é.x",
    ] {
        let o = cloakroom(d, &["open", "--purpose", "p", t]);
        assert_eq!(o.status.code(), Some(1), "{t:?}: {}", stderr(&o));
        let o = cloakroom(d, &["inspect", t]);
        assert!(matches!(o.status.code(), Some(0 | 2)), "{t:?}");
        assert!(!stderr(&o).contains("panicked"));
    }
}

#[test]
fn inspect_never_claims_validity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keygen"]);
    let token = ok(d, &["sign", "--purpose", "p", "--now", "1767225600", "hi"]);
    let out = ok(d, &["inspect", token.trim()]);
    assert!(
        out.contains("2026-01-01T00:00:00Z") && out.contains("2026-01-01T00:30:00Z"),
        "{out}"
    );
    assert!(out.contains("verified:    NO"), "{out}");
    assert!(out.contains("payload:     hi"), "{out}");
}

#[test]
fn help_explains_each_command() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        "keygen", "rotate", "sign", "open", "inspect", "import", "hmac",
    ] {
        let out = ok(dir.path(), &[cmd, "--help"]);
        assert!(out.len() > 200, "{cmd} --help is too thin: {out}");
    }
}

/// `cloakroom import` on cookies made by the real Django and Rails packages
/// (crates/cloakroom-testdata/data/interop-vectors.json).
#[test]
fn import_opens_real_framework_cookies() {
    let v = cloakroom_testdata::interop_vectors();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write_secret = |name: &str, secret: &str| {
        use std::io::Write as _;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(d.join(name))
            .unwrap()
            .write_all(format!("{secret}\n").as_bytes())
            .unwrap();
    };

    let dj = &v["django_signed_cookies_session"];
    write_secret("django.secret", dj["secret_key"].as_str().unwrap());
    let cookie = dj["cookie"].as_str().unwrap();
    let now = dj["timestamp"].as_u64().unwrap().to_string();
    let now = now.as_str();
    let out = ok(
        d,
        &[
            "import",
            "--from",
            "django",
            "--secret-file",
            "django.secret",
            "--now",
            now,
            cookie,
        ],
    );
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(dj["serialized_json"].as_str().unwrap()).unwrap();
    assert_eq!(got["data"], want, "{out}");
    assert_eq!(got["framework"], "django");
    // Past Django's default two-week max age: expired.
    let late = (now.parse::<u64>().unwrap() + 1_209_601).to_string();
    let o = cloakroom(
        d,
        &[
            "import",
            "--from",
            "django",
            "--secret-file",
            "django.secret",
            "--now",
            &late,
            cookie,
        ],
    );
    assert_eq!((o.status.code(), stderr(&o).trim()), (Some(1), "expired"));
    // The wrong framework's secret: invalid.
    let o = cloakroom(
        d,
        &[
            "import",
            "--from",
            "flask",
            "--secret-file",
            "django.secret",
            cookie,
        ],
    );
    assert_eq!((o.status.code(), stderr(&o).trim()), (Some(1), "invalid"));

    let rails = &v["rails_7_2_encrypted_cookie"];
    write_secret("rails.secret", rails["secret_key_base"].as_str().unwrap());
    let out = ok(
        d,
        &[
            "import",
            "--from",
            "rails",
            "--secret-file",
            "rails.secret",
            "--cookie-name",
            rails["cookie_name"].as_str().unwrap(),
            rails["cookie"].as_str().unwrap(),
        ],
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
        let o = cloakroom(
            d,
            &[
                "import",
                "--from",
                "rails",
                "--secret-file",
                "rails.secret",
                "x",
            ],
        );
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
    let write_secret = |name: &str, secret: &str| {
        use std::io::Write as _;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(d.join(name))
            .unwrap()
            .write_all(format!("{secret}\n").as_bytes())
            .unwrap();
    };
    let help = ok(d, &["import", "--help"]);
    assert!(
        help.contains("--store") && help.contains("sqlite:PATH") && help.contains("--user-field"),
        "{help}"
    );
    ok(d, &["keygen", "--out", "ring.toml"]);
    let db = d.join("sessions.db");
    let store = format!("sqlite:{}", db.display());

    let dj = &v["django_signed_cookies_session"];
    write_secret("django.secret", dj["secret_key"].as_str().unwrap());
    let dj_cookie = dj["cookie"].as_str().unwrap();
    let dj_now = dj["timestamp"].as_u64().unwrap().to_string();
    let django = |extra: &[&str]| {
        let mut args = vec![
            "import",
            "--from",
            "django",
            "--secret-file",
            "django.secret",
            "--now",
            &dj_now,
            "--store",
            &store,
            "--keys",
            "ring.toml",
        ];
        args.extend_from_slice(extra);
        args.push(dj_cookie);
        cloakroom(d, &args)
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
    write_secret("flask.secret", fl["secret_key"].as_str().unwrap());
    let fl_now = (fl["timestamp"].as_u64().unwrap() + 60).to_string();
    let out = ok(
        d,
        &[
            "import",
            "--from",
            "flask",
            "--secret-file",
            "flask.secret",
            "--now",
            &fl_now,
            "--store",
            &format!("sqlite://{}", db.display()),
            "--keys",
            "ring.toml",
            "--cloakroom-cookie-name",
            "app-session",
            fl["vectors"][0]["cookie"].as_str().unwrap(),
        ],
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
    let o = cloakroom(
        d,
        &[
            "import",
            "--from",
            "django",
            "--secret-file",
            "django.secret",
            "--now",
            &late,
            "--store",
            &store,
            "--keys",
            "ring.toml",
            "--user-field",
            "_auth_user_id",
            dj_cookie,
        ],
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
        let o = cloakroom(
            d,
            &[
                "import",
                "--from",
                "django",
                "--secret-file",
                "django.secret",
                "--now",
                &dj_now,
                "--store",
                bad_store,
                "--keys",
                keys,
                "--user-field",
                "_auth_user_id",
                dj_cookie,
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{bad_store}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{bad_store}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
}
