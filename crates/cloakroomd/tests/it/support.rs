//! A blocking CRP1 client, an in-process daemon and the daemon binary as a child process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloakroom::store::Error;
use cloakroom::{Applied, Changes, IdHash, MemoryStore, Record, Store};
use cloakroom_proto::{Limits, Reply, Request, RequestId, Verb};
use cloakroom_zmq::zmq;

/// A DEALER client with blocking calls (a receive timeout of `timeout`).
pub(crate) struct Client {
    pub(crate) sock: zmq::Socket,
    next: u64,
}

impl Client {
    pub(crate) fn connect(ctx: &zmq::Context, endpoint: &str) -> Self {
        Self::connect_with(ctx, endpoint, Duration::from_secs(10))
    }

    pub(crate) fn connect_with(ctx: &zmq::Context, endpoint: &str, timeout: Duration) -> Self {
        let sock = ctx.socket(zmq::DEALER).unwrap();
        sock.set_linger(0).unwrap();
        sock.set_rcvtimeo(timeout.as_millis() as i32).unwrap();
        sock.set_sndtimeo(timeout.as_millis() as i32).unwrap();
        sock.connect(endpoint).unwrap();
        Self { sock, next: 0 }
    }

    /// A client on a socket set up by the caller (CURVE keys, say) and already connected.
    pub(crate) fn from_socket(sock: zmq::Socket) -> Self {
        Self { sock, next: 0 }
    }

    pub(crate) fn send(&mut self, request: &Request) -> RequestId {
        self.next += 1;
        let id = RequestId::from_u64(self.next);
        self.sock.send_multipart(request.encode(id), 0).unwrap();
        id
    }

    /// The next reply, decoded as an answer to `verb`; `None` on timeout.
    pub(crate) fn recv(&mut self, verb: Verb) -> Option<(RequestId, Reply)> {
        let frames = self.recv_raw()?;
        Some(Reply::decode(&frames, verb, &Limits::default()).expect("a CRP1 reply"))
    }

    pub(crate) fn recv_raw(&mut self) -> Option<Vec<Vec<u8>>> {
        match self.sock.recv_multipart(0) {
            Ok(f) => Some(f),
            Err(zmq::Error::EAGAIN) => None,
            Err(e) => panic!("recv: {e}"),
        }
    }

    /// Sends `request` and waits for its reply (replies to others are skipped).
    pub(crate) fn call(&mut self, request: &Request) -> Reply {
        let id = self.send(request);
        loop {
            let (got, reply) = self
                .recv(request.verb())
                .unwrap_or_else(|| panic!("no reply to {} within the timeout", request.verb()));
            if got == id {
                return reply;
            }
        }
    }
}

/// An in-process daemon on loopback tcp, with its own runtime and data directory.
pub(crate) struct InProcess {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) daemon: Option<cloakroomd::Running>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ctx: zmq::Context,
}

impl InProcess {
    pub(crate) fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub(crate) fn start_with(change: impl FnOnce(&mut cloakroomd::Config)) -> Self {
        Self::start_in(runtime(), change)
    }

    /// A daemon on a runtime the caller made (and may have used already: a store built on
    /// it, say).
    pub(crate) fn start_in(
        rt: tokio::runtime::Runtime,
        change: impl FnOnce(&mut cloakroomd::Config),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = cloakroomd::Config::new(dir.path().join("data"));
        config.bind = vec!["tcp://127.0.0.1:*".into()];
        config.events = Some("tcp://127.0.0.1:*".into());
        change(&mut config);
        let daemon = rt
            .block_on(cloakroomd::start(config))
            .expect("daemon starts");
        Self {
            rt,
            daemon: Some(daemon),
            dir,
            ctx: zmq::Context::new(),
        }
    }

    pub(crate) fn daemon(&self) -> &cloakroomd::Running {
        self.daemon.as_ref().unwrap()
    }

    pub(crate) fn endpoint(&self) -> String {
        self.daemon().endpoints()[0].clone()
    }

    pub(crate) fn client(&self) -> Client {
        Client::connect(&self.ctx, &self.endpoint())
    }

    pub(crate) fn shutdown(&mut self) {
        if let Some(d) = self.daemon.take() {
            self.rt.block_on(d.shutdown());
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The runtime an in-process daemon runs on: multi-threaded, 2 workers, I/O and time.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The daemon binary as a child process; killed (SIGKILL) when dropped.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) dir: PathBuf,
}

pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cloakroomd")
}

impl Process {
    /// Starts `cloakroomd ARGS` in `dir` (its working directory).
    pub(crate) fn spawn(dir: &Path, args: &[&str]) -> Self {
        let child = Command::new(binary())
            .args(args)
            .current_dir(dir)
            .env_remove("CLOAKROOM_KEYS")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cloakroomd runs");
        Self {
            child,
            dir: dir.to_owned(),
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY-free: kill(1) by pid, our own child.
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit status, at most `limit`.
    pub(crate) fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub(crate) fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until PING on `endpoint` answers (the daemon is up).
pub(crate) fn wait_for_ping(ctx: &zmq::Context, endpoint: &str, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let mut c = Client::connect_with(ctx, endpoint, Duration::from_millis(300));
        let id = c.send(&Request::Ping);
        if let Some((got, reply)) = c.recv(Verb::Ping) {
            assert_eq!(got, id);
            assert!(matches!(reply, Reply::Pong { .. }), "{reply:?}");
            return;
        }
        assert!(
            Instant::now() < until,
            "no PING answer on {endpoint} within {limit:?}"
        );
    }
}

/// The resident set size of a process, bytes (from /proc).
pub(crate) fn rss(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A free loopback tcp port.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a [`Hooked`] store does before each call (`op` is the method's name): a delay, a
/// panic or an error of the test's.
#[async_trait]
pub(crate) trait Hook: Send + Sync {
    async fn before(&self, op: &'static str) -> Result<(), Error>;
}

/// A memory store that runs its hook ahead of every call, then the call itself.
#[derive(Default)]
pub(crate) struct Hooked<H> {
    pub(crate) inner: MemoryStore,
    pub(crate) hook: H,
}

#[async_trait]
impl<H: Hook + 'static> Store for Hooked<H> {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        self.hook.before("create").await?;
        self.inner.create(record, now).await
    }
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        self.hook.before("load").await?;
        self.inner.load(id, now).await
    }
    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        self.hook.before("update").await?;
        self.inner.update(record, now).await
    }
    async fn apply(&self, id: &IdHash, c: &Changes, now: u64, idle: u64) -> Result<Applied, Error> {
        self.hook.before("apply").await?;
        self.inner.apply(id, c, now, idle).await
    }
    async fn touch(&self, id: &IdHash, now: u64, idle: u64) -> Result<(), Error> {
        self.hook.before("touch").await?;
        self.inner.touch(id, now, idle).await
    }
    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        self.hook.before("delete").await?;
        self.inner.delete(id).await
    }
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.hook.before("sessions_of").await?;
        self.inner.sessions_of(user, now).await
    }
    async fn revoke_user_sessions(&self, user: &str, but: Option<&IdHash>) -> Result<u64, Error> {
        self.hook.before("revoke_user_sessions").await?;
        self.inner.revoke_user_sessions(user, but).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.hook.before("user_epoch").await?;
        self.inner.user_epoch(user).await
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.hook.before("bump_user_epoch").await?;
        self.inner.bump_user_epoch(user).await
    }
    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        self.hook.before("purge_expired").await?;
        self.inner.purge_expired(now, limit).await
    }
}
