//! The Cloakroom demo site: sign-up and login (argon2 password hashes, users in SQLite), a
//! flash after login, CSRF-protected forms, a "Your sessions" page (sign out all other
//! sessions, end one), and a password change that ends all the others.
//!
//! ```text
//! cargo run -p cloakroom-tower --example demo      # then open http://127.0.0.1:3000
//! cargo run -p cloakroom-tower --example demo -- --store cloakroomd+ipc:///srv/crd/cloakroomd.sock
//! ```
//!
//! Data lives in `target/cloakroom-demo/` (or `$CLOAKROOM_DEMO_DIR`), out of git, since a key
//! ring must never be committed: `keys.toml` (the key ring, generated on first run with mode
//! 0600 and kept, so a restart keeps you signed in; `$CLOAKROOM_KEYS` replaces it),
//! `sessions.db` (Cloakroom's SQLite session store, read through its session cache,
//! `cloakroom_stores::CachedStore`, so a page view reads its session from memory) and
//! `users.db`. `$CLOAKROOM_DEMO_ADDR` changes the address (loopback only).
//!
//! `--store URL` (or `$CLOAKROOM_STORE`) keeps the sessions in another store instead of
//! `sessions.db`, named as in `cloakroom_stores::StoreUrl`: `cloakroomd+ipc://PATH` is the
//! session daemon, whose Python and other clients then share the demo's logins (the daemon
//! and the demo need the same key ring, `$CLOAKROOM_KEYS`, and the daemon's `--cookie-name`
//! must be the demo's cookie name, `cloakroom-session`).
//!
//! A background purger deletes expired sessions from `sessions.db` every 5 minutes.
//!
//! Device binding is on (docs/device-binding.md): a browser with Device Bound Session
//! Credentials binds its session to a key it keeps, and "Your sessions" says which sessions
//! are bound. `$CLOAKROOM_DEMO_BOUND_SECS` sets the bound cookie's lifetime (default 300). DBSC
//! needs https: put a TLS proxy in front and name its origin in `$CLOAKROOM_DEMO_ORIGIN`
//! (like `https://localhost:8443`) so the CSRF check accepts its forms.
//!
//! The demo serves plain http on loopback, so it uses the named
//! `insecure_plain_http_for_local_development` option: never serve it beyond the machine.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::{Form, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cloakroom::Store;
use cloakroom_stores::{CachedStore, SqliteStore, DEFAULT_CAPACITY};
use cloakroom_tower::{
    async_trait, BoxError, Csrf, CsrfLayer, CurrentUser, Device, DeviceBinding, Error, Flash,
    IdHash, KeyRing, Level, Session, SessionLayer, UserLoader, CSRF_FIELD,
};
use serde::Deserialize;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--store URL` (also `--store=URL`), else `$CLOAKROOM_STORE`, else none (the SQLite file).
fn store_url() -> anyhow::Result<Option<String>> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    while let Some(arg) = args.next() {
        if arg == "--store" {
            url = Some(args.next().context("--store needs a URL")?);
        } else if let Some(value) = arg.strip_prefix("--store=") {
            url = Some(value.to_owned());
        } else {
            bail!("unknown argument {arg:?}; the demo takes only --store URL");
        }
    }
    match url {
        Some(url) => Ok(Some(url)),
        None => match std::env::var("CLOAKROOM_STORE") {
            Ok(url) => Ok(Some(url)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => bail!("CLOAKROOM_STORE: {e}"),
        },
    }
}

async fn run() -> anyhow::Result<()> {
    let store_url = store_url()?;
    let dir = PathBuf::from(
        std::env::var_os("CLOAKROOM_DEMO_DIR").unwrap_or_else(|| "target/cloakroom-demo".into()),
    );
    let addr: SocketAddr = std::env::var("CLOAKROOM_DEMO_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".to_owned())
        .parse()
        .context("CLOAKROOM_DEMO_ADDR is not an address like 127.0.0.1:3000")?;
    if !addr.ip().is_loopback() {
        bail!("the demo serves plain http and listens on loopback only, not {addr}");
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // $CLOAKROOM_KEYS, else keys.toml in the data directory, created on the first run: a
    // restart keeps everyone signed in.
    let ring = KeyRing::from_env_or_file(dir.join("keys.toml"))?;
    let sessions: Arc<dyn Store> = match &store_url {
        // Reads without a round trip: the session cache, kept coherent with every other
        // writer of the file (the operator CLI, a second demo process) by `PRAGMA
        // data_version`, so a session revoked anywhere is refused here at once.
        None => Arc::new(
            CachedStore::sqlite(
                SqliteStore::open(dir.join("sessions.db"))
                    .await
                    .context("cannot open the session store")?,
                DEFAULT_CAPACITY,
            )
            .await
            .context("cannot start the session cache")?,
        ),
        Some(url) => cloakroom_stores::open(url)
            .await
            .context("cannot open the session store given by --store")?,
    };
    let users = Users::open(&dir.join("users.db"))?;
    let bound_secs: u64 = match std::env::var("CLOAKROOM_DEMO_BOUND_SECS") {
        Ok(v) => v
            .parse()
            .context("CLOAKROOM_DEMO_BOUND_SECS is not a number of seconds")?,
        Err(_) => 300,
    };
    let layer = SessionLayer::builder()
        .key_ring(&ring)
        .store(sessions)
        .insecure_plain_http_for_local_development()
        .with_user_loader(users.clone())
        // Expired sessions leave sessions.db every 5 minutes, with no cron job.
        .with_background_purge(std::time::Duration::from_secs(5 * 60), 1000)
        // Sessions bound to a key the browser keeps, where it supports DBSC.
        .with_device_binding(
            DeviceBinding::new()
                .with_bound_cookie_lifetime(std::time::Duration::from_secs(bound_secs)),
        )
        .build()?;
    let mut origins = vec![
        format!("http://{addr}"),
        format!("http://localhost:{}", addr.port()),
    ];
    if let Ok(origin) = std::env::var("CLOAKROOM_DEMO_ORIGIN") {
        origins.push(origin);
    }
    // The device binding endpoints check signed proofs over their own challenges, so they
    // sit outside the CSRF layer (the browser's DBSC requests carry no form token).
    let app = router(users)
        .layer(CsrfLayer::new(origins))
        .merge(layer.device_binding_routes())
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!(
        "Cloakroom demo on http://{addr}/ (plain http, loopback only; data in {})",
        dir.display()
    );
    axum::serve(listener, app).await?;
    Ok(())
}

