//! Signed and sealed session tokens with a rotating key ring.
//!
//! This is the codec underneath Cloakroom's session cookies. It is sans-IO: it reads no clock
//! (every call takes `now` in unix seconds), no socket and no file. Randomness comes from the
//! thread RNG, or from the caller ([`Codec::seal_with_rng`]). The key-file loaders
//! ([`KeyRing::load`], [`KeyRing::save`], [`KeyRing::from_env`],
//! [`KeyRing::from_env_or_file`], [`read_private_file`]) are the only code that touches a
//! file or the environment, and only when called; they sit behind the `keyfile` feature (on by
//! default), so `default-features = false` leaves the codec alone.
//!
//! Two kinds of token, both valid cookie values:
//!
//! - **signed**, `s1.<kid>.<payload>.<mac>`: the payload is readable by anyone, the MAC
//!   (HMAC-SHA256) stops anyone from altering it. Use it for a session id.
//! - **sealed**, `e1.<kid>.<box>`: XChaCha20-Poly1305, so the data is both secret and
//!   authentic. Use it for session data carried in the cookie.
//!
//! Every token carries its issue time and expiry inside the MAC or tag, and is bound to a
//! *purpose* (usually the cookie name): a token minted for one cookie never opens as another.
//! Opening fails with [`ErrorKind::Invalid`] or [`ErrorKind::Expired`] and nothing more.
//! The byte layout is in `docs/token-format.md`.
//!
//! ```
//! use cloakroom_token::{ErrorKind, KeyRing};
//!
//! let ring = KeyRing::generate()?;
//! let codec = ring.codec("__Host-session")?;
//! let now = 1_700_000_000;
//! let token = codec.sign(b"user 950", now, now + 1800)?;
//! assert_eq!(codec.verify(&token, now + 60)?.payload(), b"user 950");
//! assert_eq!(codec.verify(&token, now + 1800).unwrap_err().kind(), ErrorKind::Expired);
//!
//! let other = ring.codec("csrf")?;
//! assert_eq!(other.verify(&token, now).unwrap_err().kind(), ErrorKind::Invalid);
//!
//! let sealed = codec.seal(b"{\"cart\":[1,2]}", now, now + 1800)?;
//! assert_eq!(codec.unseal(&sealed, now)?.payload(), b"{\"cart\":[1,2]}");
//! # Ok::<(), cloakroom_token::Error>(())
//! ```
//!
//! # Crypto choices, by measurement
//!
//! Measured on the project's build machine (2 cores with SHA-NI and AVX2; `cargo bench -p
//! cloakroom-token`, see `docs/benchmarks.md`):
//!
//! - HMAC-SHA256 and HKDF-SHA256 come from RustCrypto's `hmac`, `sha2` and `hkdf`: `sha2` uses
//!   the SHA-NI instructions, and ring and aws-lc-rs were no faster for HMAC at token sizes.
//!   The keyed HMAC state (with the purpose already absorbed) is made once per codec and
//!   cloned per call, which saves two SHA-256 compressions per verify.
//! - XChaCha20-Poly1305 is HChaCha20 from the `chacha20` crate composed with ring's
//!   ChaCha20-Poly1305: the pure-Rust `chacha20poly1305` crate's AVX2 Poly1305 costs about
//!   1.5 µs on an 80-byte message here, ring's whole seal about 0.2 µs. The composition is
//!   checked against the draft-irtf-cfrg-xchacha vectors and against `chacha20poly1305`.
//! - Nonces come from `rand`'s thread RNG (a CSPRNG seeded by the OS), about 20 ns per nonce
//!   against about 330 ns for a `getrandom` call; master secrets come from `getrandom`.
//!
//! # Secrets
//!
//! [`Secret`]s and derived keys are zeroized on drop, compared in constant time, and never
//! printed: `Debug` on a [`KeyRing`], [`Key`] or [`Codec`] shows key ids only. The keyed HMAC
//! state is overwritten on drop.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod b64;
mod codec;
mod error;
#[cfg(feature = "keyfile")]
mod keyfile;
mod keys;
mod opened;
mod subkeys;
mod xchacha;

// The codec: minting and opening tokens for one purpose.
pub use codec::{
    derive_key, hmac_sha256, inspect, Claims, Codec, Inspected, TokenKind, ENVELOPE_VERSION,
    HKDF_SALT, MAX_TOKEN_LEN,
};
// What opening a token returns.
pub use opened::Opened;
// Errors.
pub use error::{Error, ErrorKind};
// Key files and the environment.
#[cfg(feature = "keyfile")]
pub use keyfile::{read_private_file, KEYS_ENV};
// Keys and the key ring.
pub use keys::{Key, KeyId, KeyRing, Secret, GENERATED_SECRET_LEN, MAX_KEY_ID_LEN, MIN_SECRET_LEN};
