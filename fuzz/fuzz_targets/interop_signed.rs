//! Fuzzes the signed session cookies of Flask (itsdangerous URLSafeTimedSerializer), Django
//! (django.core.signing) and Pyramid (webob SignedSerializer): every input goes to all three.
//!
//! Arbitrary text opened as a cookie never panics, and nothing but a cookie we wrote opens.
//! The same input behind a valid MAC (the `test-vectors` signing path) reaches the parsing
//! after verification: any result but a panic.
#![no_main]

use std::sync::OnceLock;

use cloakroom_interop::{Django, ErrorKind, Flask, LegacySession, Pyramid, Result, Secret};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

/// One framework's reader, a cookie it wrote, and its way to sign an input for tests.
struct Subject {
    open: Box<dyn Fn(&str) -> Result<LegacySession> + Send + Sync>,
    behind_mac: Box<dyn Fn(&[u8]) -> Option<String> + Send + Sync>,
    minted: String,
}

fn subjects() -> &'static [Subject; 3] {
    static SUBJECTS: OnceLock<[Subject; 3]> = OnceLock::new();
    SUBJECTS.get_or_init(|| {
        let secret = || Secret::from("fuzz-secret");
        let flask = Flask::new(secret()).expect("secret");
        let django = Django::new(secret()).expect("secret");
        let pyramid = Pyramid::new(secret()).expect("secret");
        [
            Subject {
                minted: flask.write("user 42", NOW).expect("write"),
                behind_mac: {
                    let f = flask.clone();
                    Box::new(move |d| std::str::from_utf8(d).ok().map(|t| f.sign_for_tests(t)))
                },
                open: Box::new(move |c| flask.open(c, NOW)),
            },
            Subject {
                minted: django.write("user 42", NOW).expect("write"),
                behind_mac: {
                    let f = django.clone();
                    Box::new(move |d| std::str::from_utf8(d).ok().map(|t| f.sign_for_tests(t)))
                },
                open: Box::new(move |c| django.open(c, NOW)),
            },
            Subject {
                minted: pyramid.write("user 42", NOW).expect("write"),
                behind_mac: {
                    let f = pyramid.clone();
                    Box::new(move |d| Some(f.sign_for_tests(d)))
                },
                open: Box::new(move |c| pyramid.open(c, NOW)),
            },
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    for subject in subjects() {
        if let Ok(text) = std::str::from_utf8(data) {
            match (subject.open)(text) {
                Ok(_) => assert_eq!(text, subject.minted, "an input we never wrote opened"),
                Err(e) => assert!(matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Expired)),
            }
        }
        if let Some(signed) = (subject.behind_mac)(data) {
            let _ = (subject.open)(&signed);
        }
    }
});
