//! Fuzzes Django signed_cookies session cookies (django.core.signing).
//!
//! Arbitrary text opened as a cookie never panics, and nothing but a cookie we wrote opens.
//! The same text behind a valid MAC or tag (the `test-vectors` signing path) reaches the
//! parsing after verification: any result but a panic.
#![no_main]

use std::sync::OnceLock;

use cloakroom_interop::{ErrorKind, Django, Secret};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

fn fixture() -> &'static (Django, String) {
    static FIXTURE: OnceLock<(Django, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let framework = Django::new(Secret::from("fuzz-secret")).expect("secret");
        let minted = framework
            .write("user 42", NOW)
            .expect("write");
        (framework, minted)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (framework, minted) = fixture();
    match framework.open(text, NOW) {
        Ok(_) => assert_eq!(text, minted, "an input we never wrote opened"),
        Err(e) => assert!(matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Expired)),
    }
    let _ = framework.open(&framework.sign_for_tests(text), NOW);
});
