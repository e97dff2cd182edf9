//! Each endpoint against keys made here: ES256 keys from ring, RS256 keys from the `rsa`
//! crate (ring cannot make RSA keys; it signs with them), proofs signed here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{header, Request, Response, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use cloakroom::{Device, KeyRing, ManualClock, MemoryStore, Mode};

use crate::{DeviceBinding, Session, SessionLayer};

const START: u64 = 1_900_000_000;
const REG: &str = "/dbsc/start";
const REFRESH: &str = "/dbsc/refresh";

/// A browser's key: it signs proofs and names itself as a JWK.
enum Key {
    Es(EcdsaKeyPair),
    Rs(RsaKeyPair, Value),
}

impl Key {
    fn es256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self::Es(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    fn rs256() -> Self {
        use rsa::pkcs8::EncodePrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let jwk = json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        });
        let der = key.to_pkcs8_der().unwrap();
        Self::Rs(RsaKeyPair::from_pkcs8(der.as_bytes()).unwrap(), jwk)
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Es(_) => "ES256",
            Self::Rs(..) => "RS256",
        }
    }

    fn jwk(&self) -> Value {
        match self {
            Self::Es(pair) => {
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                })
            }
            Self::Rs(_, jwk) => jwk.clone(),
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Es(pair) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
            Self::Rs(pair, _) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    /// A JWT with `header` and `claims`, signed by this key.
    fn jwt(&self, header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = self.sign(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// A registration proof as Chromium sends it: the key in the header.
    fn registration(&self, challenge: &str) -> String {
        self.jwt(
            &json!({"alg": self.alg(), "typ": "dbsc+jwt", "jwk": self.jwk()}),
            &json!({"aud": format!("https://localhost{REG}"), "jti": challenge, "iat": START}),
        )
    }

    /// A registration proof as the draft writes it: the key in the `key` claim.
    fn registration_draft(&self, challenge: &str) -> String {
        self.jwt(
            &json!({"alg": self.alg(), "typ": "dbsc+jwt"}),
            &json!({"aud": format!("https://localhost{REG}"), "jti": challenge,
                    "iat": START.to_string(), "key": self.jwk()}),
        )
    }

    fn refresh(&self, challenge: &str, id: &str) -> String {
        self.jwt(
            &json!({"alg": self.alg(), "typ": "dbsc+jwt"}),
            &json!({"aud": format!("https://localhost{REFRESH}"), "jti": challenge, "iat": START, "sub": id}),
        )
    }
}

struct Site {
    app: Router,
    clock: Arc<ManualClock>,
    layer: SessionLayer,
}

fn site_with(binding: DeviceBinding) -> Site {
    let clock = Arc::new(ManualClock::new(START));
    let layer = SessionLayer::builder()
        .key_ring(&KeyRing::generate().unwrap())
        .store(Arc::new(MemoryStore::new()))
        .with_clock(clock.clone())
        .with_device_binding(binding)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/login",
            post(|session: Session| async move {
                session.login("ada", Device::new()).unwrap();
                "welcome"
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move {
                session.logout();
                "bye"
            }),
        )
        .route(
            "/me",
            get(|session: Session| async move {
                let bound = if session.is_device_bound() {
                    " bound"
                } else {
                    ""
                };
                format!(
                    "{}{bound}",
                    session.user_id().unwrap_or_else(|| "anonymous".into())
                )
            }),
        )
        .route(
            "/sessions",
            get(|session: Session| async move {
                let list = session.sessions().await.unwrap();
                format!(
                    "{:?}",
                    list.iter().map(|s| s.device_bound).collect::<Vec<_>>()
                )
            }),
        )
        .merge(layer.device_binding_routes())
        .layer(layer.clone());
    Site { app, clock, layer }
}

fn site() -> Site {
    site_with(
        DeviceBinding::new()
            .with_registration_path(REG)
            .with_refresh_path(REFRESH)
            .with_bound_cookie_lifetime(Duration::from_secs(60))
            .with_challenge_lifetime(Duration::from_secs(120))
            .with_old_challenge_window(Duration::from_secs(10)),
    )
}

/// A cookie jar: what a browser (or a thief who copied it) sends.
#[derive(Clone, Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn take(&mut self, response: &Response<Body>) {
        for line in response.headers().get_all(header::SET_COOKIE) {
            let c = cookie::Cookie::parse(line.to_str().unwrap().to_owned()).unwrap();
            if c.max_age() == Some(cookie::time::Duration::ZERO) {
                self.0.remove(c.name());
            } else {
                self.0.insert(c.name().to_owned(), c.value().to_owned());
            }
        }
    }

    fn without(&self, name: &str) -> Self {
        let mut copy = self.clone();
        copy.0.remove(name);
        copy
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The challenge of `Secure-Session-Challenge` (and the session id it names).
    fn challenge(&self) -> (String, String) {
        let v = self
            .header("secure-session-challenge")
            .expect("a challenge");
        let (c, id) = v.split_once(";id=").unwrap();
        (
            c.trim_matches('"').to_owned(),
            id.trim_matches('"').to_owned(),
        )
    }

    /// The challenge of `Secure-Session-Registration`.
    fn registration_challenge(&self) -> String {
        let v = self
            .header("secure-session-registration")
            .expect("a registration header");
        assert!(
            v.starts_with("(ES256 RS256);path=\"/dbsc/start\";challenge=\""),
            "{v}"
        );
        v.rsplit_once("challenge=\"")
            .unwrap()
            .1
            .trim_end_matches('"')
            .to_owned()
    }
}

