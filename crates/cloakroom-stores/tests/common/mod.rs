//! What the integration test binaries of cloakroom-stores share: names, records, free ports,
//! child servers, certificates, and the conformance suite's corruption of a record. Each
//! binary uses a part of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloakroom::{Policy, Record, SessionId};

pub(crate) const T0: u64 = 1_700_000_000;

/// A name no other test run (or test in this run) uses.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The conformance suite, each case on the target that `target` makes of a name of its own,
/// `name(n)` for the case's number `n` (1, 2, ...).
pub(crate) async fn conformance_each<N, F, Fut, T>(mut name: impl FnMut(usize) -> N, target: F)
where
    F: Fn(N) -> Fut,
    Fut: std::future::Future<Output = T>,
    T: cloakroom::conformance::ConformanceTarget,
{
    let mut n = 0;
    cloakroom::conformance::run(|| {
        n += 1;
        target(name(n))
    })
    .await;
}

/// Asserts that `result` is an error of kind `kind`.
#[track_caller]
pub(crate) fn assert_kind<T: std::fmt::Debug>(
    result: Result<T, cloakroom::store::Error>,
    kind: cloakroom::store::ErrorKind,
) {
    let err = result.unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
}

/// Plaintext to a host other than this one, through `connect` (a store at a URL): each URL
/// of `refused` fails before any connection, as invalid input that names the option that
/// would allow it; each of `tried` (allowed, or over TLS) is tried, and the host is away.
pub(crate) async fn plaintext_to_remote_hosts<F, Fut, S>(
    connect: F,
    refused: &[&str],
    tried: &[&str],
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<S, cloakroom::store::Error>>,
    S: std::fmt::Debug,
{
    use cloakroom::store::ErrorKind;
    for url in refused {
        let err = connect((*url).to_owned()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}: {err}");
        assert!(
            err.to_string().contains("allow_plaintext_to_remote_host"),
            "{url}: {err}"
        );
    }
    for url in tried {
        let err = connect((*url).to_owned()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{url}: {err}");
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on 127.0.0.1:{port}");
}

pub(crate) fn record(user: &str) -> Record {
    let mut r = Record::new(
        SessionId::generate().unwrap().hash(),
        T0,
        &Policy::default(),
    );
    r.user_id = Some(user.to_owned());
    r
}

/// A CA and a server certificate for `127.0.0.1` and `localhost` signed by it, made now
/// with the openssl command (P-256 keys).
pub(crate) struct Certificates {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// A second CA that signed nothing here: trusting it alone must fail.
    pub(crate) other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); install it: apt-get install -y openssl")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn certificates(dir: &Path) -> Certificates {
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    let ca_conf = |cn: &str| {
        format!(
            "[req]\ndistinguished_name = dn\nx509_extensions = v3\nprompt = no\n\
             [dn]\nCN = {cn}\n[v3]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
        )
    };
    write("ca.cnf", &ca_conf("cloakroom test CA"));
    write("other-ca.cnf", &ca_conf("cloakroom other CA"));
    write(
        "server.cnf",
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = localhost\n",
    );
    write(
        "server.ext",
        "subjectAltName = IP:127.0.0.1,DNS:localhost\n\
         basicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n",
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (conf, key, pem) in [
        ("ca.cnf", "ca.key", "ca.pem"),
        ("other-ca.cnf", "other-ca.key", "other-ca.pem"),
    ] {
        let mut args = vec!["req", "-x509", "-config", conf, "-days", "2"];
        args.extend(ec);
        args.extend(["-keyout", key, "-out", pem]);
        openssl(dir, &args);
    }
    let mut args = vec!["req", "-new", "-config", "server.cnf"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    Certificates {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_ca: dir.join("other-ca.pem"),
    }
}

/// A child process killed (and waited for) when dropped.
pub(crate) struct Child(pub(crate) Option<std::process::Child>);

impl Child {
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the server `cmd` (its program is also its Debian package: `redis-server`,
/// `memcached`), its output discarded, and waits until it listens on `port` (`what` names it
/// if it does not).
pub(crate) fn start_server(cmd: &mut Command, port: u16, what: &str) -> Child {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); install it: apt-get install -y {program}")
        });
    wait_port(port, what);
    Child(Some(child))
}

/// Sends `signal` (`STOP`, `CONT`) to the child: a server that hangs instead of dying.
pub(crate) fn signal(child: &Child, signal: &str) {
    let pid = child.0.as_ref().expect("running").id();
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Makes the Redis record under `key` undecodable: the conformance suite's corruption, on
/// the test's own connection.
#[cfg(feature = "redis")]
pub(crate) async fn corrupt_redis_record(
    mut conn: impl redis::aio::ConnectionLike + Send,
    key: String,
) -> Result<(), cloakroom::store::Error> {
    redis::cmd("HSET")
        .arg(key)
        .arg("d")
        .arg(&b"\x01not messagepack"[..])
        .query_async::<i64>(&mut conn)
        .await
        .map(drop)
        .map_err(|e| cloakroom::store::Error::unavailable("HSET", e))
}

/// Makes the PostgreSQL record of `id` in `schema` undecodable: the conformance suite's
/// corruption, on the test's own connection.
#[cfg(feature = "postgres")]
pub(crate) async fn corrupt_postgres_record(
    client: std::sync::Arc<tokio_postgres::Client>,
    schema: String,
    id: cloakroom::IdHash,
) -> Result<(), cloakroom::store::Error> {
    client
        .execute(
            &format!("UPDATE {schema}.sessions SET record = $2 WHERE id = $1"),
            &[&id.as_bytes().as_slice(), &&b"\x01not messagepack"[..]],
        )
        .await
        .map(drop)
        .map_err(|e| cloakroom::store::Error::unavailable("UPDATE", e))
}

/// Overwrites the SQLite record of `id` in the database at `path` with `blob` (an SQL blob
/// literal): the conformance suite's corruption, on a connection of the test's own.
#[cfg(feature = "sqlite")]
pub(crate) async fn corrupt_sqlite_record(
    path: PathBuf,
    id: cloakroom::IdHash,
    blob: &str,
) -> Result<(), cloakroom::store::Error> {
    let conn = rusqlite::Connection::open(&path)
        .map_err(|e| cloakroom::store::Error::unavailable("inject_corrupt", e))?;
    conn.execute(
        &format!("UPDATE sessions SET record = {blob} WHERE id = ?1"),
        [id.as_bytes().as_slice()],
    )
    .map_err(|e| cloakroom::store::Error::unavailable("inject_corrupt", e))?;
    Ok(())
}

/// The newest PostgreSQL server binaries (`/usr/lib/postgresql/*/bin`).
#[cfg(feature = "postgres")]
pub(crate) fn postgres_bin() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).max())
        .filter(|b| b.join("initdb").exists())
        .expect("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin; run: apt-get install -y postgresql")
}

/// `bin args` as the postgres user when we are root (PostgreSQL refuses to run as root),
/// its output discarded.
#[cfg(feature = "postgres")]
pub(crate) fn as_postgres(bin: &Path, args: &[&str]) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// A new throwaway cluster in `data` (trust authentication, superuser `postgres`).
#[cfg(feature = "postgres")]
pub(crate) fn initdb(bin: &Path, data: &Path) {
    let ok = as_postgres(
        &bin.join("initdb"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    )
    .status()
    .unwrap()
    .success();
    assert!(ok, "initdb failed");
}

/// Gives `path` to the postgres user (which only root can; otherwise nothing changes).
#[cfg(feature = "postgres")]
pub(crate) fn chown_postgres(path: &Path) {
    let _ = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status();
}

/// A throwaway PostgreSQL cluster (initdb + pg_ctl, as the postgres user when we are root)
/// in a new directory, on a free port; stopped when dropped.
#[cfg(feature = "postgres")]
pub(crate) struct PgCluster {
    bin: PathBuf,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) port: u16,
}

#[cfg(feature = "postgres")]
impl PgCluster {
    /// A new cluster in `dir/data`, not started yet.
    pub(crate) fn init() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        chown_postgres(dir.path());
        initdb(&bin, &dir.path().join("data"));
        Self {
            bin,
            dir,
            port: free_port(),
        }
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, after [`kill`](Self::kill)): listening on 127.0.0.1 and a
    /// socket in `dir`, fsync off, plus `settings` (`-c name=value ...`).
    pub(crate) fn start(&self, settings: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {settings}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let ok = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        )
        .status()
        .unwrap()
        .success();
        assert!(
            ok,
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        wait_port(self.port, "PostgreSQL");
    }

    /// Stops the server at once (`-m immediate`: no shutdown checkpoint, as a crash).
    pub(crate) fn kill(&self) {
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        )
        .status();
    }

    /// The database `postgres` as the superuser over TCP, with the URL query `query` (none
    /// when empty).
    pub(crate) fn url(&self, query: &str) -> String {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }
}

#[cfg(feature = "postgres")]
impl Drop for PgCluster {
    fn drop(&mut self) {
        self.kill();
    }
}
