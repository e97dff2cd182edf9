//! The integration tests of cloakroom-stores: the conformance suite against every store, and
//! each store's faults. One module per store.

mod common;

// ---------------------------------------------------------------------------------------
// Single machine (issue 4): the file and SQLite stores.
// ---------------------------------------------------------------------------------------

/// Shared by `file_store` and `sqlite_store`: the conformance suite on files, and a writer
/// process killed with SIGKILL in the middle of its writes, then a load.
#[cfg(any(feature = "file", feature = "sqlite"))]
mod single_machine {
    use std::future::Future;
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use cloakroom::conformance::ConformanceTarget;
    use cloakroom::{IdHash, Policy, Record, SessionId, Store, Value};

    pub(crate) const T0: u64 = 1_700_000_000;
    const CHILD_ENV: &str = "CLOAKROOM_STORES_CRASH_CHILD";
    const PATH_ENV: &str = "CLOAKROOM_STORES_CRASH_PATH";
    const ID_ENV: &str = "CLOAKROOM_STORES_CRASH_ID";

    /// The blob size written at `version`: 1 to 61 KiB, different for neighbours, so a torn
    /// write would show as a size that does not match the version.
    fn blob_len(version: u64) -> usize {
        1024 + usize::try_from(version.wrapping_mul(7919) % (60 * 1024)).unwrap()
    }

    /// The record content the writer stores at `version`.
    fn fill(record: &mut Record, version: u64) {
        record.data.insert("n".into(), Value::from(version));
        record.data.insert(
            "blob".into(),
            Value::Binary(vec![(version % 251) as u8; blob_len(version)]),
        );
    }

    pub(crate) fn first_record() -> Record {
        let mut r = Record::new(
            SessionId::generate().unwrap().hash(),
            T0,
            &Policy::default(),
        );
        r.user_id = Some("crash-test".into());
        fill(&mut r, 1);
        r
    }

    /// Updates the record `iterations` times, reporting each acknowledged version.
    pub(crate) async fn write_loop<S: Store>(
        store: &S,
        id: IdHash,
        iterations: u64,
        mut ack: impl FnMut(u64),
    ) {
        for _ in 0..iterations {
            let mut r = store.load(&id, T0).await.unwrap().expect("record present");
            let next = r.version + 1;
            fill(&mut r, next);
            let v = store.update(&r, T0).await.unwrap();
            assert_eq!(v, next);
            ack(v);
        }
    }

    /// The record read back is whole: its data is exactly what was written at its version,
    /// and that version is the last acknowledged one or the one in flight.
    pub(crate) fn check_whole(r: &Record, last_acked: u64) {
        let n = r.data.get("n").and_then(Value::as_u64);
        assert_eq!(
            n,
            Some(r.version),
            "data of another version than the record's"
        );
        let Some(Value::Binary(blob)) = r.data.get("blob") else {
            panic!("blob missing from {r:?}");
        };
        assert_eq!(blob.len(), blob_len(r.version), "torn blob");
        assert!(
            blob.iter().all(|b| u64::from(*b) == r.version % 251),
            "torn blob"
        );
        assert!(
            r.version == last_acked || r.version == last_acked + 1,
            "version {} after the last acknowledged {last_acked}: an acknowledged write was lost",
            r.version
        );
    }

    /// In the child (the env says which store and where): open the store and write until
    /// killed, printing `acked N` after each acknowledged write. Returns `false` when not
    /// in a child.
    pub(crate) fn child_main<S, F, Fut>(open: F) -> bool
    where
        S: Store,
        F: FnOnce(std::path::PathBuf) -> Fut,
        Fut: std::future::Future<Output = S>,
    {
        let (Ok(path), Ok(id)) = (std::env::var(PATH_ENV), std::env::var(ID_ENV)) else {
            return false;
        };
        if std::env::var(CHILD_ENV).is_err() {
            return false;
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = open(path.into()).await;
            let id = IdHash::from_hex(&id).unwrap();
            // Bounded: the parent kills us long before this ends.
            write_loop(&store, id, 100_000, |v| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "acked {v}").unwrap();
                out.flush().unwrap();
            })
            .await;
        });
        true
    }

    /// In the parent: runs `test` (this binary's test that calls [`child_main`]) as a child
    /// writing to `path`, kills it with SIGKILL once it acknowledged version `acks`, plus
    /// `extra_us` microseconds (so the kill lands at varied points of a write), and returns
    /// the last version it acknowledged.
    pub(crate) fn run_and_kill(
        test: &str,
        path: &std::path::Path,
        id: &IdHash,
        acks: u64,
        extra_us: u64,
    ) -> u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, "1")
            .env(PATH_ENV, path)
            .env(ID_ENV, id.to_hex())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut last = 0;
        let mut lines = stdout.lines();
        while last < acks {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(v) = line.strip_prefix("acked ") {
                        last = v.trim().parse().unwrap();
                    }
                }
                _ => {
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "the writer child ended early ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_micros(extra_us));
        child.kill().unwrap(); // SIGKILL on Unix
                               // What it printed before it died: acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("acked ") {
                last = last.max(v.trim().parse().unwrap());
            }
        }
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the child was killed, not finished: {status}"
        );
        last
    }

    /// The writer run briefly in process on a store of its own (a file `file_name` in a new
    /// directory, opened by `open`): every record it wrote is whole, and all 20 writes were
    /// acknowledged.
    pub(crate) fn write_in_process<S, F, Fut>(file_name: &str, open: F)
    where
        S: Store,
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = S>,
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path().join(file_name)).await;
            let r = first_record();
            store.create(&r, r.last_seen).await.unwrap();
            let mut acked = 1;
            write_loop(&store, r.id_hash, 20, |v| acked = v).await;
            check_whole(&store.load(&r.id_hash, T0).await.unwrap().unwrap(), acked);
            assert_eq!(acked, 21);
        });
    }

    /// Ten rounds of `test` (this binary's writer child, see [`child_main`]) on a store of
    /// its own (a file `file_name` in a new directory, opened by `open`), killed at varied
    /// points of a write: each time the record read back is whole and no acknowledged write
    /// is lost.
    pub(crate) fn killed_writer_rounds<S, F, Fut>(test: &str, file_name: &str, open: F)
    where
        S: Store,
        F: Fn(PathBuf) -> Fut,
        Fut: Future<Output = S>,
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name);
        let r = first_record();
        rt.block_on(async {
            open(path.clone())
                .await
                .create(&r, r.last_seen)
                .await
                .unwrap();
        });
        let mut after = 0;
        for (round, extra_us) in [0u64, 150, 400, 900, 1300, 2100, 3300, 5000, 7700, 11000]
            .into_iter()
            .enumerate()
        {
            let acked = run_and_kill(test, &path, &r.id_hash, after + 3 + round as u64, extra_us);
            let back = rt.block_on(async {
                let store = open(path.clone()).await;
                store
                    .load(&r.id_hash, T0)
                    .await
                    .unwrap()
                    .expect("record survived")
            });
            check_whole(&back, acked);
            after = back.version;
        }
    }

    /// The conformance suite, each case on a file of its own (`<stem><n><extension>` in one
    /// new directory) that `target` opens.
    pub(crate) async fn conformance_on_files<F, Fut, T>(stem: &str, extension: &str, target: F)
    where
        F: Fn(PathBuf) -> Fut,
        Fut: Future<Output = T>,
        T: ConformanceTarget,
    {
        let dir = tempfile::tempdir().unwrap();
        crate::common::conformance_each(
            |n| dir.path().join(format!("{stem}{n}{extension}")),
            target,
        )
        .await;
    }

    /// The crash tests of one store, in the module that calls it: `crash_child` (`module`
    /// is that module's path, for the child's test filter) and
    /// `killed_writer_leaves_the_old_or_the_new_record`, on a file `file_name` that `open`
    /// opens.
    macro_rules! crash_tests {
        ($module:literal, $file_name:literal, $open:path) => {
            /// With the crash env set, this is the writer child of `killed_writer_*`;
            /// otherwise it runs the same writer briefly in process and checks every record
            /// it wrote.
            #[test]
            fn crash_child() {
                if $crate::single_machine::child_main($open) {
                    return;
                }
                $crate::single_machine::write_in_process($file_name, $open);
            }

            #[test]
            fn killed_writer_leaves_the_old_or_the_new_record() {
                $crate::single_machine::killed_writer_rounds(
                    concat!($module, "::crash_child"),
                    $file_name,
                    $open,
                );
            }
        };
    }
    pub(crate) use crash_tests;
}

