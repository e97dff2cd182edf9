//! Keys and tokens: keygen, rotate, sign, open, inspect, hmac, completions and the man page.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{cloakroom, ok, stderr, stdout};

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