impl Site {
    async fn send(
        &self,
        jar: &mut Jar,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if !jar.0.is_empty() {
            req = req.header(header::COOKIE, jar.header());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = self
            .app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        jar.take(&response);
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// A `POST` to the registration endpoint with this `Secure-Session-Response`.
    async fn post_registration(&self, jar: &mut Jar, response: &str) -> Answer {
        self.send(jar, "POST", REG, &[("secure-session-response", response)])
            .await
    }

    /// A `POST` to the refresh endpoint naming the (quoted) session id `sid`, with the
    /// proof as `Secure-Session-Response` if there is one.
    async fn post_refresh(&self, jar: &mut Jar, sid: &str, proof: Option<&str>) -> Answer {
        let mut headers = vec![("sec-secure-session-id", sid)];
        headers.extend(proof.map(|p| ("secure-session-response", p)));
        self.send(jar, "POST", REFRESH, &headers).await
    }

    async fn me(&self, jar: &Jar) -> String {
        self.send(&mut jar.clone(), "GET", "/me", &[]).await.body
    }

    /// Logs in and registers `key`; returns the jar, the session identifier and the
    /// challenge handed out for the first refresh.
    async fn bound(&self, key: &Key) -> (Jar, String, String) {
        let mut jar = Jar::default();
        let login = self.send(&mut jar, "POST", "/login", &[]).await;
        let challenge = login.registration_challenge();
        let reg = self
            .post_registration(&mut jar, &format!("\"{}\"", key.registration(&challenge)))
            .await;
        assert_eq!(
            reg.status,
            StatusCode::OK,
            "registration answered {}",
            reg.status
        );
        let (next, id) = reg.challenge();
        (jar, id, next)
    }
}

const BOUND: &str = "__Host-session-bound";

#[tokio::test]
async fn es256_registration_binds_the_session_and_answers_the_configuration() {
    let site = site();
    let key = Key::es256();
    let mut jar = Jar::default();
    let login = site.send(&mut jar, "POST", "/login", &[]).await;
    let challenge = login.registration_challenge();
    assert_eq!(site.me(&jar).await, "ada", "signed in, not bound yet");
    let proof = key.registration(&challenge);
    let reg = site
        .post_registration(&mut jar, &format!("\"{proof}\""))
        .await;
    assert_eq!(reg.status, StatusCode::OK);
    assert_eq!(
        reg.header("content-type").as_deref(),
        Some("application/json")
    );
    let config: Value = serde_json::from_str(&reg.body).unwrap();
    let (_, id) = reg.challenge();
    assert_eq!(config["session_identifier"], json!(id));
    assert_eq!(config["refresh_url"], json!(REFRESH));
    assert_eq!(config["scope"]["include_site"], json!(false));
    assert_eq!(config["credentials"][0]["type"], json!("cookie"));
    assert_eq!(config["credentials"][0]["name"], json!(BOUND));
    let attributes = config["credentials"][0]["attributes"].as_str().unwrap();
    for a in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(attributes.contains(a), "{attributes}");
    }
    assert!(jar.0.contains_key(BOUND), "the bound cookie is set");
    assert_eq!(site.me(&jar).await, "ada bound");
    assert_eq!(
        site.send(&mut jar, "GET", "/sessions", &[]).await.body,
        "[true]"
    );
    // The proof cannot be used again: single-use challenge.
    let again = site.post_registration(&mut jar.clone(), &proof).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rs256_registration_with_the_key_in_the_claims_binds_the_session() {
    let site = site();
    let key = Key::rs256();
    let mut jar = Jar::default();
    let challenge = site
        .send(&mut jar, "POST", "/login", &[])
        .await
        .registration_challenge();
    let proof = key.registration_draft(&challenge);
    let reg = site
        .post_registration(&mut jar, &format!("\"{proof}\""))
        .await;
    assert_eq!(reg.status, StatusCode::OK, "{}", reg.body);
    assert_eq!(site.me(&jar).await, "ada bound");
    // An RS256 refresh: 403 with a challenge, then a proof over it.
    site.clock.advance(Duration::from_secs(61));
    assert_eq!(site.me(&jar).await, "anonymous", "the bound cookie ran out");
    let (_, id) = reg.challenge();
    let first = site
        .post_refresh(&mut jar, &format!("\"{id}\""), None)
        .await;
    assert_eq!(first.status, StatusCode::FORBIDDEN);
    let (c, _) = first.challenge();
    let ok = site
        .post_refresh(&mut jar, &format!("\"{id}\""), Some(&key.refresh(&c, &id)))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(site.me(&jar).await, "ada bound");
}

#[tokio::test]
async fn registration_refuses_forged_foreign_and_anonymous_proofs() {
    let site = site();
    let key = Key::es256();
    let other = Key::es256();
    let mut jar = Jar::default();
    let challenge = site
        .send(&mut jar, "POST", "/login", &[])
        .await
        .registration_challenge();
    // Signed by another key than the one it names.
    let h = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "jwk": key.jwk()}).to_string());
    let c = URL_SAFE_NO_PAD.encode(json!({"jti": challenge}).to_string());
    let forged = format!(
        "{h}.{c}.{}",
        URL_SAFE_NO_PAD.encode(other.sign(format!("{h}.{c}").as_bytes()))
    );
    let mut answers = Vec::new();
    for proof in [
        forged,
        key.registration("not-a-challenge"),
        key.jwt(
            &json!({"alg": "HS256", "jwk": key.jwk()}),
            &json!({"jti": challenge}),
        ),
        key.jwt(
            &json!({"alg": "ES256", "typ": "JWT", "jwk": key.jwk()}),
            &json!({"jti": challenge}),
        ),
        key.jwt(
            &json!({"alg": "RS256", "jwk": key.jwk()}),
            &json!({"jti": challenge}),
        ),
        "a.b.c".to_owned(),
    ] {
        answers.push(site.post_registration(&mut jar, &proof).await.status);
    }
    assert!(
        answers.iter().all(|s| *s == StatusCode::BAD_REQUEST),
        "{answers:?}"
    );
    // A challenge made for another session (another login's).
    let mut other_jar = Jar::default();
    let foreign = site
        .send(&mut other_jar, "POST", "/login", &[])
        .await
        .registration_challenge();
    let r = site
        .post_registration(&mut jar, &key.registration(&foreign))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Without a session.
    let r = site
        .post_registration(&mut Jar::default(), &key.registration(&challenge))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // An expired challenge.
    site.clock.advance(Duration::from_secs(121));
    let r = site
        .post_registration(&mut jar, &key.registration(&challenge))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(site.me(&jar).await, "ada", "still signed in, never bound");
}