#[cfg(feature = "file")]
mod file_store {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use cloakroom::conformance::Corruptible;
    use cloakroom::store::{Error, ErrorKind};
    use cloakroom::{IdHash, Policy, Record, SessionId, Store};
    use cloakroom_stores::FileStore;

    use crate::single_machine as sm;

    const T0: u64 = sm::T0;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        sm::conformance_on_files("store-", "", |path| async move {
            let store = FileStore::open(path).await.unwrap();
            let files = store.clone();
            Corruptible::new(store, move |id: IdHash| {
                let path = files.record_path(&id);
                async move {
                    std::fs::write(path, b"\x01not messagepack")
                        .map_err(|e| Error::unavailable("inject_corrupt", e))
                }
            })
        })
        .await;
    }

    #[tokio::test]
    async fn directory_0700_files_0600_named_by_id_hash() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/sessions");
        let store = FileStore::open(&root).await.unwrap();
        assert_eq!(mode(&root), 0o700);
        for sub in ["sessions", "users", "epochs", "locks"] {
            assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
        }
        let mut r = Record::new(
            SessionId::generate().unwrap().hash(),
            T0,
            &Policy::default(),
        );
        r.user_id = Some("mallory/../../etc".into());
        store.create(&r, r.last_seen).await.unwrap();
        store.bump_user_epoch("mallory/../../etc").await.unwrap();
        let file = root.join("sessions").join(r.id_hash.to_hex());
        assert_eq!(store.record_path(&r.id_hash), file);
        assert_eq!(mode(&file), 0o600);
        // Nothing but hex names anywhere: the user id never became a path.
        let mut names = Vec::new();
        for sub in ["sessions", "users", "epochs"] {
            for e in std::fs::read_dir(root.join(sub)).unwrap() {
                let e = e.unwrap();
                assert_eq!(mode(&e.path()) & 0o077, 0, "{:?}", e.path());
                names.push(e.file_name().into_string().unwrap());
            }
        }
        assert!(
            names
                .iter()
                .all(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())),
            "{names:?}"
        );
        // The record file holds Record::encode bytes (the atomic write left no temp file).
        assert_eq!(Record::decode(&std::fs::read(&file).unwrap()).unwrap(), r);
    }

    #[tokio::test]
    async fn refuses_an_unsafe_directory() {
        let dir = tempfile::tempdir().unwrap();
        let open_dir = dir.path().join("world-readable");
        std::fs::create_dir(&open_dir).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = FileStore::open(&open_dir).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("other users"), "{e}");

        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("link");
        symlink(&private, &link).unwrap();
        let e = FileStore::open(&link).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // The real directory is fine.
        FileStore::open(&private).await.unwrap();
    }

    /// Tests run as root here, and root ignores permission bits, so a `chmod 0500`
    /// directory would not stop a write. What does stop root: a path whose parent is a
    /// regular file (ENOTDIR), and a directory removed under a running store.
    #[tokio::test]
    async fn missing_or_unusable_directory_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("sessions");
        let e = FileStore::open(&under_file).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the OS error is kept as source"
        );

        // Removed under a live store: every operation fails closed, none panics, and a load
        // is not mistaken for "no such session".
        let root = dir.path().join("gone");
        let store = FileStore::open(&root).await.unwrap();
        let r = Record::new(
            SessionId::generate().unwrap().hash(),
            T0,
            &Policy::default(),
        );
        store.create(&r, r.last_seen).await.unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let kinds = [
            store
                .create(&r, r.last_seen)
                .await
                .map(|_| ())
                .unwrap_err()
                .kind(),
            store
                .load(&r.id_hash, T0)
                .await
                .map(|_| ())
                .unwrap_err()
                .kind(),
            store.update(&r, T0).await.map(|_| ()).unwrap_err().kind(),
            store
                .touch(&r.id_hash, T0, T0 + 1)
                .await
                .map(|_| ())
                .unwrap_err()
                .kind(),
            store
                .delete(&r.id_hash)
                .await
                .map(|_| ())
                .unwrap_err()
                .kind(),
            store
                .sessions_of("u", T0)
                .await
                .map(|_| ())
                .unwrap_err()
                .kind(),
            store.user_epoch("u").await.map(|_| ()).unwrap_err().kind(),
            store
                .bump_user_epoch("u")
                .await
                .map(|_| ())
                .unwrap_err()
                .kind(),
            store
                .purge_expired(T0, 10)
                .await
                .map(|_| ())
                .unwrap_err()
                .kind(),
        ];
        assert!(
            kinds.iter().all(|k| *k == ErrorKind::Unavailable),
            "{kinds:?}"
        );
    }

    #[tokio::test]
    async fn two_stores_on_one_directory_share_records_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path().join("s")).await.unwrap();
        let b = FileStore::open(dir.path().join("s")).await.unwrap();
        let r = Record::new(
            SessionId::generate().unwrap().hash(),
            T0,
            &Policy::default(),
        );
        a.create(&r, r.last_seen).await.unwrap();
        assert_eq!(
            b.create(&r, r.last_seen).await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
        assert_eq!(b.update(&r, T0).await.unwrap(), 2);
        assert_eq!(
            a.update(&r, T0).await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
        assert_eq!(a.load(&r.id_hash, T0).await.unwrap().unwrap().version, 2);
    }

    sm::crash_tests!("file_store", "s", open_for_crash);

    async fn open_for_crash(path: std::path::PathBuf) -> FileStore {
        FileStore::open(path).await.unwrap()
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_store {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use cloakroom::conformance::Corruptible;
    use cloakroom::store::ErrorKind;
    use cloakroom::{IdHash, Policy, Record, SessionId, Store};
    use cloakroom_stores::{SqliteOptions, SqliteStore, Synchronous, SQLITE_SCHEMA_VERSION};

    use crate::single_machine as sm;

    const T0: u64 = sm::T0;

    fn fresh() -> Record {
        Record::new(
            SessionId::generate().unwrap().hash(),
            T0,
            &Policy::default(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        sm::conformance_on_files("store-", ".db", |path| async move {
            let store = SqliteStore::open(&path).await.unwrap();
            Corruptible::new(store, move |id: IdHash| {
                crate::common::corrupt_sqlite_record(
                    path.clone(),
                    id,
                    "x'016e6f74206d73677061636b'",
                )
            })
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_with_synchronous_full() {
        sm::conformance_on_files("full-", ".db", |path| async move {
            let store = SqliteStore::open_with(
                SqliteOptions::new(&path).with_synchronous(Synchronous::Full),
            )
            .await
            .unwrap();
            Corruptible::new(store, move |id: IdHash| {
                crate::common::corrupt_sqlite_record(path.clone(), id, "x'00'")
            })
        })
        .await;
    }

    #[tokio::test]
    async fn schema_wal_indexes_and_file_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let r = fresh();
        store.create(&r, r.last_seen).await.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SQLITE_SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(names, ["sessions_by_expiry", "sessions_by_user"]);
        // The planner uses them.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE user_id = 'u' AND expires_at > 0",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("sessions_by_"), "{plan}");
        drop(stmt);
        drop(conn);
        drop(store);
        // Reopening is idempotent and keeps the data.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.load(&r.id_hash, T0).await.unwrap(), Some(r));
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(SqliteStore::open(&path).await.unwrap());
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        let e = SqliteStore::open(&path).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_unavailable() {
        // Fail closed: Corrupt would make the session layer treat every session as absent.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![0x5a; 16 * 1024]).unwrap();
        let e = SqliteStore::open(&path).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.to_string().contains("not a database"), "{e}");
        assert!(e.to_string().contains("garbage.db"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[tokio::test]
    async fn a_damaged_database_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.db");
        {
            let store = SqliteStore::open(&path).await.unwrap();
            for _ in 0..50 {
                store.create(&fresh(), T0).await.unwrap();
            }
        }
        // The last connection closed: the log is checkpointed into the file. Keep the
        // 100-byte header, overwrite everything after it.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 4096, "{}", bytes.len());
        for b in &mut bytes[100..] {
            *b = 0xa5;
        }
        std::fs::write(&path, bytes).unwrap();
        let e = match SqliteStore::open(&path).await {
            Err(e) => e,
            Ok(store) => store.load(&fresh().id_hash, T0).await.unwrap_err(),
        };
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }

    /// The file is damaged under an open store: its reads fail closed (Unavailable), while
    /// one record whose bytes do not decode stays Corrupt (the conformance suite's case).
    #[tokio::test]
    async fn a_database_damaged_under_an_open_store_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged-live.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let mut records = Vec::new();
        for _ in 0..200 {
            let r = fresh();
            store.create(&r, r.last_seen).await.unwrap();
            records.push(r);
        }
        // Move everything into the main file, then damage its pages (keep the header).
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 8192, "{}", bytes.len());
        for b in &mut bytes[4096..] {
            *b = 0xa5;
        }
        std::fs::write(&path, bytes).unwrap();
        let mut kinds = Vec::new();
        for r in &records {
            match store.load(&r.id_hash, T0).await {
                Ok(_) => {}
                Err(e) => kinds.push(e.kind()),
            }
        }
        assert!(!kinds.is_empty(), "no read noticed the damage");
        assert!(
            kinds.iter().all(|k| *k == ErrorKind::Unavailable),
            "{kinds:?}"
        );
    }

    #[tokio::test]
    async fn missing_directory_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let e = SqliteStore::open(file.join("s.db")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("s.db"), "{e}");
        let e = SqliteStore::open(dir.path().join("no/such/dir/s.db"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[tokio::test]
    async fn a_locked_database_is_unavailable_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open_with(
            SqliteOptions::new(&path).with_busy_timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap();
        let r = fresh();
        store.create(&r, r.last_seen).await.unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute_batch("BEGIN EXCLUSIVE; DELETE FROM user_epochs;")
            .unwrap();
        let e = store.create(&fresh(), T0).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("locked"), "{e}");
        let e = store.update(&r, T0).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        // WAL: readers are not blocked by the writer.
        assert!(store.load(&r.id_hash, T0).await.unwrap().is_some());
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(store.update(&r, T0).await.unwrap(), 2);
    }

    sm::crash_tests!("sqlite_store", "s.db", open_for_crash);

    async fn open_for_crash(path: std::path::PathBuf) -> SqliteStore {
        SqliteStore::open(path).await.unwrap()
    }

    /// The background purger against a real SQLite file: expired rows leave the table with
    /// no request and no `cloakroom purge`, live ones stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_background_purger_deletes_expired_rows() {
        use cloakroom::{ManualClock, PurgeConfig, Purger};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = std::sync::Arc::new(SqliteStore::open(&path).await.unwrap());
        for i in 0..250 {
            let mut r = fresh();
            if i % 50 == 0 {
                r.idle_deadline = T0 + 86_400;
                r.absolute_deadline = T0 + 86_400;
            }
            store.create(&r, r.last_seen).await.unwrap();
        }
        let rows = || -> i64 {
            rusqlite::Connection::open(&path)
                .unwrap()
                .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(rows(), 250);
        let clock = ManualClock::new(T0 + 31 * 60);
        let config = PurgeConfig::new(Duration::from_millis(50), 100).unwrap();
        let purger = Purger::spawn(store.clone(), std::sync::Arc::new(clock), config).unwrap();
        let start = std::time::Instant::now();
        while rows() != 5 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "rows left: {}",
                rows()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = purger.stats();
        assert_eq!((stats.purged, stats.failures), (245, 0));
        purger.shutdown().await;
        assert_eq!(rows(), 5, "the live sessions stay");
    }
}

// ---------------------------------------------------------------------------------------
// Many machines (issue 6): the Redis, PostgreSQL and memcached stores, on real servers.
// ---------------------------------------------------------------------------------------

/// Shared by `redis_store`, `postgres_store` and `memcached_store`: throwaway servers on free
/// ports, and the checks every store's fault tests make.
#[cfg(any(feature = "redis", feature = "postgres", feature = "memcached"))]
mod many_machines {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use cloakroom::store::{Error, ErrorKind};
    use cloakroom::{Changes, Record, Store, Value};

    pub(crate) use crate::common::{assert_kind, free_port, record, unique, T0};
    #[cfg(any(feature = "redis", feature = "memcached"))]
    pub(crate) use crate::common::{signal, Child};

    /// The bound within which a store whose server is gone must answer (timeouts of 300 ms
    /// are configured; this is a hang check, not a speed test).
    pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(10);

    async fn unavailable<T: std::fmt::Debug>(
        what: &str,
        fut: impl Future<Output = Result<T, Error>>,
    ) {
        let started = Instant::now();
        let result = tokio::time::timeout(ANSWER_WITHIN, fut)
            .await
            .unwrap_or_else(|_| panic!("{what} hung with the server down"));
        match result {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{what}: {e}");
                assert!(std::error::Error::source(&e).is_some(), "{what}: no source");
            }
            Ok(v) => panic!("{what} succeeded with the server down: {v:?}"),
        }
        assert!(started.elapsed() < ANSWER_WITHIN, "{what} took too long");
    }

    /// Every operation of `store` answers Unavailable within [`ANSWER_WITHIN`].
    pub(crate) async fn all_unavailable<S: Store>(store: &S, known: &Record) {
        let fresh = record("down");
        unavailable("create", store.create(&fresh, fresh.last_seen)).await;
        unavailable("load", store.load(&known.id_hash, T0)).await;
        unavailable("update", store.update(known, T0)).await;
        unavailable("touch", store.touch(&known.id_hash, T0, T0 + 60)).await;
        let mut changes = Changes::new();
        changes.set("k", Value::from(1));
        unavailable("apply", store.apply(&known.id_hash, &changes, T0, T0 + 60)).await;
        unavailable("delete", store.delete(&known.id_hash)).await;
        unavailable("sessions_of", store.sessions_of("down", T0)).await;
        unavailable("revoke", store.revoke_user_sessions("down", None)).await;
        unavailable("user_epoch", store.user_epoch("down")).await;
        unavailable("bump", store.bump_user_epoch("down")).await;
        unavailable("purge", store.purge_expired(T0, 10)).await;
    }

    /// After the server came back, the same store works again (within 20 s of retrying),
    /// then every operation succeeds.
    pub(crate) async fn recovers<S: Store>(store: &S) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let r = record("back");
        loop {
            match store.create(&r, r.last_seen).await {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Conflict => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the store did not recover after the server came back: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let back = store
            .load(&r.id_hash, T0)
            .await
            .unwrap()
            .expect("record after recovery");
        assert_eq!(store.update(&back, T0).await.unwrap(), back.version + 1);
        let mut changes = Changes::new();
        changes.set("k", Value::from(1));
        let applied = store
            .apply(&r.id_hash, &changes, T0, T0 + 60)
            .await
            .unwrap();
        assert_eq!(applied.version, back.version + 2);
        store.touch(&r.id_hash, T0 + 1, T0 + 100).await.unwrap();
        assert_eq!(store.sessions_of("back", T0 + 2).await.unwrap().len(), 1);
        let epoch = store.user_epoch("back").await.unwrap();
        assert_eq!(store.bump_user_epoch("back").await.unwrap(), epoch + 1);
        store.purge_expired(T0, 10).await.unwrap();
        assert_eq!(store.revoke_user_sessions("back", None).await.unwrap(), 1);
        assert!(!store.delete(&r.id_hash).await.unwrap());
    }

    /// `server` (which `store` uses) is killed under a store that holds a record: every
    /// operation is Unavailable, twice; `restart` starts it again, and the same store
    /// recovers.
    #[cfg(any(feature = "redis", feature = "memcached"))]
    pub(crate) async fn killed_then_restarted<S: Store>(
        store: &S,
        mut server: Child,
        restart: impl FnOnce() -> Child,
    ) {
        let r = record("down");
        store.create(&r, r.last_seen).await.unwrap();
        server.kill();
        all_unavailable(store, &r).await;
        // Twice: a store that failed many times still answers within the bound.
        all_unavailable(store, &r).await;
        let _server = restart();
        recovers(store).await;
    }

    /// `server` (which `store` uses) is frozen (SIGSTOP: connections stay open but nothing
    /// answers; only the timeouts save us) under a store that holds a record, which is
    /// returned; see [`thawed`].
    #[cfg(any(feature = "redis", feature = "memcached"))]
    pub(crate) async fn frozen<S: Store>(store: &S, server: &Child) -> Record {
        let r = record("down");
        store.create(&r, r.last_seen).await.unwrap();
        signal(server, "STOP");
        r
    }

    /// With `server` [`frozen`]: every operation is Unavailable (`known` is the record they
    /// name); then the server is thawed and the same store recovers.
    #[cfg(any(feature = "redis", feature = "memcached"))]
    pub(crate) async fn thawed<S: Store>(store: &S, server: &Child, known: &Record) {
        all_unavailable(store, known).await;
        signal(server, "CONT");
        recovers(store).await;
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use std::process::Command;
    use std::time::Duration;

    use cloakroom::conformance::Corruptible;
    use cloakroom::store::ErrorKind;
    use cloakroom::{IdHash, Record, Store};
    use cloakroom_stores::RedisStore;
    use redis::aio::MultiplexedConnection;

    use crate::many_machines::{self as mm, Child, T0};

    const START: &str = "scripts/test --setup-only (or: redis-server --daemonize yes --bind \
                         127.0.0.1 --port 6379 --save '' --appendonly no)";

    fn url() -> String {
        std::env::var("CLOAKROOM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    async fn store(url: &str, prefix: &str) -> RedisStore {
        RedisStore::builder(url)
            .with_prefix(prefix)
            .with_connect_timeout(Duration::from_millis(300))
            .with_command_timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("Redis is not reachable at {url} ({e}); start it: {START}"))
    }

    async fn raw(url: &str) -> MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis is not reachable at {url} ({e}); start it: {START}"))
    }

    async fn cmd(conn: &mut MultiplexedConnection, c: &mut redis::Cmd) {
        let _: redis::Value = c.query_async(conn).await.unwrap();
    }

    /// A store of the test's own on the shared server (under a new prefix), the prefix, and
    /// a raw connection to the server.
    async fn own_store() -> (RedisStore, String, MultiplexedConnection) {
        let url = url();
        let prefix = mm::unique("cloakroom-test:");
        let store = store(&url, &prefix).await;
        (store, prefix, raw(&url).await)
    }

    /// Deletes every key under `prefix` (the test's own) on the shared server.
    async fn cleanup(prefix: &str) {
        let mut conn = raw(&url()).await;
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            cmd(&mut conn, redis::cmd("DEL").arg(keys)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_on_the_shared_server() {
        let base = mm::unique("cloakroom-test:");
        let name = |n| format!("{base}:{n}:");
        crate::common::conformance_each(name, |prefix| async move {
            let store = store(&url(), &prefix).await;
            let conn = raw(&url()).await;
            let target = store.clone();
            Corruptible::new(store, move |id: IdHash| {
                crate::common::corrupt_redis_record(conn.clone(), target.record_key(&id))
            })
        })
        .await;
        cleanup(&base).await;
    }

    #[tokio::test]
    async fn records_expire_on_the_server_and_keys_are_tagged() {
        let (store, prefix, mut conn) = own_store().await;
        let r = mm::record("ttl user");
        store.create(&r, r.last_seen).await.unwrap();
        let key = store.record_key(&r.id_hash);
        assert_eq!(key, format!("{prefix}{{r:{}}}", r.id_hash.to_hex()));
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // Created at T0 with a 30 minute idle deadline: the key expires 30 minutes from now
        // on the server's clock.
        assert!((1_790_000..=1_800_000).contains(&ttl), "PTTL {ttl}");
        store
            .touch(&r.id_hash, T0 + 600, T0 + 600 + 60)
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((50_000..=60_000).contains(&ttl), "PTTL after touch {ttl}");
        // One user's index and epoch share a hash tag, hence a cluster slot.
        store.bump_user_epoch("ttl user").await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}{{u:ttl user}}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys.len(), 2, "{keys:?}");
        cleanup(&prefix).await;
    }

    /// Writes `r` (version 1, with a user) under `key` as a store before `apply` did: the
    /// whole record (data included) in the field `d`, for an hour.
    async fn write_older_layout(conn: &mut MultiplexedConnection, key: &str, r: &Record) {
        let user = format!("+{}", r.user_id.as_deref().unwrap());
        cmd(
            conn,
            redis::cmd("HSET")
                .arg(key)
                .arg("d")
                .arg(r.encode().unwrap())
                .arg("v")
                .arg(1)
                .arg("u")
                .arg(user)
                .arg("l")
                .arg(r.last_seen)
                .arg("i")
                .arg(r.idle_deadline)
                .arg("a")
                .arg(r.absolute_deadline)
                .arg("e")
                .arg(r.expires_at()),
        )
        .await;
        cmd(conn, redis::cmd("EXPIRE").arg(key).arg(3600)).await;
    }

    #[tokio::test]
    async fn a_record_of_the_older_layout_is_converted_by_its_first_apply() {
        // Before `apply`, the whole record (data included) lived in the field `d`.
        let (store, prefix, mut conn) = own_store().await;
        let mut r = mm::record("legacy");
        r.data.insert("a".into(), cloakroom::Value::from(1));
        r.data.insert("b".into(), cloakroom::Value::from("two"));
        let key = store.record_key(&r.id_hash);
        write_older_layout(&mut conn, &key, &r).await;
        assert_eq!(store.load(&r.id_hash, T0).await.unwrap(), Some(r.clone()));
        let mut changes = cloakroom::Changes::new();
        changes.set("c", cloakroom::Value::from(3)).remove("a");
        let applied = store
            .apply(&r.id_hash, &changes, T0 + 5, T0 + 5 + 1800)
            .await
            .unwrap();
        assert_eq!(applied.version, 2);
        let layout: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("f")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            layout.as_deref(),
            Some("2"),
            "converted to the field layout"
        );
        let back = store.load(&r.id_hash, T0 + 6).await.unwrap().unwrap();
        let keys: Vec<&str> = back.data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(back.version, 2);
        // From now on, apply is the script.
        let applied = store
            .apply(&r.id_hash, &changes, T0 + 7, T0 + 7 + 1800)
            .await
            .unwrap();
        assert_eq!(applied.version, 3);
        cleanup(&prefix).await;
    }

    /// Every key under `prefix` that is not a record's.
    async fn index_keys(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(conn)
            .await
            .unwrap();
        let record = format!("{prefix}{{r:");
        keys.into_iter()
            .filter(|k| !k.starts_with(&record))
            .collect()
    }

    /// An anonymous flood leaves no index behind that only a purge would take away: the
    /// purge index is a few keys (an hour's bucket and its directory per shard), each with
    /// a server TTL shortly after its sessions' lifetimes; purge still finds every expired
    /// session, and leaves no key at all once they are gone.
    #[tokio::test]
    async fn the_purge_index_is_bounded_and_expires_by_itself() {
        let (store, prefix, mut conn) = own_store().await;
        const FLOOD: u64 = 400;
        for i in 0..FLOOD {
            let mut r = mm::record("flood");
            r.user_id = None;
            r.idle_deadline = T0 + 10 + i % 50;
            r.absolute_deadline = T0 + 120;
            store.create(&r, T0).await.unwrap();
        }
        let keys = index_keys(&mut conn, &prefix).await;
        assert!(
            !keys.contains(&format!("{prefix}expiry")),
            "one unbounded expiry index: {keys:?}"
        );
        // T0 is 800 s into its hour: every expiry here falls in the same hour.
        assert!(
            !keys.is_empty() && keys.len() <= 2 * 16,
            "{} index keys: {keys:?}",
            keys.len()
        );
        for key in &keys {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            // Kept until at most three hours past the sessions' absolute deadline.
            assert!(
                (1..=3 * 3600 * 1000).contains(&ttl),
                "{key} has PTTL {ttl}: it would outlive its sessions"
            );
        }
        assert_eq!(
            store.purge_expired(T0 + 200, 10_000).await.unwrap(),
            FLOOD as usize,
            "purge finds every expired session"
        );
        assert_eq!(store.purge_expired(T0 + 200, 10_000).await.unwrap(), 0);
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(left.is_empty(), "purge left keys behind: {left:?}");
        cleanup(&prefix).await;
    }

    /// A store written by an older version kept every session in one sorted set
    /// `<prefix>expiry`: its entries are still purged (dead ones deleted and counted, live
    /// ones filed in the buckets) and still seen by the operator queries, until it is empty
    /// and gone.
    #[tokio::test]
    async fn the_older_single_expiry_index_is_drained_by_purge() {
        let (store, prefix, mut conn) = own_store().await;
        let legacy = format!("{prefix}expiry");
        let mut dead = mm::record("old");
        dead.idle_deadline = T0 + 10;
        let live = mm::record("old");
        for r in [&dead, &live] {
            let key = store.record_key(&r.id_hash);
            write_older_layout(&mut conn, &key, r).await;
            // The live one was touched since it was filed: its entry is scored below its
            // expiry (at most the expiry, as that index was kept).
            let score = r.expires_at().min(T0 + 50);
            cmd(
                &mut conn,
                redis::cmd("ZADD")
                    .arg(&legacy)
                    .arg(score)
                    .arg(r.id_hash.to_hex()),
            )
            .await;
        }
        let st = store.stats(T0 + 100).await.unwrap();
        assert_eq!(
            (st.live, st.expired_not_purged),
            (1, 1),
            "read from {legacy}"
        );
        let hex = live.id_hash.to_hex();
        assert_eq!(store.find_by_prefix(&hex, T0).await.unwrap().len(), 1);
        assert_eq!(store.purge_expired(T0 + 100, 100).await.unwrap(), 1);
        assert!(store.load(&dead.id_hash, T0).await.unwrap().is_none());
        assert!(store.load(&live.id_hash, T0 + 100).await.unwrap().is_some());
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&legacy)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            exists, 0,
            "{legacy} is drained: its live entry moved to a bucket"
        );
        assert_eq!(store.find_by_prefix(&hex, T0).await.unwrap().len(), 1);
        // The live session is still purged once it is dead, now from its bucket.
        let after = live.expires_at() + 1;
        assert_eq!(store.purge_expired(after, 100).await.unwrap(), 1);
        assert!(store.load(&live.id_hash, T0).await.unwrap().is_none());
        cleanup(&prefix).await;
    }

    #[tokio::test]
    async fn scripts_are_loaded_again_after_script_flush() {
        let (store, prefix, mut conn) = own_store().await;
        let r = mm::record("flush");
        store.create(&r, r.last_seen).await.unwrap();
        cmd(&mut conn, redis::cmd("SCRIPT").arg("FLUSH")).await;
        assert_eq!(store.update(&r, T0).await.unwrap(), 2);
        cleanup(&prefix).await;
    }

    #[tokio::test]
    async fn data_that_is_not_ours_is_corrupt() {
        let (store, prefix, mut conn) = own_store().await;
        // A wrong type under our key.
        let r = mm::record("eve");
        store.create(&r, r.last_seen).await.unwrap();
        let key = store.record_key(&r.id_hash);
        cmd(&mut conn, redis::cmd("DEL").arg(&key)).await;
        cmd(&mut conn, redis::cmd("SET").arg(&key).arg("hello")).await;
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Corrupt);
        mm::assert_kind(store.update(&r, T0).await, ErrorKind::Corrupt);
        mm::assert_kind(
            store.touch(&r.id_hash, T0, T0 + 9).await,
            ErrorKind::Corrupt,
        );
        mm::assert_kind(
            store
                .apply(&r.id_hash, &cloakroom::Changes::new(), T0, T0 + 9)
                .await,
            ErrorKind::Corrupt,
        );
        mm::assert_kind(store.sessions_of("eve", T0).await, ErrorKind::Corrupt);
        assert!(store.delete(&r.id_hash).await.unwrap());
        // A truncated record.
        let r = mm::record("eve");
        store.create(&r, r.last_seen).await.unwrap();
        let key = store.record_key(&r.id_hash);
        let full: Vec<u8> = redis::cmd("HGET")
            .arg(&key)
            .arg("d")
            .query_async(&mut conn)
            .await
            .unwrap();
        cmd(
            &mut conn,
            redis::cmd("HSET")
                .arg(&key)
                .arg("d")
                .arg(&full[..full.len() / 2]),
        )
        .await;
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Corrupt);
        // A hash missing our fields.
        cmd(&mut conn, redis::cmd("HDEL").arg(&key).arg("l")).await;
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Corrupt);
        // An epoch that is not a number, and a user index of the wrong type.
        let epoch_key = format!("{prefix}{{u:eve}}:epoch");
        cmd(&mut conn, redis::cmd("SET").arg(&epoch_key).arg("many")).await;
        mm::assert_kind(store.user_epoch("eve").await, ErrorKind::Corrupt);
        mm::assert_kind(store.bump_user_epoch("eve").await, ErrorKind::Corrupt);
        cmd(
            &mut conn,
            redis::cmd("DEL").arg(format!("{prefix}{{u:mallory}}:sessions")),
        )
        .await;
        cmd(
            &mut conn,
            redis::cmd("SET")
                .arg(format!("{prefix}{{u:mallory}}:sessions"))
                .arg("x"),
        )
        .await;
        mm::assert_kind(store.sessions_of("mallory", T0).await, ErrorKind::Corrupt);
        cleanup(&prefix).await;
    }

    fn redis_server(port: u16, dir: &std::path::Path) -> Child {
        crate::common::start_server(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir),
            port,
            "redis-server",
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_killed_then_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let port = mm::free_port();
        let server = redis_server(port, dir.path());
        let store = store(&format!("redis://127.0.0.1:{port}"), "fault:").await;
        mm::killed_then_restarted(&store, server, || redis_server(port, dir.path())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_frozen_then_thawed() {
        let dir = tempfile::tempdir().unwrap();
        let port = mm::free_port();
        let server = redis_server(port, dir.path());
        let store = store(&format!("redis://127.0.0.1:{port}"), "frozen:").await;
        mm::frozen(&store, &server).await;
        // A write whose answer never came may have been applied: the error says so; a read
        // does not.
        let r = mm::record("maybe");
        let e = store.create(&r, r.last_seen).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.to_string().contains("may have been applied"), "{e}");
        let e = store.load(&r.id_hash, T0).await.unwrap_err();
        assert!(!e.to_string().contains("may have been applied"), "{e}");
        mm::thawed(&store, &server, &r).await;
    }
}

#[cfg(feature = "postgres")]
mod postgres_store {
    use std::time::Duration;

    use cloakroom::conformance::Corruptible;
    use cloakroom::store::ErrorKind;
    use cloakroom::{IdHash, Store};
    use cloakroom_stores::PostgresStore;

    use crate::common::PgCluster;
    use crate::many_machines::{self as mm, T0};

    const START: &str = "scripts/test --setup-only (or: pg_ctlcluster 15 main start, then \
                         sudo -u postgres createdb test)";

    fn url() -> String {
        std::env::var("CLOAKROOM_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into())
    }

    async fn store(url: &str, schema: &str) -> PostgresStore {
        PostgresStore::builder(url)
            .with_schema(schema)
            .with_pool_size(4)
            .with_connect_timeout(Duration::from_millis(500))
            .with_command_timeout(Duration::from_millis(2000))
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is not reachable at {url} ({e:?}); start it: {START}")
            })
    }

    async fn raw(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is not reachable at {url} ({e}); start it: {START}")
            });
        tokio::spawn(conn);
        client
    }

    /// A store of the test's own on the shared server (in a new schema), and the schema.
    async fn own_store() -> (PostgresStore, String) {
        let schema = mm::unique("t_");
        (store(&url(), &schema).await, schema)
    }

    /// Drops the test's own `schemas` on the shared server.
    async fn drop_schemas(schemas: &[String]) {
        let client = raw(&url()).await;
        for s in schemas {
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_on_the_shared_server() {
        let base = mm::unique("t_");
        let mut schemas = Vec::new();
        let name = |n| {
            let schema = format!("{base}_{n}");
            schemas.push(schema.clone());
            schema
        };
        crate::common::conformance_each(name, |schema| async move {
            let store = store(&url(), &schema).await;
            let client = std::sync::Arc::new(raw(&url()).await);
            Corruptible::new(store, move |id: IdHash| {
                crate::common::corrupt_postgres_record(client.clone(), schema.clone(), id)
            })
        })
        .await;
        drop_schemas(&schemas).await;
    }

    #[tokio::test]
    async fn schema_is_created_once_and_migrated() {
        let url = url();
        let schema = mm::unique("t_");
        let (a, b) = tokio::join!(store(&url, &schema), store(&url, &schema));
        let r = mm::record("mig");
        a.create(&r, r.last_seen).await.unwrap();
        assert!(b.load(&r.id_hash, T0).await.unwrap().is_some());
        let client = raw(&url).await;
        let versions = client
            .query(&format!("SELECT version FROM {schema}.schema_version"), &[])
            .await
            .unwrap();
        assert_eq!(versions.len(), 1, "one migration, applied once");
        let indexes: Vec<String> = client
            .query(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'sessions'",
                &[&schema],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            indexes.iter().any(|i| i == "sessions_user_id"),
            "{indexes:?}"
        );
        assert!(
            indexes.iter().any(|i| i == "sessions_expires_at"),
            "{indexes:?}"
        );
        // A schema from a newer store is refused rather than misread.
        client
            .execute(
                &format!("INSERT INTO {schema}.schema_version VALUES (99)"),
                &[],
            )
            .await
            .unwrap();
        let err = PostgresStore::builder(&url)
            .with_schema(&schema)
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let bad = PostgresStore::builder(&url)
            .with_schema("x; DROP")
            .connect()
            .await
            .unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidInput);
        drop_schemas(&[schema]).await;
    }

    #[tokio::test]
    async fn data_that_is_not_ours_is_corrupt() {
        let (store, schema) = own_store().await;
        let client = raw(&url()).await;
        let r = mm::record("eve");
        store.create(&r, r.last_seen).await.unwrap();
        let id = r.id_hash.as_bytes().as_slice();
        // A truncated record.
        client
            .execute(
                &format!(
                    "UPDATE {schema}.sessions SET record = substring(record for 10) WHERE id = $1"
                ),
                &[&id],
            )
            .await
            .unwrap();
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Corrupt);
        mm::assert_kind(store.sessions_of("eve", T0).await, ErrorKind::Corrupt);
        // Another session's record under this id.
        let other = mm::record("eve");
        client
            .execute(
                &format!("UPDATE {schema}.sessions SET record = $2 WHERE id = $1"),
                &[&id, &other.encode().unwrap()],
            )
            .await
            .unwrap();
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Corrupt);
        // A column of the wrong type.
        client
            .batch_execute(&format!(
                "ALTER TABLE {schema}.sessions ALTER COLUMN last_seen TYPE text"
            ))
            .await
            .unwrap();
        // The running store prepares its statements again, and a fresh one agrees: the
        // table is not what the store made, so it fails closed (Unavailable), never as
        // one bad record (Corrupt, which logs the user out) and never with a panic.
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Unavailable);
        let fresh = self::store(&url(), &schema).await;
        mm::assert_kind(fresh.load(&r.id_hash, T0).await, ErrorKind::Unavailable);
        mm::assert_kind(fresh.sessions_of("eve", T0).await, ErrorKind::Unavailable);
        assert!(fresh.delete(&r.id_hash).await.unwrap());
        drop_schemas(&[schema]).await;
    }

    /// A key=value connection string opens the same store as a URL, through `open` too.
    #[tokio::test]
    async fn a_key_value_connection_string_connects() {
        let (store, schema) = own_store().await;
        let r = mm::record("kv");
        store.create(&r, r.last_seen).await.unwrap();
        let conninfo = "host=127.0.0.1 port=5432 user=postgres password='postgres' dbname=test \
                        allow_plaintext_to_remote_host=false";
        let by_kv = PostgresStore::builder(conninfo)
            .with_schema(&schema)
            .connect()
            .await
            .unwrap();
        assert!(by_kv.load(&r.id_hash, T0).await.unwrap().is_some());
        let url_form = cloakroom_stores::StoreUrl::parse(conninfo).unwrap();
        assert_eq!(url_form.scheme(), "postgres");
        drop(by_kv);
        drop(store);
        drop_schemas(&[schema]).await;
    }

    /// A write that times out may still commit: its error says so, a read's does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_write_says_it_may_have_committed() {
        let url = url();
        let schema = mm::unique("stores_timeout_");
        let store = PostgresStore::builder(&url)
            .with_schema(&schema)
            .with_pool_size(2)
            .with_connect_timeout(Duration::from_millis(500))
            .with_command_timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap();
        let r = mm::record("locked");
        store.create(&r, r.last_seen).await.unwrap();
        // Another connection holds the table: every statement on it waits.
        let mut locker = raw(&url).await;
        let tx = locker.transaction().await.unwrap();
        tx.batch_execute(&format!(
            "LOCK TABLE {schema}.sessions IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
        let r = mm::record("locked");
        let e = store.create(&r, r.last_seen).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(
            e.to_string().contains("may or may not have been committed"),
            "{e}"
        );
        let e = store.load(&r.id_hash, T0).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(!e.to_string().contains("committed"), "{e}");
        tx.rollback().await.unwrap();
        drop(store);
        drop_schemas(&[schema]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_killed_then_restarted() {
        let cluster = PgCluster::init();
        cluster.start("");
        let store = store(&cluster.url(""), "fault").await;
        let r = mm::record("down");
        store.create(&r, r.last_seen).await.unwrap();
        // Fill the pool with idle connections, so that the broken ones are met.
        let mut loads = Vec::new();
        for _ in 0..4 {
            loads.push(store.load(&r.id_hash, T0));
        }
        for l in futures_join(loads).await {
            l.unwrap();
        }
        cluster.kill();
        mm::all_unavailable(&store, &r).await;
        mm::all_unavailable(&store, &r).await;
        cluster.start("");
        // The data survived (PostgreSQL is durable): the old record loads again.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match store.load(&r.id_hash, T0).await {
                Ok(got) => {
                    assert!(got.is_some(), "a committed record was lost");
                    break;
                }
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "no recovery: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        mm::recovers(&store).await;
    }

    async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
        for h in handles {
            out.push(h.await);
        }
        out
    }
}

#[cfg(feature = "memcached")]
mod memcached_store {
    use std::process::Command;
    use std::time::Duration;

    use cloakroom::conformance::Corruptible;
    use cloakroom::store::{Error, ErrorKind};
    use cloakroom::{IdHash, Store};
    use cloakroom_stores::MemcachedStore;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    use crate::many_machines::{self as mm, Child, T0};

    const START: &str = "scripts/test --setup-only (or: apt-get install -y memcached && \
                         memcached -d -u memcache -l 127.0.0.1 -p 11211)";

    fn addr() -> String {
        std::env::var("CLOAKROOM_TEST_MEMCACHED").unwrap_or_else(|_| "127.0.0.1:11211".into())
    }

    async fn store(addr: &str, prefix: &str) -> MemcachedStore {
        store_with_timeout(addr, prefix, Duration::from_millis(300)).await
    }

    /// A store whose commands may take `timeout`: short where a test kills the server,
    /// long for the conformance suite, whose 16 tasks compare-and-swapping one record can
    /// queue behind each other for longer than 300 ms on a loaded 2-core machine.
    async fn store_with_timeout(addr: &str, prefix: &str, timeout: Duration) -> MemcachedStore {
        MemcachedStore::builder(addr)
            .with_prefix(prefix)
            .with_connect_timeout(Duration::from_millis(300))
            .with_command_timeout(timeout)
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!("memcached is not reachable at {addr} ({e}); start it: {START}")
            })
    }

    /// A store of the test's own on the shared server (under a new prefix), and the prefix.
    async fn own_store() -> (MemcachedStore, String) {
        let prefix = mm::unique("cloakroom-test:");
        (store(&addr(), &prefix).await, prefix)
    }

    /// Sends one raw text-protocol command and returns the first reply line.
    async fn raw(addr: &str, command: &[u8]) -> Result<String, std::io::Error> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(command).await?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await?;
        Ok(line.trim_end().to_owned())
    }

    fn set(key: &str, flags: u32, value: &[u8]) -> Vec<u8> {
        let mut c = format!("set {key} {flags} 3600 {}\r\n", value.len()).into_bytes();
        c.extend_from_slice(value);
        c.extend_from_slice(b"\r\n");
        c
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_on_the_shared_server() {
        let base = mm::unique("cloakroom-test:");
        let name = |n| format!("{base}:{n}:");
        crate::common::conformance_each(name, |prefix| async move {
            let store = store_with_timeout(&addr(), &prefix, Duration::from_secs(5)).await;
            let target = store.clone();
            Corruptible::new(store, move |id: IdHash| {
                let key = target.record_key(&id);
                async move {
                    match raw(&addr(), &set(&key, 0xC10A_0001, b"\x01not messagepack")).await {
                        Ok(line) if line == "STORED" => Ok(()),
                        Ok(line) => Err(Error::new(ErrorKind::Unavailable, line)),
                        Err(e) => Err(Error::unavailable("set", e)),
                    }
                }
            })
        })
        .await;
    }

    #[tokio::test]
    async fn data_that_is_not_ours_is_corrupt() {
        let addr = addr();
        let (store, prefix) = own_store().await;
        // Another application's item under our key (other flags).
        let r = mm::record("eve");
        store.create(&r, r.last_seen).await.unwrap();
        let key = store.record_key(&r.id_hash);
        assert_eq!(
            raw(&addr, &set(&key, 0, &r.encode().unwrap()))
                .await
                .unwrap(),
            "STORED"
        );
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Corrupt);
        mm::assert_kind(store.update(&r, T0).await, ErrorKind::Corrupt);
        mm::assert_kind(
            store.touch(&r.id_hash, T0, T0 + 5).await,
            ErrorKind::Corrupt,
        );
        mm::assert_kind(store.sessions_of("eve", T0).await, ErrorKind::Corrupt);
        assert!(store.delete(&r.id_hash).await.unwrap());
        // A truncated record.
        let r = mm::record("eve");
        store.create(&r, r.last_seen).await.unwrap();
        let bytes = r.encode().unwrap();
        let truncated = &bytes[..bytes.len() / 2];
        assert_eq!(
            raw(
                &addr,
                &set(&key_of(&store, &r.id_hash), 0xC10A_0001, truncated)
            )
            .await
            .unwrap(),
            "STORED"
        );
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Corrupt);
        // Another session's record under this id.
        let other = mm::record("eve");
        assert_eq!(
            raw(
                &addr,
                &set(
                    &key_of(&store, &r.id_hash),
                    0xC10A_0001,
                    &other.encode().unwrap()
                )
            )
            .await
            .unwrap(),
            "STORED"
        );
        mm::assert_kind(store.load(&r.id_hash, T0).await, ErrorKind::Corrupt);
        // A user's epoch that is not a number.
        store.bump_user_epoch("eve").await.unwrap();
        let digest: String = sha_hex("eve");
        assert_eq!(
            raw(&addr, &set(&format!("{prefix}e:{digest}"), 0, b"many"))
                .await
                .unwrap(),
            "STORED"
        );
        mm::assert_kind(store.user_epoch("eve").await, ErrorKind::Corrupt);
        // A user index that is not a whole number of entries.
        assert_eq!(
            raw(
                &addr,
                &set(&format!("{prefix}u:{digest}"), 0xC10A_0002, b"short")
            )
            .await
            .unwrap(),
            "STORED"
        );
        mm::assert_kind(store.sessions_of("eve", T0).await, ErrorKind::Corrupt);
    }

    fn key_of(store: &MemcachedStore, id: &IdHash) -> String {
        store.record_key(id)
    }

    fn sha_hex(user: &str) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(user.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[tokio::test]
    async fn a_user_with_many_sessions() {
        // More sessions than one `get` command carries: the reads are batched.
        let (store, _) = own_store().await;
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..70 {
            let r = mm::record("busy");
            store.create(&r, r.last_seen).await.unwrap();
            ids.insert(r.id_hash);
        }
        let listed = store.sessions_of("busy", T0).await.unwrap();
        let listed: std::collections::BTreeSet<_> = listed.iter().map(|r| r.id_hash).collect();
        assert_eq!(listed, ids);
        assert_eq!(store.purge_expired(T0 + 12 * 3600, 50).await.unwrap(), 50);
        assert_eq!(store.purge_expired(T0 + 12 * 3600, 50).await.unwrap(), 20);
        assert!(store.sessions_of("busy", T0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn records_carry_the_server_ttl() {
        let (store, _) = own_store().await;
        // A record whose idle deadline is 1 s after its last_seen: gone from the server at most 2 s
        // later, whatever `now` a caller passes.
        let mut r = mm::record("ttl");
        r.idle_deadline = r.last_seen + 1;
        store.create(&r, r.last_seen).await.unwrap();
        assert!(store.load(&r.id_hash, T0).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(
            store.load(&r.id_hash, T0).await.unwrap().is_none(),
            "memcached kept it"
        );
    }

    fn memcached(port: u16) -> Child {
        crate::common::start_server(
            Command::new("memcached")
                .args(["-u", "root", "-l", "127.0.0.1", "-U", "0", "-m", "16", "-p"])
                .arg(port.to_string()),
            port,
            "memcached",
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_killed_then_restarted() {
        let port = mm::free_port();
        let server = memcached(port);
        let store = store(&format!("127.0.0.1:{port}"), "fault:").await;
        mm::killed_then_restarted(&store, server, || memcached(port)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_frozen_then_thawed() {
        let port = mm::free_port();
        let server = memcached(port);
        let store = store(&format!("127.0.0.1:{port}"), "frozen:").await;
        let r = mm::frozen(&store, &server).await;
        mm::thawed(&store, &server, &r).await;
    }
}

// ---------------------------------------------------------------------------------------
// The session daemon (issue 13): the remote store's client side, against a scripted daemon
// (a plain ROUTER socket answering with the protocol codec). The conformance suite against
// the real daemon is in crates/cloakroomd/tests/remote_store.rs.
// ---------------------------------------------------------------------------------------

#[cfg(feature = "remote")]
mod remote_store {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    use cloakroom::store::ErrorKind;
    use cloakroom::{IdHash, Store};
    use cloakroom_proto::{Limits, Reply, Request, RequestId, Status};
    use cloakroom_stores::{RemoteError, RemoteStore};
    use cloakroom_zmq::zmq;

    /// A scripted daemon on a thread: a ROUTER bound to `endpoint` that hands every request
    /// it decodes to `answer`, which returns the replies to send now (to any request seen so
    /// far, in any order). Stops when the returned guard is dropped.
    struct Scripted {
        stop: Arc<AtomicBool>,
        received: Arc<AtomicUsize>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    type Pending = Vec<(Vec<u8>, RequestId, Request)>;

    impl Scripted {
        fn start<F>(endpoint: &str, mut answer: F) -> Self
        where
            F: FnMut(&mut Pending) -> Vec<(Vec<u8>, RequestId, Reply)> + Send + 'static,
        {
            let stop = Arc::new(AtomicBool::new(false));
            let received = Arc::new(AtomicUsize::new(0));
            let (ready_tx, ready_rx) = mpsc::channel();
            let endpoint = endpoint.to_owned();
            let (s, r) = (Arc::clone(&stop), Arc::clone(&received));
            let thread = std::thread::spawn(move || {
                let ctx = zmq::Context::new();
                let router = ctx.socket(zmq::ROUTER).unwrap();
                router.set_linger(0).unwrap();
                router.set_rcvtimeo(20).unwrap();
                router.bind(&endpoint).unwrap();
                ready_tx.send(()).unwrap();
                let mut pending: Pending = Vec::new();
                while !s.load(Ordering::Relaxed) {
                    if let Ok(frames) = router.recv_multipart(0) {
                        r.fetch_add(1, Ordering::Relaxed);
                        let (id, request) =
                            Request::decode(&frames[1..], &Limits::default()).unwrap();
                        pending.push((frames[0].clone(), id, request));
                    }
                    for (peer, id, reply) in answer(&mut pending) {
                        let mut out = vec![peer];
                        out.extend(reply.encode(id));
                        router.send_multipart(out, 0).unwrap();
                    }
                }
            });
            ready_rx.recv().unwrap();
            Self {
                stop,
                received,
                thread: Some(thread),
            }
        }

        fn received(&self) -> usize {
            self.received.load(Ordering::Relaxed)
        }
    }

    impl Drop for Scripted {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn endpoint(dir: &tempfile::TempDir) -> String {
        format!("ipc://{}/cloakroomd.sock", dir.path().display())
    }

    /// Answers every pending request at once with `f(request)`.
    fn each(
        mut f: impl FnMut(&Request) -> Reply + Send + 'static,
    ) -> impl FnMut(&mut Pending) -> Vec<(Vec<u8>, RequestId, Reply)> + Send + 'static {
        move |pending| {
            pending
                .drain(..)
                .map(|(peer, id, req)| {
                    let reply = f(&req);
                    (peer, id, reply)
                })
                .collect()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_daemon_that_is_not_there_is_unavailable_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let store = RemoteStore::builder(endpoint(&dir))
            .with_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let started = Instant::now();
        let err = store.user_epoch("nobody").await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(took >= Duration::from_millis(290), "failed early: {took:?}");
        assert!(took < Duration::from_secs(5), "hung: {took:?}");
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<RemoteError>())
            .expect("a RemoteError source");
        assert!(source.message().contains("within"), "{source}");
        assert_eq!(
            store.in_flight(),
            0,
            "a timed-out call left its waiter behind"
        );
        // connect() (with its PING) reports the absent daemon too.
        let err = RemoteStore::builder(endpoint(&dir))
            .with_timeout(Duration::from_millis(100))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_timed_out_unsent_is_never_sent_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = RemoteStore::builder(endpoint(&dir))
            .with_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let err = store.bump_user_epoch("late").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        // The daemon comes up after the caller gave up: it must not receive that write.
        let daemon = Scripted::start(&endpoint(&dir), each(|_| Reply::Epoch(1)));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            daemon.received(),
            0,
            "a write reported Unavailable arrived later"
        );
        // And the same store works now, without being rebuilt.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store.user_epoch("late").await {
                Ok(n) => break assert_eq!(n, 1),
                Err(e) if Instant::now() < deadline => {
                    assert_eq!(e.kind(), ErrorKind::Unavailable)
                }
                Err(e) => panic!("never recovered: {e}"),
            }
        }
        assert_eq!(daemon.received(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_in_any_order_reach_their_own_callers() {
        let dir = tempfile::tempdir().unwrap();
        const N: usize = 200;
        // Holds requests until N are in flight, then answers them newest first.
        let daemon = Scripted::start(&endpoint(&dir), |pending: &mut Pending| {
            if pending.len() < N {
                return Vec::new();
            }
            let mut out = Vec::new();
            while let Some((peer, id, req)) = pending.pop() {
                let Request::UserEpoch { user_id } = req else {
                    panic!("unexpected {req:?}")
                };
                out.push((peer, id, Reply::Epoch(user_id.parse().unwrap())));
            }
            out
        });
        let store = Arc::new(RemoteStore::builder(endpoint(&dir)).build().unwrap());
        let tasks: Vec<_> = (0..N as u64)
            .map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { (n, store.user_epoch(&n.to_string()).await) })
            })
            .collect();
        for t in tasks {
            let (n, got) = t.await.unwrap();
            assert_eq!(got.unwrap(), n, "a reply reached the wrong caller");
        }
        assert_eq!(daemon.received(), N);
        assert_eq!(store.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_reply_is_dropped_and_the_next_call_gets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        // Answers the first request only after 400 ms, the others at once.
        let mut first: Option<(Instant, Vec<u8>, RequestId)> = None;
        let _daemon = Scripted::start(&endpoint(&dir), move |pending: &mut Pending| {
            let mut out = Vec::new();
            for (peer, id, _) in pending.drain(..) {
                if first.is_none() {
                    first = Some((Instant::now(), peer, id));
                } else {
                    out.push((peer, id, Reply::Epoch(2)));
                }
            }
            if let Some((at, peer, id)) = &first {
                if at.elapsed() > Duration::from_millis(400) {
                    out.push((peer.clone(), *id, Reply::Epoch(1)));
                    first = Some((Instant::now() + Duration::from_secs(3600), Vec::new(), *id));
                }
            }
            out
        });
        let store = RemoteStore::builder(endpoint(&dir))
            .with_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let err = store.user_epoch("u").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        tokio::time::sleep(Duration::from_millis(400)).await; // the late reply arrives
        assert_eq!(store.user_epoch("u").await.unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_status_maps_to_its_error_kind() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (Status::NotFound, ErrorKind::NotFound),
            (Status::Conflict, ErrorKind::Conflict),
            (Status::Unavailable, ErrorKind::Unavailable),
            (Status::TooLarge, ErrorKind::TooLarge),
            (Status::Internal, ErrorKind::Unavailable),
            (Status::BadRequest, ErrorKind::Unavailable),
            (Status::BadVersion, ErrorKind::Unavailable),
            (Status::UnknownVerb, ErrorKind::Unavailable),
            (Status::Invalid, ErrorKind::Unavailable),
            (Status::Expired, ErrorKind::Unavailable),
            (Status::Corrupt, ErrorKind::Corrupt),
            (Status::Unsupported, ErrorKind::Unsupported),
        ];
        // The old way of saying "corrupt" (UNAVAILABLE with this message) is now only what it
        // says: unavailable. CORRUPT is a status of its own.
        let corrupt = "store returned a corrupt record: record does not decode";
        let _daemon = Scripted::start(
            &endpoint(&dir),
            each(move |req| {
                let Request::Touch { now, .. } = req else {
                    panic!("unexpected {req:?}")
                };
                if *now == 99 {
                    return Reply::error(Status::Unavailable, corrupt);
                }
                let (status, _) = cases[usize::try_from(*now).unwrap()];
                Reply::error(status, format!("scripted {status}"))
            }),
        );
        let store = RemoteStore::builder(endpoint(&dir)).build().unwrap();
        let id = IdHash::from_bytes([7; 32]);
        for (i, (status, kind)) in cases.iter().enumerate() {
            let err = store.touch(&id, i as u64, 0).await.unwrap_err();
            assert_eq!(err.kind(), *kind, "{status}: {err}");
            let source = std::error::Error::source(&err)
                .and_then(|s| s.downcast_ref::<RemoteError>())
                .expect("a RemoteError source");
            assert_eq!(source.status(), Some(*status));
            assert_eq!(source.message(), format!("scripted {status}"));
        }
        let err = store.touch(&id, 99, 0).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        // LOAD's NOT_FOUND is "no session", not an error.
        drop(_daemon);
        let _daemon = Scripted::start(
            &endpoint(&dir),
            each(|_| Reply::error(Status::NotFound, "none")),
        );
        assert!(store.load(&id, 0).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_over_the_body_limit_is_refused_before_it_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Scripted::start(&endpoint(&dir), each(|_| Reply::Done));
        let store = RemoteStore::builder(endpoint(&dir))
            .with_max_request_size(1000)
            .build()
            .unwrap();
        let mut record = cloakroom::Record::new(
            IdHash::from_bytes([1; 32]),
            1_700_000_000,
            &cloakroom::Policy::default(),
        );
        record
            .data
            .insert("big".into(), cloakroom::Value::from("x".repeat(2000)));
        let err = store.create(&record, record.last_seen).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
        assert!(err.to_string().contains("1000"), "{err}");
        assert_eq!(daemon.received(), 0);
        record.data.clear();
        store.create(&record, record.last_seen).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_endpoint_is_invalid_input() {
        for bad in ["/tmp/x.sock", "http://localhost", "ipc:/nope", "inproc://x"] {
            let err = RemoteStore::builder(bad).build().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }
}
