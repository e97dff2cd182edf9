//! The test data of the Cloakroom workspace, and the one place that reads it.
//!
//! Integration tests of several crates (cloakroom-interop, cloakroom-cli, cloakroom-tower) check
//! themselves against session cookies made by the real Flask, Pyramid, Django and Rails
//! packages. The cookies live in this crate's `data/` folder, inside the repository, so a fresh
//! clone runs every test; `data/README.md` says where they came from and how to check them.
//!
//! This crate is a dev-dependency only; nothing shipped depends on it.
//!
//! ```
//! let v = cloakroom_testdata::interop_vectors();
//! assert_eq!(v["flask_session"]["cookie_name"], "session");
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

use std::path::Path;

/// The path of the interop vectors file, `data/interop-vectors.json` in this crate.
pub const INTEROP_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/interop-vectors.json");

/// [`INTEROP_VECTORS`] as a path.
pub fn interop_vectors_path() -> &'static Path {
    Path::new(INTEROP_VECTORS)
}

/// The interop vectors as JSON: one entry per format (`flask_session`,
/// `pyramid_signed_cookie_session`, `django_signed_cookies_session`,
/// `rails_6_1_encrypted_cookie`, `rails_7_2_encrypted_cookie`, ...), each naming the package
/// versions that made it.
///
/// # Panics
/// If the file cannot be read or is not JSON, with a message naming the file: a test without
/// its vectors must fail, never pass by testing nothing.
pub fn interop_vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(INTEROP_VECTORS).unwrap_or_else(|e| {
        panic!(
            "cannot read the interop vectors at {INTEROP_VECTORS}: {e} \
             (they are tracked in git: crates/cloakroom-testdata/data/)"
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{INTEROP_VECTORS} is not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_framework_the_tests_use_is_there() {
        let v = super::interop_vectors();
        for key in [
            "flask_session",
            "pyramid_signed_cookie_session",
            "django_signed_cookies_session",
            "rails_6_1_encrypted_cookie",
            "rails_7_2_encrypted_cookie",
        ] {
            assert!(
                v[key].is_object(),
                "{key} missing from {}",
                super::INTEROP_VECTORS
            );
        }
    }
}
