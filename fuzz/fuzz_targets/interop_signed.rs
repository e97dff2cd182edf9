//! Fuzzes the signed session cookies of Flask (itsdangerous URLSafeTimedSerializer), Django
//! (django.core.signing) and Pyramid (webob SignedSerializer): every input goes to all three.
//!
//! Arbitrary text opened as a cookie never panics, and nothing but a cookie we wrote opens.
//! The same input behind a valid MAC (the `test-vectors` signing path) reaches the parsing
//! after verification: any result but a panic.
#![no_main]

use std::sync::OnceLock;

use cloakroom_interop::{Django, ErrorKind, Flask, Legacy, Pyramid, Result, Secret};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

/// One framework's reader, a cookie it wrote, and its way to sign an input for tests.
struct Subject {
    reader: Legacy,
    behind_mac: Box<dyn Fn(&[u8]) -> Option<String> + Send + Sync>,
    minted: String,
}

impl Subject {
    fn new(
        reader: impl Into<Legacy>,
        minted: Result<String>,
        behind_mac: impl Fn(&[u8]) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            reader: reader.into(),
            behind_mac: Box::new(behind_mac),
            minted: minted.expect("write"),
        }
    }
}

/// `sign` for the itsdangerous-style readers, which sign text: nothing for other bytes.
fn text(sign: impl Fn(&str) -> String) -> impl Fn(&[u8]) -> Option<String> {
    move |d| std::str::from_utf8(d).ok().map(&sign)
}

fn subjects() -> &'static [Subject; 3] {
    static SUBJECTS: OnceLock<[Subject; 3]> = OnceLock::new();
    SUBJECTS.get_or_init(|| {
        let secret = || Secret::from("fuzz-secret");
        let flask = Flask::new(secret()).expect("secret");
        let django = Django::new(secret()).expect("secret");
        let pyramid = Pyramid::new(secret()).expect("secret");
        [
            Subject::new(
                flask.clone(),
                flask.write("user 42", NOW),
                text(move |t| flask.sign_for_tests(t)),
            ),
            Subject::new(
                django.clone(),
                django.write("user 42", NOW),
                text(move |t| django.sign_for_tests(t)),
            ),
            Subject::new(
                pyramid.clone(),
                pyramid.write("user 42", NOW),
                move |b| Some(pyramid.sign_for_tests(b)),
            ),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    for subject in subjects() {
        if let Ok(text) = std::str::from_utf8(data) {
            match subject.reader.open(text, NOW) {
                Ok(_) => assert_eq!(text, subject.minted, "an input we never wrote opened"),
                Err(e) => assert!(matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Expired)),
            }
        }
        if let Some(signed) = (subject.behind_mac)(data) {
            let _ = subject.reader.open(&signed, NOW);
        }
    }
});
