//! Fuzzes Rails encrypted cookie-store cookies (AES-256-GCM, metadata envelope).
//!
//! Arbitrary text opened as a cookie never panics, and nothing but a cookie we wrote opens
//! (spelled with Rack's `%2B`, `%2F`, `%3D` escapes or without them).
//! The same text behind a valid MAC or tag (the `test-vectors` signing path) reaches the
//! parsing after verification: any result but a panic.
#![no_main]

use std::sync::OnceLock;

use cloakroom_interop::{ErrorKind, Rails, RailsVersion, Secret};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

fn fixture() -> &'static (Rails, String) {
    static FIXTURE: OnceLock<(Rails, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let framework = Rails::new(RailsVersion::V7_2, Secret::from("fuzz-secret"), "_app_session").expect("secret");
        let minted = framework
            .write_with_fixed_iv_for_tests("user 42", None, [7; 12])
            .expect("write");
        (framework, minted)
    })
}

fn unescape(s: &str) -> String {
    s.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (framework, minted) = fixture();
    match framework.open(text, NOW) {
        Ok(_) => assert_eq!(unescape(text), unescape(minted), "an input we never wrote opened"),
        Err(e) => assert!(matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Expired)),
    }
    let _ = framework.open(&framework.encrypt_for_tests(data, [7; 12]), NOW);
});
