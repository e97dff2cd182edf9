//! The integration suite of cloakroom-interop:
//!
//! - the shipped vectors (cookies made by the real packages, `crates/cloakroom-testdata/data/interop-vectors.json`)
//!   open to their payloads, and our writer reproduces them byte for byte where the framework
//!   is deterministic;
//! - every single-character change of every valid vector fails to open;
//! - property tests: round trips, and malformed input never panics;
//! - both ways against the real packages: Flask, Pyramid and Django from `target/venv`, Rails
//!   6.1 from Debian's `ruby-actionpack`, a thousand random cookies per framework and way.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use cloakroom_interop::{
    Django, Error, ErrorKind, Flask, Framework, Legacy, LegacySession, Pyramid, Rails,
    RailsEnvelope, RailsSigned, RailsVersion, Secret,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{json, Value};

fn vectors() -> Value {
    cloakroom_testdata::interop_vectors()
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn parse(v: &Value) -> Value {
    serde_json::from_str(s(v)).expect("serialized_json is JSON")
}

/// JSON parsed with its object keys in document order, whatever map type serde_json was built
/// with, so the writers can reproduce a framework's insertion order byte for byte.
#[derive(Debug, Clone)]
enum Ordered {
    Scalar(Value),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    fn parse(text: &str) -> Self {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = <Ordered as serde::Deserialize>::deserialize(&mut de).expect("valid JSON");
        de.end().expect("one JSON value");
        v
    }
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(json!(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(json!(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(json!(n)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(json!(s)))
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Scalar(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ordered::Scalar(v) => v.serialize(s),
            Ordered::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Ordered::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

fn unhex12(h: &str) -> [u8; 12] {
    hex::decode(h)
        .expect("hex")
        .try_into()
        .expect("a 12-byte IV")
}

/// The value of the first cookie in a `Set-Cookie` line.
fn set_cookie_value(line: &str) -> &str {
    line.split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .expect("name=value")
        .1
}

// ---------------------------------------------------------------------------------------------
// The shipped vectors.

#[test]
fn flask_vectors_open_and_reproduce() {
    let v = vectors();
    let f = &v["flask_session"];
    let ts = f["timestamp"].as_u64().unwrap();
    let flask = Flask::new(Secret::from(s(&f["secret_key"])))
        .unwrap()
        .with_salt(s(&f["salt"]));
    let vectors = f["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for vector in vectors {
        let cookie = s(&vector["cookie"]);
        assert_eq!(cookie, set_cookie_value(s(&vector["set_cookie"])));
        let expected = parse(&vector["serialized_json"]);
        let opened = flask.open(cookie, ts + 60).unwrap();
        assert_eq!(opened.framework, Framework::Flask);
        assert_eq!(opened.data, expected, "{cookie}");
        assert_eq!(opened.issued_at, Some(ts));
        assert_eq!(opened.expires_at, Some(ts + 31 * 86_400 + 1));
        assert_eq!(
            cookie.starts_with('.'),
            vector["compressed"].as_bool().unwrap()
        );

        let written = flask.write(&expected, ts).unwrap();
        assert!(!written.starts_with('.'), "the writer never compresses");
        if vector["compressed"] == json!(false) {
            assert_eq!(written, cookie, "byte for byte");
        } else {
            assert_ne!(written, cookie);
            assert_eq!(flask.open(&written, ts).unwrap().data, expected);
        }
    }
}

#[test]
fn pyramid_vector_opens_and_reproduces() {
    let v = vectors();
    let p = &v["pyramid_signed_cookie_session"];
    assert_eq!(s(&p["hashalg"]), "sha512");
    let ts = p["timestamp"].as_u64().unwrap();
    let pyramid = Pyramid::new(Secret::from(s(&p["secret"])))
        .unwrap()
        .with_salt(s(&p["salt"]));
    let cookie = s(&p["cookie"]);
    assert_eq!(cookie, set_cookie_value(s(&p["set_cookie"])));
    let full = parse(&p["serialized_json"]);
    let opened = pyramid.open(cookie, ts + 60).unwrap();
    assert_eq!(opened.data, full[2]);
    assert_eq!(opened.data, json!({"user_id": 42, "csrf": "abc"}));
    assert_eq!(opened.accessed_at, Some(ts));
    assert_eq!(opened.issued_at, Some(ts));
    assert_eq!(opened.expires_at, Some(ts + 1201));
    assert_eq!(
        pyramid.open(cookie, ts + 1201).unwrap_err().kind(),
        ErrorKind::Expired
    );

    let Ordered::Array(parts) = Ordered::parse(s(&p["serialized_json"])) else {
        panic!("Pyramid's state is an array")
    };
    assert_eq!(
        pyramid.write(&parts[2], ts).unwrap(),
        cookie,
        "byte for byte"
    );
}

#[test]
fn django_vectors_open_and_reproduce() {
    let v = vectors();
    let d = &v["django_signed_cookies_session"];
    let ts = d["timestamp"].as_u64().unwrap();
    let secret = Secret::from(s(&d["secret_key"]));
    assert_eq!(cloakroom_interop::b62_encode(ts), s(&d["timestamp_b62"]));

    let django = Django::new(secret.clone())
        .unwrap()
        .with_salt(s(&d["salt"]));
    let cookie = s(&d["cookie"]);
    assert_eq!(cookie, set_cookie_value(s(&d["set_cookie"])));
    assert!(cookie.starts_with('.'), "this vector is compressed");
    let expected = parse(&d["serialized_json"]);
    let opened = django.open(cookie, ts + 60).unwrap();
    assert_eq!(opened.data, expected);
    assert_eq!(
        opened.data["_auth_user_hash"],
        d["session_auth_hash"]["hash"]
    );
    assert_eq!(opened.issued_at, Some(ts));
    assert_eq!(
        django.open(cookie, ts + 1_209_601).unwrap_err().kind(),
        ErrorKind::Expired
    );
    // The `_auth_user_hash` Django checks against the user's password column.
    let auth = &d["session_auth_hash"];
    assert_eq!(
        django.session_auth_hash(s(&auth["password_field"])),
        s(&auth["hash"])
    );
    assert!(django.verify_session_auth_hash(s(&auth["password_field"]), s(&auth["hash"])));
    assert!(!django.verify_session_auth_hash("pbkdf2_sha256$1000000$salt$other=", s(&auth["hash"])));
    let rotated = Django::new(Secret::from("new-key"))
        .unwrap()
        .with_fallback_secret(secret.clone());
    assert!(rotated.verify_session_auth_hash(s(&auth["password_field"]), s(&auth["hash"])));

    // Not byte-identical (Django compressed it, we never do), but Django-shaped and readable.
    let ordered = Ordered::parse(s(&d["serialized_json"]));
    let written = django.write(&ordered, ts).unwrap();
    assert!(!written.starts_with('.'));
    assert!(written.contains(":1r31eq:"));
    assert_eq!(django.open(&written, ts).unwrap().data, expected);

    // signing.dumps with the default salt: uncompressed, so reproduced byte for byte.
    let hello = &d["signing_dumps_hello"];
    let signing = Django::new(secret.clone())
        .unwrap()
        .with_salt(s(&hello["salt"]));
    assert_eq!(
        signing.open(s(&hello["signed"]), ts).unwrap().data,
        json!("hello")
    );
    assert_eq!(signing.write("hello", ts).unwrap(), s(&hello["signed"]));

    let compressed = &d["signing_dumps_compressed"];
    let signed = s(&compressed["signed"]);
    assert!(signed.starts_with('.'));
    assert_eq!(
        signing.open(signed, ts).unwrap().data,
        json!((1..20).collect::<Vec<u32>>())
    );
}

fn rails_vector(key: &str, version: RailsVersion) {
    let v = vectors();
    let r = &v[key];
    let iv = unhex12(s(&r["iv_hex"]));
    let rails = Rails::new(
        version,
        Secret::from(s(&r["secret_key_base"])),
        s(&r["cookie_name"]),
    )
    .unwrap();
    let wire = match r.get("cookie_on_wire") {
        Some(w) => s(w).to_owned(),
        None => set_cookie_value(s(&r["set_cookie"])).to_owned(),
    };
    let expected = parse(&r["serialized_json"]);
    for cookie in [s(&r["cookie"]), wire.as_str()] {
        let opened = rails.open(cookie, 1_700_000_000).unwrap();
        assert_eq!(opened.framework, Framework::Rails);
        assert_eq!(opened.data, expected, "{key}");
        assert_eq!((opened.issued_at, opened.expires_at), (None, None));
    }
    // The writer, with the vector's IV through the test-only path, gives the cookie Rack sends.
    let ordered = Ordered::parse(s(&r["serialized_json"]));
    let written = rails
        .write_with_fixed_iv_for_tests(&ordered, None, iv)
        .unwrap();
    assert_eq!(written, wire, "{key}: byte for byte");

    // The other key derivation does not open it.
    let other = match version {
        RailsVersion::V6_1 => RailsVersion::V7_2,
        _ => RailsVersion::V6_1,
    };
    let wrong = Rails::new(
        other,
        Secret::from(s(&r["secret_key_base"])),
        s(&r["cookie_name"]),
    )
    .unwrap();
    assert_eq!(
        wrong.open(s(&r["cookie"]), 0).unwrap_err().kind(),
        ErrorKind::Invalid
    );
    // The signed cookie (cookies.signed[:signed_user] = 42) of the same app.
    let sc = &r["signed_cookie"];
    let signed = RailsSigned::new(
        version,
        Secret::from(s(&r["secret_key_base"])),
        s(&sc["cookie_name"]),
    )
    .unwrap();
    let sc_wire = s(&sc["cookie"]).replace('=', "%3D");
    if let Some(w) = sc.get("cookie_on_wire") {
        assert_eq!(s(w), sc_wire);
    }
    for cookie in [s(&sc["cookie"]), sc_wire.as_str()] {
        let opened = signed.open(cookie, 0).unwrap();
        assert_eq!(opened.data, parse(&sc["value_json"]), "{key} signed");
    }
    assert_eq!(
        signed.write(&parse(&sc["value_json"]), None).unwrap(),
        sc_wire,
        "{key} signed: byte for byte"
    );
    let signed_wrong = RailsSigned::new(
        other,
        Secret::from(s(&r["secret_key_base"])),
        s(&sc["cookie_name"]),
    )
    .unwrap();
    assert_eq!(
        signed_wrong.open(s(&sc["cookie"]), 0).unwrap_err().kind(),
        ErrorKind::Invalid
    );
    // A signed cookie is not an encrypted one, nor the reverse.
    assert_eq!(
        rails.open(s(&sc["cookie"]), 0).unwrap_err().kind(),
        ErrorKind::Invalid
    );

    // Nor does the same app under another cookie name (the purpose differs).
    let renamed = Rails::new(
        version,
        Secret::from(s(&r["secret_key_base"])),
        "_other_session",
    )
    .unwrap();
    assert_eq!(
        renamed.open(s(&r["cookie"]), 0).unwrap_err().kind(),
        ErrorKind::Invalid
    );
}

#[test]
fn rails_6_1_vector_opens_and_reproduces() {
    rails_vector("rails_6_1_encrypted_cookie", RailsVersion::V6_1);
}

#[test]
fn rails_7_2_vector_opens_and_reproduces() {
    rails_vector("rails_7_2_encrypted_cookie", RailsVersion::V7_2);
}

#[test]
fn rails_7_2_expiring_vector() {
    let v = vectors();
    let r = &v["rails_7_2_encrypted_cookie"];
    let e = &r["expiring_cookie"];
    assert_eq!(s(&e["exp"]), "2023-11-14T23:13:20.000Z");
    let exp = 1_700_003_600;
    let rails = Rails::new(
        RailsVersion::V7_2,
        Secret::from(s(&r["secret_key_base"])),
        s(&e["cookie_name"]),
    )
    .unwrap();
    let cookie = s(&e["cookie"]);
    let opened = rails.open(cookie, exp - 1).unwrap();
    assert_eq!(opened.data, parse(&e["value_json"]));
    assert_eq!(opened.expires_at, Some(exp));
    assert_eq!(
        rails.open(cookie, exp).unwrap_err().kind(),
        ErrorKind::Expired
    );
    assert_eq!(rails.open(cookie, exp).unwrap_err().to_string(), "expired");

    let iv = unhex12(s(&r["iv_hex"]));
    let written = rails
        .write_with_fixed_iv_for_tests(&parse(&e["value_json"]), Some(exp), iv)
        .unwrap();
    assert_eq!(
        written,
        cookie
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
}

#[test]
fn rails_data_envelope_and_legacy_plaintexts_open() {
    // Rails 7.1+'s `data` envelope: written by us, read back; the 6.1 writer's default differs.
    let rails = Rails::new(RailsVersion::V7_2, Secret::from("k".repeat(64)), "_s").unwrap();
    let data = rails.clone().with_envelope(RailsEnvelope::Data);
    let c = data
        .write(&json!({"user_id": 1}), Some(2_000_000_000))
        .unwrap();
    assert_ne!(
        c,
        rails
            .write(&json!({"user_id": 1}), Some(2_000_000_000))
            .unwrap()
    );
    let opened = rails.open(&c, 1_999_999_999).unwrap();
    assert_eq!(opened.data, json!({"user_id": 1}));
    assert_eq!(opened.expires_at, Some(2_000_000_000));
    assert_eq!(
        rails.open(&c, 2_000_000_000).unwrap_err().kind(),
        ErrorKind::Expired
    );

    // A plaintext without metadata (Rails 5.x) and one whose purpose is null are accepted, as
    // Rails' second, purpose-less read accepts them; another purpose is not.
    let key = rails_7_key(&"k".repeat(64));
    for (plain, ok) in [
        (r#"{"user_id":2}"#, true),
        (
            r#"{"_rails":{"message":"eyJ1c2VyX2lkIjoyfQ==","exp":null,"pur":null}}"#,
            true,
        ),
        (r#"{"_rails":{"data":{"user_id":2}}}"#, true),
        (
            r#"{"_rails":{"message":"eyJ1c2VyX2lkIjoyfQ==","exp":null,"pur":"cookie._t"}}"#,
            false,
        ),
        (
            r#"{"_rails":{"data":{"user_id":2},"pur":"cookie._s","exp":"not a time"}}"#,
            false,
        ),
        (r#"{"_rails":"x"}"#, false),
    ] {
        let c = rails_encrypt(&key, plain.as_bytes());
        match rails.open(&c, 0) {
            Ok(s) => {
                assert!(ok, "{plain} opened");
                assert_eq!(s.data, json!({"user_id": 2}));
            }
            Err(e) => {
                assert!(!ok, "{plain}: {e}");
                assert_eq!(e.kind(), ErrorKind::Invalid);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Refused serializers, with authentic cookies made here with the frameworks' recipes.

/// Rails 7.x's cookie key, derived here independently of the library.
fn rails_7_key(secret: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        secret.as_bytes(),
        b"authenticated encrypted cookie",
        1000,
        &mut key,
    );
    key
}

fn rails_encrypt(key: &[u8; 32], plain: &[u8]) -> String {
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
    use base64::{engine::general_purpose::STANDARD, Engine};
    let iv = [7u8; 12];
    let mut buf = plain.to_vec();
    let tag = Aes256Gcm::new_from_slice(key)
        .unwrap()
        .encrypt_in_place_detached(Nonce::from_slice(&iv), b"", &mut buf)
        .unwrap();
    format!(
        "{}--{}--{}",
        STANDARD.encode(&buf),
        STANDARD.encode(iv),
        STANDARD.encode(tag)
    )
}

#[test]
fn pickle_and_marshal_are_refused_with_the_reason() {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use hmac::{Hmac, Mac};

    // Pyramid's PickleSerializer: pickle.dumps((1, 2.0, {})) under protocol 4.
    let pickle: &[u8] = b"\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00K\x01G@\x00\x00\x00\x00\x00\x00\x00}\x94\x87\x94.";
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(b"pyramid.session.secret").unwrap();
    mac.update(pickle);
    let mut f = mac.finalize().into_bytes().to_vec();
    f.extend_from_slice(pickle);
    let cookie = URL_SAFE_NO_PAD.encode(&f);
    let err = Pyramid::new(Secret::from("secret"))
        .unwrap()
        .open(&cookie, 0)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("pickle"), "{err}");
    assert!(err.to_string().contains("runs code"), "{err}");

    // Django 4's PickleSerializer.
    use sha2::Digest;
    let key = sha2::Sha256::digest(b"django.contrib.sessions.backends.signed_cookiessignersecret");
    let value = format!("{}:1r31eq", URL_SAFE_NO_PAD.encode(pickle));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(value.as_bytes());
    let cookie = format!(
        "{value}:{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    let err = Django::new(Secret::from("secret"))
        .unwrap()
        .with_max_age(None)
        .open(&cookie, 0)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("pickle"), "{err}");

    // Rails' Marshal cookies (cookies_serializer = :marshal), bare and inside the envelope.
    let secret = "s".repeat(64);
    let rails = Rails::new(RailsVersion::V7_2, Secret::from(secret.as_str()), "_s").unwrap();
    let key = rails_7_key(&secret);
    let marshal = b"\x04\x08{\x06I\"\x0cuser_id\x06:\x06ETi\x06";
    for plain in [
        marshal.to_vec(),
        format!(
            r#"{{"_rails":{{"message":"{}","exp":null,"pur":"cookie._s"}}}}"#,
            base64::engine::general_purpose::STANDARD.encode(marshal)
        )
        .into_bytes(),
    ] {
        let err = rails.open(&rails_encrypt(&key, &plain), 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("Marshal"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }
}

// ---------------------------------------------------------------------------------------------
// Tampering: every single-character change (and deletion) of each valid vector fails.

fn assert_tamper_proof(
    label: &str,
    cookie: &str,
    open: impl Fn(&str) -> Result<LegacySession, Error>,
) {
    open(cookie).unwrap_or_else(|e| panic!("{label}: the untouched cookie must open: {e}"));
    let bytes = cookie.as_bytes();
    let mut tried = 0;
    for i in 0..bytes.len() {
        let mut variants: Vec<Vec<u8>> = (0x20u8..0x7f)
            .filter(|&c| c != bytes[i])
            .map(|c| {
                let mut m = bytes.to_vec();
                m[i] = c;
                m
            })
            .collect();
        let mut deleted = bytes.to_vec();
        deleted.remove(i);
        variants.push(deleted);
        for m in variants {
            let m = String::from_utf8(m).unwrap();
            tried += 1;
            match open(&m) {
                Ok(s) => panic!("{label}: a tampered cookie opened: {m} -> {:?}", s.data),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Invalid, "{label}: {m}");
                    assert_eq!(e.to_string(), "invalid");
                }
            }
        }
    }
    assert_eq!(tried, bytes.len() * 95);
}

#[test]
fn tampered_flask_and_django_cookies_never_open() {
    let v = vectors();
    let f = &v["flask_session"];
    let ts = f["timestamp"].as_u64().unwrap();
    let flask = Flask::new(Secret::from(s(&f["secret_key"]))).unwrap();
    for vector in f["vectors"].as_array().unwrap() {
        assert_tamper_proof("flask", s(&vector["cookie"]), |c| flask.open(c, ts));
    }
    let d = &v["django_signed_cookies_session"];
    let secret = Secret::from(s(&d["secret_key"]));
    let django = Django::new(secret.clone()).unwrap();
    assert_tamper_proof("django", s(&d["cookie"]), |c| django.open(c, ts));
    let signing = Django::new(secret)
        .unwrap()
        .with_salt("django.core.signing");
    for k in ["signing_dumps_hello", "signing_dumps_compressed"] {
        assert_tamper_proof(k, s(&d[k]["signed"]), |c| signing.open(c, ts));
    }
}

#[test]
fn tampered_pyramid_cookies_never_open() {
    let v = vectors();
    let p = &v["pyramid_signed_cookie_session"];
    let ts = p["timestamp"].as_u64().unwrap();
    let pyramid = Pyramid::new(Secret::from(s(&p["secret"]))).unwrap();
    assert_tamper_proof("pyramid", s(&p["cookie"]), |c| pyramid.open(c, ts));
}

#[test]
fn tampered_rails_cookies_never_open() {
    let v = vectors();
    for (key, version) in [
        ("rails_6_1_encrypted_cookie", RailsVersion::V6_1),
        ("rails_7_2_encrypted_cookie", RailsVersion::V7_2),
    ] {
        let r = &v[key];
        let secret = Secret::from(s(&r["secret_key_base"]));
        let rails = Rails::new(version, secret.clone(), s(&r["cookie_name"])).unwrap();
        assert_tamper_proof(key, s(&r["cookie"]), |c| rails.open(c, 1_700_000_000));
        let wire = rails
            .write_with_fixed_iv_for_tests(
                &parse(&r["serialized_json"]),
                None,
                unhex12(s(&r["iv_hex"])),
            )
            .unwrap();
        assert_tamper_proof(key, &wire, |c| rails.open(c, 1_700_000_000));
        let sc = &r["signed_cookie"];
        let signed = RailsSigned::new(version, secret.clone(), s(&sc["cookie_name"])).unwrap();
        assert_tamper_proof(key, s(&sc["cookie"]), |c| signed.open(c, 1_700_000_000));
        let sc_wire = s(&sc["cookie"]).replace('=', "%3D");
        assert_tamper_proof(key, &sc_wire, |c| signed.open(c, 1_700_000_000));
        if let Some(e) = r.get("expiring_cookie") {
            let rails = Rails::new(version, secret, s(&e["cookie_name"])).unwrap();
            assert_tamper_proof(key, s(&e["cookie"]), |c| rails.open(c, 1_700_000_000));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        // Multiples of 1/8 print and parse exactly in every JSON implementation.
        (-8_000_000i64..8_000_000).prop_map(|k| json!(k as f64 / 8.0)),
        "(?s).{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("(?s).{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_secret() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn flask_round_trips(data in arb_json(), secret in arb_secret(), now in 0u64..4_000_000_000) {
        let f = Flask::new(Secret::new(secret)).unwrap();
        let c = f.write(&data, now).unwrap();
        let s = f.open(&c, now).unwrap();
        prop_assert_eq!(s.data, data);
        prop_assert_eq!(s.issued_at, Some(now));
    }

    #[test]
    fn django_round_trips(data in arb_json(), secret in arb_secret(), now in 0u64..4_000_000_000) {
        let d = Django::new(Secret::new(secret)).unwrap();
        let c = d.write(&data, now).unwrap();
        prop_assert!(c.is_ascii());
        let s = d.open(&c, now).unwrap();
        prop_assert_eq!(s.data, data);
        prop_assert_eq!(s.issued_at, Some(now));
    }

    #[test]
    fn pyramid_round_trips(data in arb_json(), secret in arb_secret(), now in 0u64..4_000_000_000) {
        let p = Pyramid::new(Secret::new(secret)).unwrap();
        let c = p.write(&data, now).unwrap();
        let s = p.open(&c, now).unwrap();
        prop_assert_eq!(s.data, data);
        prop_assert_eq!(s.accessed_at, Some(now));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rails_round_trips(
        data in arb_json(),
        secret in arb_secret(),
        v72 in any::<bool>(),
        data_envelope in any::<bool>(),
        exp in prop::option::of(1u64..253_402_300_799),
    ) {
        let version = if v72 { RailsVersion::V7_2 } else { RailsVersion::V6_1 };
        let envelope = if data_envelope { RailsEnvelope::Data } else { RailsEnvelope::Message };
        let r = Rails::new(version, Secret::new(secret), "_app_session").unwrap().with_envelope(envelope);
        let c = r.write(&data, exp).unwrap();
        let s = r.open(&c, exp.map_or(0, |e| e - 1)).unwrap();
        prop_assert_eq!(s.data, data);
        prop_assert_eq!(s.expires_at, exp);
        if let Some(e) = exp {
            prop_assert_eq!(r.open(&c, e).unwrap_err().kind(), ErrorKind::Expired);
        }
    }

    #[test]
    fn rails_signed_round_trips(
        data in arb_json(),
        secret in arb_secret(),
        v72 in any::<bool>(),
        exp in prop::option::of(1u64..253_402_300_799),
    ) {
        let version = if v72 { RailsVersion::V7_2 } else { RailsVersion::V6_1 };
        let r = RailsSigned::new(version, Secret::new(secret), "remember").unwrap();
        let c = r.write(&data, exp).unwrap();
        prop_assert_eq!(&c, &r.write(&data, exp).unwrap(), "deterministic");
        let s = r.open(&c, exp.map_or(0, |e| e - 1)).unwrap();
        prop_assert_eq!(s.data, data);
        prop_assert_eq!(s.expires_at, exp);
        if let Some(e) = exp {
            prop_assert_eq!(r.open(&c, e).unwrap_err().kind(), ErrorKind::Expired);
        }
    }
}

fn all_legacies() -> &'static [Legacy] {
    static ALL: std::sync::LazyLock<Vec<Legacy>> = std::sync::LazyLock::new(|| {
        vec![
            Flask::new(Secret::from("k")).unwrap().into(),
            Pyramid::new(Secret::from("k")).unwrap().into(),
            Django::new(Secret::from("k")).unwrap().into(),
            Rails::new(RailsVersion::V6_1, Secret::from("k"), "_s")
                .unwrap()
                .into(),
        ]
    });
    &ALL
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn malformed_input_is_an_error_not_a_panic(junk in "(?s).{0,300}") {
        for legacy in all_legacies() {
            let r = legacy.open(&junk, 1_700_000_000);
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn cookie_shaped_junk_is_invalid(junk in "[A-Za-z0-9_=+/%.:-]{0,400}") {
        for legacy in all_legacies() {
            let e = legacy.open(&junk, 1_700_000_000).unwrap_err();
            prop_assert_eq!(e.kind(), ErrorKind::Invalid);
        }
    }
}

/// Payload text as the formats carry it: base64url of the bytes, or of their zlib form behind
/// the `.` compression flag.
fn carried(bytes: &[u8], compress: bool) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    if compress {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(bytes).unwrap();
        format!(".{}", URL_SAFE_NO_PAD.encode(z.finish().unwrap()))
    } else {
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Behind a valid MAC or tag: whatever the bytes, an error or a session, never a panic; and
    /// what fails there is never reported as a forgery-style "expired".
    #[test]
    fn authentic_garbage_never_panics(
        junk in "(?s).{0,120}",
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        json_text in arb_json().prop_map(|v| v.to_string()),
        compress in any::<bool>(),
        ts in "[A-Za-z0-9_-]{0,12}",
    ) {
        let [Legacy::Flask(flask), Legacy::Pyramid(pyramid), Legacy::Django(django), Legacy::Rails(rails)] =
            all_legacies()
        else {
            unreachable!()
        };
        for payload in [junk.clone(), carried(&bytes, compress), carried(json_text.as_bytes(), compress)] {
            let _ = flask.open(&flask.sign_for_tests(&junk), 0);
            let _ = flask.open(&flask.sign_for_tests(&format!("{payload}.{ts}")), 0);
            let _ = django.open(&django.sign_for_tests(&junk), 0);
            let _ = django.open(&django.sign_for_tests(&format!("{payload}:{ts}")), 0);
        }
        for plain in [junk.as_bytes(), &bytes, json_text.as_bytes()] {
            let _ = pyramid.open(&pyramid.sign_for_tests(plain), 0);
            let _ = rails.open(&rails.encrypt_for_tests(plain, [0; 12]), 0);
        }
        // Authentic JSON in the right envelope opens.
        let value: Value = serde_json::from_str(&json_text).unwrap();
        let signed = flask.sign_for_tests(&format!("{}.AA", carried(json_text.as_bytes(), compress)));
        prop_assert_eq!(flask.clone().with_max_age(None).open(&signed, 0).unwrap().data, value.clone());
        let signed = django.sign_for_tests(&format!("{}:0", carried(json_text.as_bytes(), compress)));
        // Django reads the JSON as Latin-1 (JSONSerializer.loads), as it always has.
        let latin1: String = json_text.bytes().map(char::from).collect();
        let as_django_reads: Value = serde_json::from_str(&latin1).unwrap();
        prop_assert_eq!(&django.open(&signed, 0).unwrap().data, &as_django_reads);
        let pyramid_state = format!("[0, 0.0, {json_text}]");
        prop_assert_eq!(&pyramid.open(&pyramid.sign_for_tests(pyramid_state.as_bytes()), 0).unwrap().data, &value);
    }
}

#[test]
fn oversized_cookies_are_invalid_before_any_crypto() {
    let big = "a".repeat(cloakroom_interop::MAX_COOKIE_LEN + 1);
    for legacy in all_legacies() {
        assert_eq!(legacy.open(&big, 0).unwrap_err().kind(), ErrorKind::Invalid);
    }
}

#[test]
fn legacy_dispatches_and_names_cookies() {
    let names: Vec<(Framework, String)> = all_legacies()
        .iter()
        .map(|l| (l.framework(), l.cookie_name().to_owned()))
        .collect();
    assert_eq!(
        names,
        [
            (Framework::Flask, "session".to_owned()),
            (Framework::Pyramid, "session".to_owned()),
            (Framework::Django, "sessionid".to_owned()),
            (Framework::Rails, "_s".to_owned()),
        ]
    );
    let flask = Flask::new(Secret::from("k")).unwrap();
    let c = flask.write(&json!({"a": 1}), 10).unwrap();
    let legacies = all_legacies();
    assert_eq!(legacies[0].open(&c, 10).unwrap().data, json!({"a": 1}));
    for other in &legacies[1..] {
        assert_eq!(other.open(&c, 10).unwrap_err().kind(), ErrorKind::Invalid);
    }
}

#[test]
fn debug_never_shows_secrets() {
    let secret = "do-not-print-me-0123456789";
    let shown = format!(
        "{:?} {:?} {:?} {:?} {:?}",
        Secret::from(secret),
        Flask::new(Secret::from(secret)).unwrap(),
        Pyramid::new(Secret::from(secret)).unwrap(),
        Django::new(Secret::from(secret)).unwrap(),
        Rails::new(RailsVersion::V7_2, Secret::from(secret), "_s").unwrap(),
    );
    assert!(!shown.contains("do-not-print"), "{shown}");
    assert!(shown.contains("Flask") && shown.contains("Rails"));
}

// ---------------------------------------------------------------------------------------------
// Both ways against the real packages.

const COUNT: usize = 1000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The venv's Python with flask, pyramid and django, or a failure that says how to make it.
fn venv_python() -> PathBuf {
    let python = repo_root().join("target/venv/bin/python");
    let fix = "run `scripts/test` from the repository root (its setup.d/30-interop.sh makes the \
               venv), or only the venv: `bash -c 'source scripts/lib.sh && venv_ready'`";
    assert!(
        python.exists(),
        "the Python venv {} is missing: {fix}",
        python.display()
    );
    let ok = Command::new(&python)
        .args(["-c", "import flask, pyramid, django"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "flask, pyramid or django is missing from the venv: {fix}"
    );
    python
}

/// Debian's ruby with Rails 6.1's ActionDispatch, or a failure that says how to install it.
fn ruby() -> &'static str {
    let ok = Command::new("ruby")
        .args(["-e", "require 'action_dispatch'; require 'active_support'"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "ruby with Rails 6.1 (ActiveSupport, ActionPack) is missing: run `scripts/test` as root \
         (setup.d/30-interop.sh installs it), or `sudo apt-get install -y ruby ruby-activesupport \
         ruby-actionpack`"
    );
    "ruby"
}

/// Runs a helper script, feeds it `input`, returns its JSON lines.
fn run(program: &Path, args: &[&str], input: &[Value]) -> Vec<Value> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut stdin = child.stdin.take().unwrap();
    let text: String = input.iter().map(|v| format!("{v}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

fn seed() -> u64 {
    rand::thread_rng().gen_range(0..1_000_000_000)
}

fn python_makes(framework: &str) -> (Vec<Value>, u64) {
    let python = venv_python();
    let seed = seed();
    let made = run(
        &python,
        &[
            script("interop.py").to_str().unwrap(),
            "make",
            framework,
            &COUNT.to_string(),
            &seed.to_string(),
        ],
        &[],
    );
    assert_eq!(made.len(), COUNT, "seed {seed}");
    (made, seed)
}

/// The reader of `framework` (Flask, Pyramid or Django) with its defaults and `secret`.
fn python_reader(framework: Framework, secret: &str) -> Legacy {
    let secret = Secret::from(secret);
    match framework {
        Framework::Flask => Flask::new(secret).unwrap().into(),
        Framework::Pyramid => Pyramid::new(secret).unwrap().into(),
        Framework::Django => Django::new(secret).unwrap().into(),
        other => panic!("{other} is not a Python framework"),
    }
}

/// The cookie we write as `framework` (Flask, Pyramid or Django) with its defaults and
/// `secret` would, for `session` at `now`.
fn python_cookie(framework: Framework, secret: &str, session: &Value, now: u64) -> String {
    let secret = Secret::from(secret);
    match framework {
        Framework::Flask => Flask::new(secret).unwrap().write(session, now),
        Framework::Pyramid => Pyramid::new(secret).unwrap().write(session, now),
        Framework::Django => Django::new(secret).unwrap().write(session, now),
        other => panic!("{other} is not a Python framework"),
    }
    .unwrap()
}

fn check_python_made(framework: Framework) {
    let (made, seed) = python_makes(framework.name());
    let mut compressed = 0;
    for item in &made {
        let cookie = s(&item["cookie"]);
        compressed += usize::from(cookie.starts_with('.'));
        let opened = python_reader(framework, s(&item["secret"]))
            .open(cookie, now())
            .unwrap_or_else(|e| panic!("{framework} seed {seed}: {cookie}: {e}"));
        assert_eq!(
            opened.data, item["payload"],
            "{framework} seed {seed}: {cookie}"
        );
        let issued = opened.issued_at.unwrap();
        assert!(
            (item["t0"].as_u64().unwrap()..=item["t1"].as_u64().unwrap()).contains(&issued),
            "{framework} seed {seed}: issued_at {issued}"
        );
    }
    if framework != Framework::Pyramid {
        assert!(
            compressed > 50,
            "{framework}: only {compressed} compressed cookies were tried"
        );
    }
}

#[test]
fn flask_made_by_flask_opens_in_rust() {
    check_python_made(Framework::Flask);
}

#[test]
fn pyramid_made_by_pyramid_opens_in_rust() {
    check_python_made(Framework::Pyramid);
}

#[test]
fn django_made_by_django_opens_in_rust() {
    check_python_made(Framework::Django);
}

/// A random session as an app would hold it: an object of 1-5 members, keys starting with `k`
/// (so none looks like a Flask tag), values nested up to three deep.
fn random_session(rng: &mut impl Rng) -> Value {
    fn text(rng: &mut impl Rng, max: usize) -> String {
        const CHARS: &[char] = &[
            'a', 'Z', '0', ' ', '"', '\\', '/', '<', '>', '&', '\'', '\n', '\t', '\u{1}', '\u{7f}',
            'é', '€', '😀', '\u{2028}', '中', ':', '.', '-', '=',
        ];
        let n = rng.gen_range(0..=max);
        (0..n)
            .map(|_| CHARS[rng.gen_range(0..CHARS.len())])
            .collect()
    }
    fn value(rng: &mut impl Rng, depth: u32) -> Value {
        match rng.gen_range(0..if depth > 0 { 7 } else { 5 }) {
            0 => json!(rng.gen_range(-(1i64 << 53)..(1i64 << 53))),
            1 => json!(rng.gen_range(-8_000_000i64..8_000_000) as f64 / 8.0),
            2 => json!(text(rng, 12)),
            3 => json!(rng.gen::<bool>()),
            4 => Value::Null,
            5 => Value::Array(
                (0..rng.gen_range(0..4))
                    .map(|_| value(rng, depth - 1))
                    .collect(),
            ),
            _ => object(rng, depth - 1),
        }
    }
    fn object(rng: &mut impl Rng, depth: u32) -> Value {
        let n = rng.gen_range(1..=5);
        Value::Object(
            (0..n)
                .map(|_| (format!("k{}", text(rng, 6)), value(rng, depth)))
                .collect(),
        )
    }
    object(rng, 3)
}

fn random_secret(rng: &mut impl Rng) -> String {
    // Non-ASCII on purpose: webob encodes a secret as Latin-1 where it can ('é'), UTF-8 where
    // it cannot ('€'); the others use UTF-8.
    let chars: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789-_!$é€"
        .chars()
        .collect();
    let n = rng.gen_range(8..64);
    (0..n)
        .map(|_| chars[rng.gen_range(0..chars.len())])
        .collect()
}

/// Writes COUNT random cookies with `write(secret, session)`, plus COUNT/10 under a wrong
/// secret, has the framework open them all, and checks it got back exactly what we wrote.
fn check_framework_opens_ours(
    framework: &str,
    program: &Path,
    args: &[&str],
    extra: impl Fn(&str) -> Value,
    write: impl Fn(&str, &Value) -> String,
) {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut inputs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..COUNT + COUNT / 10 {
        let secret = random_secret(&mut rng);
        let session = random_session(&mut rng);
        let cookie = write(&secret, &session);
        let mut line = extra(&secret);
        if i < COUNT {
            expected.push(Some(session));
            line["secret"] = json!(secret);
        } else {
            // Negative controls: the framework must refuse these, or the check proves nothing.
            expected.push(None);
            line["secret"] = json!(format!("{secret}-not-it"));
        }
        line["cookie"] = json!(cookie);
        inputs.push(line);
    }
    let opened = run(program, args, &inputs);
    assert_eq!(opened.len(), inputs.len(), "{framework} seed {seed}");
    for ((got, want), input) in opened.iter().zip(&expected).zip(&inputs) {
        let want = want.clone().unwrap_or(Value::Null);
        assert_eq!(
            got["payload"], want,
            "{framework} seed {seed}: {}",
            input["cookie"]
        );
    }
}

fn python_opens_ours(framework: Framework) {
    let python = venv_python();
    let now = now();
    check_framework_opens_ours(
        framework.name(),
        &python,
        &[
            script("interop.py").to_str().unwrap(),
            "open",
            framework.name(),
        ],
        |_| json!({}),
        |secret, session| python_cookie(framework, secret, session, now),
    );
}

#[test]
fn rust_made_flask_cookies_open_in_flask() {
    python_opens_ours(Framework::Flask);
}

#[test]
fn rust_made_pyramid_cookies_open_in_pyramid() {
    python_opens_ours(Framework::Pyramid);
}

#[test]
fn rust_made_django_cookies_open_in_django() {
    python_opens_ours(Framework::Django);
}

/// Which of Rails' cookie jars a cross-check goes through.
#[derive(Debug, Clone, Copy)]
enum RailsJar {
    /// `cookies.encrypted`, which the session cookie store uses.
    Encrypted,
    /// `cookies.signed`.
    Signed,
}

type Reader = Box<dyn Fn(&str, u64) -> Result<LegacySession, Error>>;

impl RailsJar {
    fn args(self, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = std::iter::once(script("interop.rb").to_str().unwrap())
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        if let RailsJar::Signed = self {
            v.push("signed".to_owned());
        }
        v
    }

    fn reader(self, secret: &str, name: &str) -> Reader {
        let secret = Secret::from(secret);
        match self {
            RailsJar::Encrypted => {
                let r = Rails::new(RailsVersion::V6_1, secret, name).unwrap();
                Box::new(move |c, now| r.open(c, now))
            }
            RailsJar::Signed => {
                let r = RailsSigned::new(RailsVersion::V6_1, secret, name).unwrap();
                Box::new(move |c, now| r.open(c, now))
            }
        }
    }

    fn write(self, secret: &str, name: &str, value: &Value, exp: Option<u64>) -> String {
        let secret = Secret::from(secret);
        match self {
            RailsJar::Encrypted => Rails::new(RailsVersion::V6_1, secret, name)
                .unwrap()
                .write(value, exp)
                .unwrap(),
            RailsJar::Signed => RailsSigned::new(RailsVersion::V6_1, secret, name)
                .unwrap()
                .write(value, exp)
                .unwrap(),
        }
    }
}

fn check_rails_made(jar: RailsJar) {
    let ruby = ruby();
    let seed = seed();
    let args = jar.args(&["make", &COUNT.to_string(), &seed.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let made = run(Path::new(ruby), &args, &[]);
    assert_eq!(made.len(), COUNT);
    let now = now();
    let mut with_exp = 0;
    for item in &made {
        let open = jar.reader(s(&item["secret"]), s(&item["cookie_name"]));
        for cookie in [s(&item["cookie"]), s(&item["cookie_plain"])] {
            let opened =
                open(cookie, now).unwrap_or_else(|e| panic!("{jar:?} seed {seed}: {cookie}: {e}"));
            assert_eq!(
                opened.data, item["payload"],
                "{jar:?} seed {seed}: {cookie}"
            );
            assert_eq!(
                opened.expires_at,
                item["expires_at"].as_u64(),
                "seed {seed}"
            );
        }
        if let Some(exp) = item["expires_at"].as_u64() {
            with_exp += 1;
            assert_eq!(
                open(s(&item["cookie"]), exp).unwrap_err().kind(),
                ErrorKind::Expired
            );
        }
    }
    assert!(
        with_exp > 100,
        "only {with_exp} cookies with an expiry were tried"
    );
}

fn check_rails_opens_ours(jar: RailsJar) {
    let ruby = ruby();
    let now = now();
    let args = jar.args(&["open"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check_framework_opens_ours(
        "rails",
        Path::new(ruby),
        &args,
        |_| json!({"cookie_name": "_myapp_session"}),
        |secret, session| {
            // Every other cookie carries an expiry an hour ahead, as `expire_after` sets it.
            let exp = (secret.len() % 2 == 0).then_some(now + 3600);
            jar.write(secret, "_myapp_session", session, exp)
        },
    );
    // One whose expiry has passed, and one made for another cookie name: Rails refuses both.
    let secret = "s".repeat(64);
    let one = json!({"user_id": 1});
    let now = self::now();
    let stale = jar.write(&secret, "_myapp_session", &one, Some(now - 1));
    let fresh = jar.write(&secret, "_myapp_session", &one, Some(now + 3600));
    let other = jar.write(&secret, "_other_session", &one, None);
    let got = run(
        Path::new(ruby),
        &args,
        &[stale, fresh, other]
            .map(|c| json!({"secret": secret, "cookie_name": "_myapp_session", "cookie": c})),
    );
    let payloads: Vec<&Value> = got.iter().map(|g| &g["payload"]).collect();
    assert_eq!(payloads, [&Value::Null, &one, &Value::Null]);
}

#[test]
fn rails_made_by_rails_opens_in_rust() {
    check_rails_made(RailsJar::Encrypted);
}

#[test]
fn rust_made_rails_cookies_open_in_rails() {
    check_rails_opens_ours(RailsJar::Encrypted);
}

#[test]
fn rails_signed_made_by_rails_opens_in_rust() {
    check_rails_made(RailsJar::Signed);
}

#[test]
fn rust_made_rails_signed_cookies_open_in_rails() {
    check_rails_opens_ours(RailsJar::Signed);
}