// ---------------------------------------------------------------- users

#[derive(Clone, Debug)]
struct User {
    name: String,
}

/// Users and their argon2 password hashes, in SQLite.
#[derive(Clone)]
struct Users {
    db: Arc<Mutex<rusqlite::Connection>>,
}

impl Users {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let db = rusqlite::Connection::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL)",
        )?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
        })
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, BoxError> {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || {
            let db = db.lock().unwrap_or_else(|e| e.into_inner());
            f(&db)
        })
        .await?;
        Ok(result?)
    }

    async fn hash_of(&self, name: &str) -> Result<Option<String>, BoxError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let mut stmt = db.prepare_cached("SELECT password_hash FROM users WHERE name = ?1")?;
            let mut rows = stmt.query([name])?;
            rows.next()?.map(|r| r.get(0)).transpose()
        })
        .await
    }

    /// Creates a user; false if the name is taken.
    async fn create(&self, name: &str, hash: String) -> Result<bool, BoxError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            db.execute(
                "INSERT OR IGNORE INTO users (name, password_hash) VALUES (?1, ?2)",
                (name, hash),
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn set_hash(&self, name: &str, hash: String) -> Result<(), BoxError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            db.execute(
                "UPDATE users SET password_hash = ?2 WHERE name = ?1",
                (name, hash),
            )
            .map(drop)
        })
        .await
    }
}

#[async_trait]
impl UserLoader for Users {
    type User = User;
    async fn load_user(&self, user_id: &str) -> Result<Option<User>, BoxError> {
        Ok(self.hash_of(user_id).await?.map(|_| User {
            name: user_id.to_owned(),
        }))
    }
}

async fn hash_password(password: String) -> Result<String, BoxError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| BoxError::from(e.to_string()))
    })
    .await?
}

async fn password_matches(password: String, hash: String) -> Result<bool, BoxError> {
    Ok(tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await?)
}

// ---------------------------------------------------------------- pages

fn router(users: Users) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/signup", get(signup_page).post(signup))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/sessions", get(sessions_page))
        .route("/sessions/others", post(sign_out_others))
        .route("/sessions/end", post(end_session))
        .route("/password", get(password_page).post(change_password))
        .with_state(users)
}

/// Failures of the user store: 503, like the session store's.
struct AppError(Response);

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        Self(e.into_response())
    }
}

