//! The operator commands (`sessions`, `users revoke`, `stats`, `purge`), run as a user runs
//! them, against a SQLite file, the shared Redis server and a real cloakroomd.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{cloakroom, command, json, ok, stderr, stdout};

/// The Redis database these tests own (the other tests use database 0): they create and
/// purge sessions there and never flush it.
const REDIS_URL: &str = "redis://127.0.0.1:6379/14";

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

fn fill(dir: &Path, store: &str, count: u64, user: Option<&str>, expired: bool) {
    let count = count.to_string();
    let mut args = vec![
        "dev", "fill", "--store", store, "--count", &count, "--label", "laptop",
    ];
    if let Some(user) = user {
        args.extend(["--user", user]);
    }
    if expired {
        args.push("--expired");
    }
    ok(dir, &args);
}

fn ids_of(dir: &Path, store: &str, user: &str) -> Vec<String> {
    let list = json(
        dir,
        &[
            "sessions", "list", "--user", user, "--store", store, "--json",
        ],
    );
    list.as_array()
        .expect("an array")
        .iter()
        .map(|s| s["id_hash"].as_str().unwrap().to_owned())
        .collect()
}

/// Every operator command on one store: the table's columns, the JSON shapes, prefixes
/// (unique, ambiguous, absent, malformed), ending one session, revoking a user with and
/// without an exception, stats and purge counts.
fn operator_commands(dir: &Path, store: &str) {
    let user = unique("alice");
    fill(dir, store, 3, Some(&user), false);
    fill(dir, store, 4, Some(&user), true);

    // The table: a header with the six columns in order, one row per live session.
    let table = ok(
        dir,
        &["sessions", "list", "--user", &user, "--store", store],
    );
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "CREATED",
            "LAST SEEN",
            "EXPIRES",
            "DEVICE",
            "USER AGENT"
        ],
        "{table}"
    );
    assert_eq!(
        lines.len(),
        4,
        "3 live sessions, the expired ones not listed:\n{table}"
    );
    for row in &lines[1..] {
        let id = row.split_whitespace().next().unwrap();
        assert!(
            id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{row}"
        );
        assert!(
            row.contains("laptop") && row.contains("cloakroom dev fill"),
            "{row}"
        );
        // The columns line up: each starts where its header starts.
        let at = lines[0].find("DEVICE").unwrap();
        assert_eq!(&row[at..at + 6], "laptop", "{table}");
    }
    assert!(!table.contains('\x1b'), "no colour off a terminal");

    // JSON: an array of objects with exactly these keys.
    let list = json(
        dir,
        &[
            "sessions", "list", "--user", &user, "--store", store, "--json",
        ],
    );
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for s in list {
        let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "absolute_deadline",
                "created",
                "device_label",
                "expires",
                "id_hash",
                "idle_deadline",
                "ip",
                "last_seen",
                "user_agent",
                "user_id"
            ]
        );
        assert_eq!(s["user_id"], user.as_str());
        assert_eq!(s["device_label"], "laptop");
        assert!(s["expires"].as_u64().unwrap() > s["created"].as_u64().unwrap());
    }
    let ids = ids_of(dir, store, &user);
    let (first, second, third) = (&ids[0], &ids[1], &ids[2]);

    // show: by a 12-digit prefix (as the table prints it), in upper case too.
    let shown = ok(dir, &["sessions", "show", &first[..12], "--store", store]);
    assert!(
        shown.contains(first.as_str()) && shown.contains(&user),
        "{shown}"
    );
    let shown = json(
        dir,
        &[
            "sessions",
            "show",
            &first[..12].to_uppercase(),
            "--store",
            store,
            "--json",
        ],
    );
    assert_eq!(shown["id_hash"], first.as_str());
    assert_eq!(shown["version"], 1);
    assert!(shown["data_keys"].as_array().unwrap().is_empty());

    // An ambiguous prefix is refused (exit 2), listing the sessions it matches.
    let crowd = unique("crowd");
    fill(dir, store, 40, Some(&crowd), false);
    let crowd_ids = ids_of(dir, store, &crowd);
    let (a, b) = crowd_ids
        .iter()
        .enumerate()
        .find_map(|(i, x)| {
            crowd_ids[i + 1..]
                .iter()
                .find(|y| y[..1] == x[..1])
                .map(|y| (x.clone(), y.clone()))
        })
        .expect("40 ids share a first digit somewhere");
    for verb in ["show", "end"] {
        let o = cloakroom(dir, &["sessions", verb, &a[..1], "--store", store]);
        assert_eq!(o.status.code(), Some(2), "{verb}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("ambiguous") && e.contains(&a) && e.contains(&b),
            "{e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    }
    assert_eq!(ids_of(dir, store, &crowd).len(), 40, "nothing ended");

    // No match: exit 1. A malformed prefix: exit 2.
    let absent = "f".repeat(64);
    let o = cloakroom(dir, &["sessions", "show", &absent, "--store", store]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no live session"), "{}", stderr(&o));
    for bad in ["xyz", "", &"a".repeat(65)] {
        let o = cloakroom(dir, &["sessions", "end", bad, "--store", store]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("hex"), "{}", stderr(&o));
    }

    // end: one session goes, the others stay.
    let ended = ok(dir, &["sessions", "end", &second[..12], "--store", store]);
    assert!(ended.contains(second.as_str()), "{ended}");
    let left = ids_of(dir, store, &user);
    assert_eq!(left.len(), 2);
    assert!(!left.contains(second));

    // users revoke --except: every other session of the user ends, the kept one stays.
    let o = ok(
        dir,
        &[
            "users",
            "revoke",
            &user,
            "--except",
            &third[..12],
            "--store",
            store,
        ],
    );
    assert!(o.starts_with("ended "), "{o}");
    let n: u64 = o.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        n >= 1,
        "the live one at least (expired ones may count too): {o}"
    );
    assert_eq!(ids_of(dir, store, &user), vec![third.clone()]);
    // --except must name a session of that user.
    let o = cloakroom(
        dir,
        &["users", "revoke", &user, "--except", &a, "--store", store],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not of"), "{}", stderr(&o));
    // users revoke: all of them, with the epoch bumped.
    let o = ok(dir, &["users", "revoke", &user, "--store", store]);
    assert!(
        o.starts_with("ended 1 session(s)") && o.contains("epoch now 1"),
        "{o}"
    );
    assert!(ids_of(dir, store, &user).is_empty());
    let o = ok(dir, &["users", "revoke", &crowd, "--store", store]);
    assert!(o.starts_with("ended 40 session(s)"), "{o}");

    // stats and purge: the counts agree with what was filled.
    let before = json(dir, &["stats", "--store", store, "--json"]);
    let doomed = unique("doomed");
    fill(dir, store, 1000, Some(&doomed), true);
    let keeper = unique("keeper");
    fill(dir, store, 5, Some(&keeper), false);
    let mid = json(dir, &["stats", "--store", store, "--json"]);
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(n(&mid, "live"), n(&before, "live") + 5, "{mid}");
    assert_eq!(
        n(&mid, "expired_not_purged"),
        n(&before, "expired_not_purged") + 1000,
        "{mid}"
    );
    assert!(mid["bytes"].as_u64().unwrap() > 0, "{mid}");
    let purged = json(
        dir,
        &["purge", "--store", store, "--batch", "128", "--json"],
    );
    assert_eq!(purged["purged"], n(&mid, "expired_not_purged"), "{purged}");
    assert_eq!(purged["interrupted"], false);
    let after = json(dir, &["stats", "--store", store, "--json"]);
    assert_eq!(n(&after, "expired_not_purged"), 0, "{after}");
    assert_eq!(n(&after, "live"), n(&mid, "live"), "{after}");
    assert_eq!(ids_of(dir, store, &keeper).len(), 5);
    // A purge with nothing to do says so.
    let again = ok(dir, &["purge", "--store", store]);
    assert!(again.starts_with("purged 0 expired sessions"), "{again}");
    ok(dir, &["users", "revoke", &keeper, "--store", store]);
}

#[test]
fn operator_commands_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("sessions.db").display());
    // The store must exist: an operator command never creates an empty one.
    let o = cloakroom(dir.path(), &["stats", "--store", &store]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    fill(dir.path(), &store, 1, None, false);
    operator_commands(dir.path(), &store);
}

#[test]
fn operator_commands_on_redis() {
    let dir = tempfile::tempdir().unwrap();
    let o = cloakroom(dir.path(), &["stats", "--store", REDIS_URL]);
    assert!(
        o.status.success(),
        "Redis must run on 127.0.0.1:6379 (scripts/setup.d/40-redis.sh starts it): {}",
        stderr(&o)
    );
    operator_commands(dir.path(), REDIS_URL);
}

/// The default store is the daemon's default file, and CLOAKROOM_STORE names another.
#[test]
fn the_store_comes_from_the_flag_the_environment_or_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = cloakroom(d, &["stats"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("./cloakroom-data/sessions.db"),
        "{}",
        stderr(&o)
    );
    std::fs::create_dir(d.join("cloakroom-data")).unwrap();
    fill(
        d,
        "sqlite://./cloakroom-data/sessions.db",
        2,
        Some("dana"),
        false,
    );
    assert_eq!(json(d, &["stats", "--json"])["live"], 2);
    let o = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .args(["stats", "--json"])
        .current_dir(d)
        .env("CLOAKROOM_STORE", "sqlite://elsewhere.db")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("elsewhere.db"), "{}", stderr(&o));
}