#[tokio::test]
async fn a_copied_cookie_without_the_bound_cookie_is_logged_out_and_the_browser_is_not() {
    let site = site();
    let (browser, _, _) = site.bound(&Key::es256()).await;
    let thief = browser.without(BOUND);
    // Within the registration's grace (requests the browser sent while registering).
    assert_eq!(site.me(&thief).await, "ada bound");
    site.clock.advance(Duration::from_secs(10));
    assert_eq!(site.me(&thief).await, "anonymous");
    assert_eq!(site.me(&browser).await, "ada bound");
    // A tampered bound cookie is no better.
    let mut tampered = browser.clone();
    tampered.0.get_mut(BOUND).unwrap().push('x');
    assert_eq!(site.me(&tampered).await, "anonymous");
    // Once the bound cookie's lifetime has passed, a full copy is logged out too.
    site.clock.advance(Duration::from_secs(51));
    assert_eq!(site.me(&browser).await, "anonymous");
}

#[tokio::test]
async fn refresh_issues_a_fresh_bound_cookie_for_a_proof_over_our_challenge() {
    let site = site();
    let key = Key::es256();
    let (mut jar, id, cached) = site.bound(&key).await;
    site.clock.advance(Duration::from_secs(61));
    assert_eq!(site.me(&jar).await, "anonymous");
    let sid = format!("\"{id}\"");
    // The challenge handed out at registration is still good (120 s).
    let proof = key.refresh(&cached, &id);
    let ok = site.post_refresh(&mut jar, &sid, Some(&proof)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.challenge().1, id);
    let config: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(config["session_identifier"], json!(id));
    assert_eq!(site.me(&jar).await, "ada bound");
    // The same proof again: the challenge is used up; a new one is handed out, no cookie.
    let replay = site
        .post_refresh(&mut jar.clone(), &sid, Some(&proof))
        .await;
    assert_eq!(replay.status, StatusCode::FORBIDDEN);
    assert!(replay.headers.get(header::SET_COOKIE).is_none());
    // A challenge past its lifetime: 403 and a new challenge.
    let (c, _) = ok.challenge();
    site.clock.advance(Duration::from_secs(121));
    let late = site
        .post_refresh(&mut jar, &sid, Some(&key.refresh(&c, &id)))
        .await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    let (fresh, _) = late.challenge();
    let ok = site
        .post_refresh(&mut jar, &sid, Some(&key.refresh(&fresh, &id)))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(site.me(&jar).await, "ada bound");
    // A refresh naming another session id: 401 (the browser ends its side).
    let wrong = site.post_refresh(&mut jar.clone(), "\"nope\"", None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_old_challenge_is_accepted_only_within_the_window() {
    let site = site();
    let key = Key::es256();
    let (mut jar, id, _) = site.bound(&key).await;
    let sid = format!("\"{id}\"");
    let ask = |jar: Jar| {
        let site = &site;
        let sid = sid.clone();
        async move {
            site.post_refresh(&mut jar.clone(), &sid, None)
                .await
                .challenge()
                .0
        }
    };
    // Two challenges 1 s apart, then a proof over the older one `wait` s after the newer:
    // still fine 5 s after (A, then B), refused 11 s after (C, then D).
    let mut last = None;
    for (wait, want, why) in [
        (5, StatusCode::OK, "an old challenge within the window"),
        (
            11,
            StatusCode::FORBIDDEN,
            "an old challenge past the window",
        ),
    ] {
        site.clock.advance(Duration::from_secs(1));
        let older = ask(jar.clone()).await;
        site.clock.advance(Duration::from_secs(1));
        let _newer = ask(jar.clone()).await;
        site.clock.advance(Duration::from_secs(wait));
        let r = site
            .post_refresh(&mut jar, &sid, Some(&key.refresh(&older, &id)))
            .await;
        assert_eq!(r.status, want, "{why}");
        last = Some(r);
    }
    // The refusal handed out a fresh challenge, which works.
    let (e, _) = last.unwrap().challenge();
    let r = site
        .post_refresh(&mut jar, &sid, Some(&key.refresh(&e, &id)))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_refresh_signed_by_another_key_ends_the_session() {
    let site = site();
    let key = Key::es256();
    let (mut browser, id, cached) = site.bound(&key).await;
    let sid = format!("\"{id}\"");
    let mut thief = browser.without(BOUND);
    let thief_key = Key::es256();
    let r = site
        .post_refresh(&mut thief, &sid, Some(&thief_key.refresh(&cached, &id)))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The session is gone, for the browser too.
    assert_eq!(site.me(&browser).await, "anonymous");
    let r = site
        .post_refresh(&mut browser, &sid, Some(&key.refresh(&cached, &id)))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_key_binds_one_session_only() {
    let site = site();
    let key = Key::es256();
    let _ = site.bound(&key).await;
    let mut jar = Jar::default();
    let challenge = site
        .send(&mut jar, "POST", "/login", &[])
        .await
        .registration_challenge();
    let r = site
        .post_registration(&mut jar, &key.registration(&challenge))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(site.me(&jar).await, "ada");
    // A bound session cannot be bound again.
    let (mut bound, _, _) = site.bound(&Key::es256()).await;
    let r = site
        .post_registration(&mut bound, &Key::es256().registration(&challenge))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn browsers_without_dbsc_keep_working_unbound_and_logout_removes_the_bound_cookie() {
    let site = site();
    let mut plain = Jar::default();
    site.send(&mut plain, "POST", "/login", &[]).await;
    site.clock.advance(Duration::from_secs(600));
    assert_eq!(
        site.me(&plain).await,
        "ada",
        "an unbound session needs no bound cookie"
    );
    assert_eq!(
        site.send(&mut plain, "GET", "/sessions", &[]).await.body,
        "[false]"
    );
    let (mut jar, _, _) = site.bound(&Key::es256()).await;
    let out = site.send(&mut jar, "POST", "/logout", &[]).await;
    let removals: Vec<_> = out
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        removals
            .iter()
            .any(|l| l.starts_with(&format!("{BOUND}=;"))),
        "{removals:?}"
    );
    assert!(jar.0.is_empty(), "{:?}", jar.0);
    // A new login in a bound browser starts unbound, and is asked to register again.
    let (mut jar, _, _) = site.bound(&Key::es256()).await;
    let login = site.send(&mut jar, "POST", "/login", &[]).await;
    let _ = login.registration_challenge();
    assert_eq!(site.me(&jar).await, "ada");
}

#[test]
fn device_binding_needs_server_mode_and_valid_paths() {
    let build = |mode, binding: DeviceBinding| {
        SessionLayer::builder()
            .key_ring(&KeyRing::generate().unwrap())
            .store(Arc::new(MemoryStore::new()))
            .with_mode(mode)
            .with_device_binding(binding)
            .build()
    };
    assert!(build(Mode::Server, DeviceBinding::new()).is_ok());
    for mode in [Mode::Client, Mode::Hybrid] {
        let e = build(mode, DeviceBinding::new()).unwrap_err();
        assert!(e.to_string().contains("server mode"), "{e}");
    }
    for bad in ["relative", "/a\"b", "/"] {
        let b = DeviceBinding::new()
            .with_registration_path(bad)
            .with_refresh_path("/");
        assert!(build(Mode::Server, b).is_err(), "{bad}");
    }
    let zero = DeviceBinding::new().with_bound_cookie_lifetime(Duration::ZERO);
    assert!(build(Mode::Server, zero).is_err());
    // Without binding: no routes, and a login sends no registration header.
    let _ = site().layer;
}

#[test]
fn sf_strings_are_read_and_written() {
    use super::{sf_string, to_sf_string};
    assert_eq!(sf_string("\"abc.def\"").as_deref(), Some("abc.def"));
    assert_eq!(sf_string("\"a\\\"b\";x=1").as_deref(), Some("a\"b"));
    assert_eq!(sf_string("abc.def").as_deref(), Some("abc.def"));
    assert_eq!(sf_string("\"unterminated"), None);
    assert_eq!(sf_string("\"bad\\x\""), None);
    assert_eq!(sf_string(""), None);
    assert_eq!(to_sf_string("a\"b"), "\"a\\\"b\"");
}

/// Everything the layer logs, at every level.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn nothing_a_thief_could_use_is_logged() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let site = site();
    let key = Key::es256();
    let (mut jar, id, cached) = site.bound(&key).await;
    let sid = format!("\"{id}\"");
    let proof = key.refresh(&cached, &id);
    site.post_refresh(&mut jar, &sid, Some(&proof)).await;
    let mut secrets: Vec<String> = jar.0.values().cloned().collect();
    site.me(&jar.without(BOUND)).await;
    site.clock.advance(Duration::from_secs(11));
    site.me(&jar.without(BOUND)).await;
    let forged = Key::es256().refresh(&cached, &id);
    site.post_refresh(&mut jar, &sid, Some(&forged)).await;
    secrets.extend([cached, proof, forged]);
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("session bound to a device key"), "{log}");
    assert!(log.contains("failed the signature check"), "{log}");
    assert!(log.contains("served as logged out"), "{log}");
    for secret in &secrets {
        // Any 16-character piece of a cookie, challenge or proof would be too much.
        let piece = &secret[secret.len() - 16..];
        assert!(
            !log.contains(piece),
            "the log holds part of a secret: {piece}"
        );
    }
}