impl From<BoxError> for AppError {
    fn from(e: BoxError) -> Self {
        tracing::error!(error = %e, "user store failed");
        Self(
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "2")],
                "503 Service Unavailable\n",
            )
                .into_response(),
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.0
    }
}

type Page = Result<Response, AppError>;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, flash: &Flash, body: &str) -> Response {
    let mut flashes = String::new();
    for f in flash.messages() {
        let _ = write!(
            flashes,
            r#"<p class="flash {:?}" id="flash">{}</p>"#,
            f.level,
            esc(&f.message)
        );
    }
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{t} · Cloakroom demo</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}} .flash{{background:#efe;padding:.5em}} td{{padding:.2em .6em}}</style>
</head><body><h1>{t}</h1>{flashes}{body}</body></html>"#,
        t = esc(title)
    ))
    .into_response()
}

/// The hidden CSRF field. For a visitor who is not signed in (the sign-in and sign-up pages)
/// the token is tied to its own signed `cloakroom-session-csrf` cookie, so showing these
/// pages stores no session; signing in replaces it with the session's own secret.
fn csrf_field(csrf: &Csrf) -> String {
    format!(
        r#"<input type="hidden" name="{CSRF_FIELD}" value="{}">"#,
        esc(csrf.token())
    )
}

async fn home(user: Option<CurrentUser<User>>, flash: Flash, csrf: Csrf) -> Page {
    let Some(user) = user else {
        return Ok(Redirect::to("/login").into_response());
    };
    Ok(page(
        "Home",
        &flash,
        &format!(
            r#"<p id="who">Signed in as <b>{}</b>.</p>
<p><a href="/sessions" id="sessions-link">Your sessions</a> · <a href="/password">Change password</a></p>
<form method="post" action="/logout">{}<button id="logout">Sign out</button></form>"#,
            esc(&user.name),
            csrf_field(&csrf)
        ),
    ))
}

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

fn credentials_form(action: &str, button: &str, csrf: &Csrf) -> String {
    format!(
        r#"<form method="post" action="{action}" id="form">{}
<p><label>Name <input name="name" id="name" required maxlength="64"></label></p>
<p><label>Password <input name="password" id="password" type="password" required minlength="8"></label></p>
<button id="submit">{button}</button></form>"#,
        csrf_field(csrf)
    )
}

async fn signup_page(flash: Flash, csrf: Csrf) -> Response {
    page(
        "Sign up",
        &flash,
        &format!(
            r#"{}<p>Already registered? <a href="/login">Sign in</a></p>"#,
            credentials_form("/signup", "Sign up", &csrf)
        ),
    )
}

async fn login_page(flash: Flash, csrf: Csrf) -> Response {
    page(
        "Sign in",
        &flash,
        &format!(
            r#"{}<p>New here? <a href="/signup" id="signup-link">Sign up</a></p>"#,
            credentials_form("/login", "Sign in", &csrf)
        ),
    )
}

/// A sign-up or a sign-in: the form's name (trimmed) and password, and the browser that sent
/// it.
struct Attempt {
    name: String,
    password: String,
    device: Device,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Attempt {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown browser");
        let device = Device::new().with_user_agent(agent.chars().take(200).collect::<String>());
        let Form(form) = Form::<Credentials>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            name: form.name.trim().to_owned(),
            password: form.password,
            device,
        })
    }
}

async fn signup(State(users): State<Users>, session: Session, form: Attempt) -> Page {
    let name = form.name.clone();
    if name.is_empty() || name.len() > 64 || form.password.len() < 8 {
        session.flash(
            Level::Error,
            "A name and a password of at least 8 characters, please.",
        );
        return Ok(Redirect::to("/signup").into_response());
    }
    let hash = hash_password(form.password).await?;
    if !users.create(&name, hash).await? {
        session.flash(Level::Error, "That name is taken.");
        return Ok(Redirect::to("/signup").into_response());
    }
    session.login(name.clone(), form.device)?;
    session.flash(
        Level::Success,
        format!("Welcome, {name}! Your account is ready."),
    );
    Ok(Redirect::to("/").into_response())
}

async fn login(State(users): State<Users>, session: Session, form: Attempt) -> Page {
    let name = form.name.clone();
    let ok = match users.hash_of(&name).await? {
        Some(hash) => password_matches(form.password, hash).await?,
        None => false,
    };
    if !ok {
        session.flash(Level::Error, "Wrong name or password.");
        return Ok(Redirect::to("/login").into_response());
    }
    session.login(name.clone(), form.device)?;
    session.flash(Level::Success, format!("Signed in as {name}."));
    Ok(Redirect::to("/").into_response())
}