/// An unknown scheme, an unreachable server, a daemon that is not there: one line naming
/// what failed, exit 2, for every command.
#[test]
fn bad_or_unreachable_stores_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sock = format!("cloakroomd+ipc://{}", d.join("none.sock").display());
    for (store, says) in [
        (
            "mysql://root:hunter2@db/s",
            "unknown store URL scheme `mysql:`",
        ),
        (
            "redis://127.0.0.1:1",
            "cannot open the store redis://127.0.0.1:1",
        ),
        (
            "postgres://nobody@127.0.0.1:1/x",
            "cannot open the store postgres://127.0.0.1:1/x",
        ),
        (sock.as_str(), "cannot open the store cloakroomd+ipc://"),
    ] {
        for args in [
            vec!["stats"],
            vec!["purge"],
            vec!["sessions", "list", "--user", "u"],
            vec!["sessions", "show", "ab"],
            vec!["users", "revoke", "u"],
        ] {
            let mut args = args.clone();
            args.extend(["--store", store]);
            let o = cloakroom(d, &args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            let e = stderr(&o);
            assert!(e.contains(says), "{args:?}: {e}");
            assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
            assert!(stdout(&o).is_empty());
        }
    }
}

/// memcached cannot list its sessions: the commands that need a list say so (exit 2).
#[test]
fn memcached_says_it_cannot_list() {
    let dir = tempfile::tempdir().unwrap();
    let o = cloakroom(
        dir.path(),
        &["stats", "--store", "memcache://127.0.0.1:11211"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("cannot list its records"),
        "memcached must run on 127.0.0.1:11211 (scripts/setup.d/42-memcached.sh): {e}"
    );
}

/// Ctrl-C during a large purge: the batch in flight finishes, the command reports what it
/// removed and exits 130, and the store is consistent: exactly that many are gone, the live
/// sessions are untouched, and a second purge removes exactly the rest.
#[test]
fn sigint_stops_a_large_purge_after_the_current_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("big.db");
    let store = format!("sqlite://{}", db.display());
    const EXPIRED: u64 = 200_000;
    fill(d, &store, EXPIRED, Some("expired-user"), true);
    fill(d, &store, 7, Some("live-user"), false);

    let mut child: Child = command(d, &["purge", "--store", &store, "--batch", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line on stderr comes once Ctrl-C is caught.
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert!(
        line.contains("Ctrl-C stops after the current batch"),
        "{line}"
    );
    assert!(line.contains(&format!("{EXPIRED} to go")), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it stopped promptly"
    );
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let said = stdout(&o);
    assert!(said.starts_with("interrupted: purged "), "{said}");
    let purged: u64 = said.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(purged < EXPIRED, "stopped before the end: {said}");
    assert_eq!(purged % 500, 0, "whole batches only: {said}");

    let st = json(d, &["stats", "--store", &store, "--json"]);
    assert_eq!(st["expired_not_purged"], EXPIRED - purged, "{st}");
    assert_eq!(st["live"], 7, "{st}");
    let rest = json(d, &["purge", "--store", &store, "--json"]);
    assert_eq!(rest["purged"], EXPIRED - purged);
    assert_eq!(ids_of(d, &store, "live-user").len(), 7);
}

/// Where the daemon binary is: beside this package's binary (the workspace's target dir).
fn cloakroomd_binary() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_BIN_EXE_cloakroom"));
    let path = here.with_file_name("cloakroomd");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p cloakroomd)",
        path.display()
    );
    path
}

/// The same commands through a real cloakroomd (its default SQLite store), by
/// `cloakroomd+ipc://`.
#[test]
fn operator_commands_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    let mut daemon = Command::new(cloakroomd_binary())
        .arg("--data-dir")
        .arg(&data)
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sock = data.join("cloakroomd.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "cloakroomd did not start");
        if let Some(status) = daemon.try_wait().unwrap() {
            let mut e = String::new();
            std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut e).unwrap();
            panic!("cloakroomd exited ({status}): {e}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = format!("cloakroomd+ipc://{}", sock.display());
    operator_commands(d, &store);
    let _ = daemon.kill();
    let _ = daemon.wait();
}