async fn logout(session: Session) -> Redirect {
    session.logout();
    Redirect::to("/login")
}

fn ago(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then);
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

async fn sessions_page(
    user: Option<CurrentUser<User>>,
    session: Session,
    flash: Flash,
    csrf: Csrf,
) -> Page {
    if user.is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    let current = session.id_hash();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = String::new();
    for s in session.sessions().await? {
        let this = current.as_ref() == Some(&s.id_hash);
        let action = if this {
            "<b>this device</b>".to_owned()
        } else {
            format!(
                r#"<form method="post" action="/sessions/end">{}<input type="hidden" name="session" value="{}"><button>End</button></form>"#,
                csrf_field(&csrf),
                s.id_hash.to_hex()
            )
        };
        let binding = if s.device_bound {
            r#"<td class="bound">bound to a device key</td>"#
        } else {
            r#"<td class="unbound">not device-bound</td>"#
        };
        let _ = write!(
            rows,
            r#"<tr class="session"><td>{}</td><td>signed in {}</td><td>last seen {}</td>{binding}<td>{action}</td></tr>"#,
            esc(s.device.user_agent.as_deref().unwrap_or("unknown")),
            ago(now, s.created),
            ago(now, s.last_seen),
        );
    }
    Ok(page(
        "Your sessions",
        &flash,
        &format!(
            r#"<p id="this-binding">This session is {}.</p>
<table id="sessions">{rows}</table>
<form method="post" action="/sessions/others" id="others-form">{}<button id="sign-out-others">Sign out all other sessions</button></form>
<p><a href="/">Home</a></p>"#,
            if session.is_device_bound() {
                "bound to this device's key"
            } else {
                "not device-bound"
            },
            csrf_field(&csrf)
        ),
    ))
}

async fn sign_out_others(session: Session) -> Page {
    if session.user_id().is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    let n = session.sign_out_other_sessions().await?;
    session.flash(Level::Success, format!("Signed out {n} other session(s)."));
    Ok(Redirect::to("/sessions").into_response())
}

#[derive(Deserialize)]
struct EndForm {
    session: String,
}

async fn end_session(session: Session, Form(form): Form<EndForm>) -> Page {
    if session.user_id().is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    let ended = match IdHash::from_hex(&form.session) {
        Ok(hash) => session.end_session(&hash).await?,
        Err(_) => false,
    };
    session.flash(
        Level::Info,
        if ended {
            "Session ended."
        } else {
            "That session was already gone."
        },
    );
    Ok(Redirect::to("/sessions").into_response())
}

async fn password_page(user: Option<CurrentUser<User>>, flash: Flash, csrf: Csrf) -> Response {
    if user.is_none() {
        return Redirect::to("/login").into_response();
    }
    page(
        "Change password",
        &flash,
        &format!(
            r#"<form method="post" action="/password">{}
<p><label>Current password <input name="current" type="password" required></label></p>
<p><label>New password <input name="new" type="password" required minlength="8"></label></p>
<button>Change password and sign out all other sessions</button></form><p><a href="/">Home</a></p>"#,
            csrf_field(&csrf)
        ),
    )
}

#[derive(Deserialize)]
struct PasswordForm {
    current: String,
    new: String,
}

async fn change_password(
    State(users): State<Users>,
    user: Option<CurrentUser<User>>,
    session: Session,
    Form(form): Form<PasswordForm>,
) -> Page {
    let Some(user) = user else {
        return Ok(Redirect::to("/login").into_response());
    };
    let ok = match users.hash_of(&user.name).await? {
        Some(hash) => password_matches(form.current, hash).await?,
        None => false,
    };
    if !ok || form.new.len() < 8 {
        session.flash(
            Level::Error,
            "Wrong current password, or a new one under 8 characters.",
        );
        return Ok(Redirect::to("/password").into_response());
    }
    users
        .set_hash(&user.name, hash_password(form.new).await?)
        .await?;
    let n = session.sign_out_other_sessions().await?;
    // A new id for this session too: whoever saw the old cookie no longer holds it.
    session.cycle_id()?;
    session.flash(
        Level::Success,
        format!("Password changed; {n} other session(s) signed out."),
    );
    Ok(Redirect::to("/").into_response())
}
