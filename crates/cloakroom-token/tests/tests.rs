//! Integration tests of cloakroom-token: known answers, the documented worked example, a
//! cross-check of the sealed kind against RustCrypto, the tamper suite, property tests and the
//! million-mutation test.

use std::collections::HashMap;

use cloakroom_token::{
    derive_key, hmac_sha256, inspect, ErrorKind, Key, KeyId, KeyRing, Secret, TokenKind,
    MAX_TOKEN_LEN,
};
use proptest::prelude::*;

const NOW: u64 = 1_767_225_600;

fn ring_of(secret: &[u8], kid: &str) -> KeyRing {
    let id = KeyId::new(kid).unwrap();
    KeyRing::new(
        vec![Key::new(id.clone(), Secret::new(secret.to_vec()).unwrap())],
        &id,
    )
    .unwrap()
}

/// Blocks of `name = value` lines from a vectors file.
fn blocks(text: &str) -> Vec<HashMap<String, String>> {
    let mut out = vec![];
    let mut cur = HashMap::new();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim_end();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let (k, v) = line.split_once(" =").expect("name = value");
        cur.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    out
}

fn hexval(b: &HashMap<String, String>, k: &str) -> Vec<u8> {
    hex::decode(&b[k]).unwrap_or_else(|e| panic!("{k}: {e}"))
}

/// `derive_key` gives `k_sign` and `k_seal` (hex) for `secret` and `purpose`.
fn assert_derived_keys(secret: &[u8], purpose: &str, k_sign: &str, k_seal: &str) {
    assert_eq!(hex::encode(*derive_key(secret, "sign:", purpose)), k_sign);
    assert_eq!(hex::encode(*derive_key(secret, "seal:", purpose)), k_seal);
}

#[test]
fn known_answer_vectors_both_ways() {
    let text = include_str!("vectors.txt");
    let (mut hmacs, mut signed) = (0, 0);
    for b in blocks(text) {
        match b["kind"].as_str() {
            "hmac" => {
                let mac = hmac_sha256(&hexval(&b, "key"), &hexval(&b, "msg"));
                assert_eq!(hex::encode(mac), b["mac"], "{}", b["comment_text"]);
                hmacs += 1;
            }
            "signed" => {
                let secret = hexval(&b, "secret");
                let purpose = &b["purpose_text"];
                let (iss, exp): (u64, u64) = (
                    b["issued_at_text"].parse().unwrap(),
                    b["expires_at_text"].parse().unwrap(),
                );
                let payload = hexval(&b, "payload");
                assert_derived_keys(&secret, purpose, &b["k_sign"], &b["k_seal"]);
                let codec = ring_of(&secret, &b["kid_text"]).codec(purpose).unwrap();
                // Mint: byte-identical to the independent implementation.
                let token = codec.sign(&payload, iss, exp).unwrap();
                assert_eq!(token, b["token_text"]);
                // Open: the vector's token gives back the inputs.
                let opened = codec.verify(&b["token_text"], iss).unwrap();
                assert_eq!(opened.payload(), payload.as_slice());
                assert_eq!((opened.issued_at(), opened.expires_at()), (iss, exp));
                assert!(opened.minted_with_primary());
                // And dies at its expiry, which is inside the MAC.
                if exp != u64::MAX {
                    assert_eq!(
                        codec.verify(&token, exp).unwrap_err().kind(),
                        ErrorKind::Expired
                    );
                }
                signed += 1;
            }
            other => panic!("unknown vector kind {other}"),
        }
    }
    assert_eq!((hmacs, signed), (3, 4), "vector file lost blocks");
}

/// The worked example in docs/token-format.md, read from the document itself.
#[test]
fn token_format_doc_example() {
    let doc = include_str!("../../../docs/token-format.md");
    let start = doc.find("<!-- worked-example -->").expect("marker");
    let block = &doc[start..];
    let block = &block[block.find("```text\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let f: HashMap<&str, &str> = block
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let secret = hex::decode(f["master secret (hex)"]).unwrap();
    let toml = format!(
        "[[keys]]\nid = \"{}\"\nsecret = \"{}\"\nprimary = true\n",
        f["key id"], f["master secret (base64url)"]
    );
    let ring = KeyRing::from_toml(&toml).unwrap();
    assert_eq!(ring.primary().secret().expose(), secret.as_slice());
    let purpose = f["purpose"];
    assert_derived_keys(&secret, purpose, f["K_sign (hex)"], f["K_seal (hex)"]);
    let codec = ring.codec(purpose).unwrap();
    let (iss, exp) = (
        f["issued_at"].parse().unwrap(),
        f["expires_at"].parse().unwrap(),
    );
    let token = codec
        .sign(f["payload (UTF-8)"].as_bytes(), iss, exp)
        .unwrap();
    assert_eq!(token, f["token"]);
    assert_eq!(
        hex::encode(hmac_sha256(b"SEEKRIT", b"Hello World")),
        f["seed HMAC (hex)"]
    );
}

/// The sealed kind is exactly XChaCha20-Poly1305 as RustCrypto's crate implements it, with
/// the key, nonce and AAD that docs/token-format.md gives.
#[test]
fn sealed_matches_rustcrypto_xchacha() {
    use base64::Engine as _;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::XChaCha20Poly1305;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let secret: Vec<u8> = (0..32).collect();
    let ring = ring_of(&secret, "k1");
    let purpose = "__Host-session";
    let codec = ring.codec(purpose).unwrap();
    for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 200, 1000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let nonce = [len as u8; 24];
        let token = codec
            .seal_with_nonce(&payload, NOW, NOW + 60, &nonce)
            .unwrap();
        let mut aad = vec![0u8, purpose.len() as u8];
        aad.extend_from_slice(purpose.as_bytes());
        aad.extend_from_slice(b"e1.k1.");
        let mut envelope = vec![1u8];
        envelope.extend_from_slice(&NOW.to_be_bytes());
        envelope.extend_from_slice(&(NOW + 60).to_be_bytes());
        envelope.extend_from_slice(&payload);
        let k_seal = derive_key(&secret, "seal:", purpose);
        let cipher = XChaCha20Poly1305::new_from_slice(k_seal.as_ref()).unwrap();
        let ct = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &envelope,
                    aad: &aad,
                },
            )
            .unwrap();
        let mut expect_box = nonce.to_vec();
        expect_box.extend_from_slice(&ct);
        assert_eq!(
            token,
            format!("e1.k1.{}", b64.encode(&expect_box)),
            "len {len}"
        );
        assert_eq!(
            codec.unseal(&token, NOW).unwrap().payload(),
            payload.as_slice()
        );
    }
}

#[test]
fn sealed_tokens_use_fresh_nonces() {
    let ring = KeyRing::generate().unwrap();
    let codec = ring.codec("c").unwrap();
    let a = codec.seal(b"same", NOW, NOW + 1).unwrap();
    let b = codec.seal(b"same", NOW, NOW + 1).unwrap();
    assert_ne!(a, b);
    assert_eq!(codec.open(&a, NOW).unwrap().kind(), TokenKind::Sealed);
}

/// `seal_with_rng` takes its nonce from the caller's RNG: one seed, one token (the nonce is
/// the RNG's first 24 bytes, as `seal_with_nonce` with those bytes shows); another seed,
/// another token; and the token opens.
#[test]
fn seal_with_rng_draws_the_nonce_from_the_callers_rng() {
    use rand::rngs::StdRng;
    use rand::{RngCore as _, SeedableRng as _};
    let ring = KeyRing::generate().unwrap();
    let codec = ring.codec("c").unwrap();
    let seal = |seed| {
        codec
            .seal_with_rng(&mut StdRng::seed_from_u64(seed), b"same", NOW, NOW + 60)
            .unwrap()
    };
    let a = seal(7);
    assert_eq!(a, seal(7));
    assert_ne!(a, seal(8));
    let mut nonce = [0u8; 24];
    StdRng::seed_from_u64(7).fill_bytes(&mut nonce);
    assert_eq!(
        a,
        codec
            .seal_with_nonce(b"same", NOW, NOW + 60, &nonce)
            .unwrap()
    );
    assert_eq!(codec.unseal(&a, NOW).unwrap().payload(), b"same");
}

#[test]
fn rotation_keeps_old_tokens_and_mints_with_the_new_key() {
    let mut ring = KeyRing::generate().unwrap();
    let old = ring.codec("s").unwrap().sign(b"x", NOW, NOW + 10).unwrap();
    let new_id = ring.rotate().unwrap().clone();
    let codec = ring.codec("s").unwrap();
    let opened = codec.verify(&old, NOW).unwrap();
    assert!(!opened.minted_with_primary());
    let fresh = codec.sign(b"x", NOW, NOW + 10).unwrap();
    assert!(fresh.starts_with(&format!("s1.{new_id}.")));
    assert!(codec.verify(&fresh, NOW).unwrap().minted_with_primary());
}

#[test]
fn size_limit_names_the_size() {
    let ring = KeyRing::generate().unwrap();
    let codec = ring.codec("s").unwrap();
    // The largest payloads that fit, exactly at 4096 bytes.
    let max_signed = (0..4096)
        .rev()
        .find(|&n| codec.sign(&vec![0; n], NOW, NOW + 1).is_ok())
        .unwrap();
    let longest = codec
        .sign(&vec![0; max_signed], NOW, NOW + 1)
        .unwrap()
        .len();
    assert!(
        longest <= MAX_TOKEN_LEN && longest > MAX_TOKEN_LEN - 4,
        "{longest}"
    );
    assert_eq!(
        codec
            .sign(&vec![0; max_signed + 1], NOW, NOW + 1)
            .unwrap_err()
            .kind(),
        ErrorKind::TooLarge
    );
    let err = codec.sign(&vec![0; 4000], NOW, NOW + 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(err.to_string().contains("5406 bytes"), "{err}");
    let err = codec.seal(&vec![0; 3100], NOW, NOW + 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(err.to_string().contains("4096"), "{err}");
    assert_eq!(
        codec.sign(b"x", NOW, NOW).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn inspect_reads_without_claiming_validity() {
    let ring = KeyRing::generate().unwrap();
    let codec = ring.codec("s").unwrap();
    let t = codec.sign(b"hello", NOW, NOW + 5).unwrap();
    let i = inspect(&t).unwrap();
    assert_eq!((i.kind, i.key_id.as_str()), (TokenKind::Signed, "k1"));
    let c = i.claims.unwrap();
    assert_eq!(
        (c.issued_at, c.expires_at, c.payload.as_slice()),
        (NOW, NOW + 5, &b"hello"[..])
    );
    let s = codec.seal(b"hello", NOW, NOW + 5).unwrap();
    assert!(inspect(&s).unwrap().claims.is_none());
    assert!(inspect("nonsense").is_err());
}

// ---------------------------------------------------------------------------------------------
// Tamper suite

struct Fixture {
    ring: KeyRing,
    codec: cloakroom_token::Codec,
    tokens: Vec<String>,
}

fn fixture() -> Fixture {
    let mut ring = KeyRing::generate().unwrap();
    ring.rotate().unwrap();
    let codec = ring.codec("__Host-session").unwrap();
    let mut tokens = vec![];
    for payload in [&b""[..], b"u", b"user:950", &[0xffu8; 64], &[7u8; 300]] {
        tokens.push(codec.sign(payload, NOW, NOW + 3600).unwrap());
        tokens.push(codec.seal(payload, NOW, NOW + 3600).unwrap());
    }
    Fixture {
        ring,
        codec,
        tokens,
    }
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";

fn must_not_open(f: &Fixture, original: &str, candidate: &str, what: &str) {
    if candidate == original {
        return;
    }
    if let Ok(opened) = f.codec.open(candidate, NOW) {
        panic!("{what}: {candidate:?} opened (from {original:?}) to {opened:?}");
    }
}

#[test]
fn tamper_suite_nothing_altered_opens() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let f = fixture();
    let mut tried = 0u64;
    for token in &f.tokens {
        assert!(f.codec.open(token, NOW).is_ok());
        let bytes = token.as_bytes();
        // Every single-character substitution, deletion and insertion.
        for i in 0..bytes.len() {
            for &c in ALPHABET {
                let mut t = bytes.to_vec();
                t[i] = c;
                must_not_open(&f, token, std::str::from_utf8(&t).unwrap(), "substitution");
                tried += 1;
            }
            let mut t = bytes.to_vec();
            t.remove(i);
            must_not_open(&f, token, std::str::from_utf8(&t).unwrap(), "deletion");
            let mut t = bytes.to_vec();
            t.insert(i, b'A');
            must_not_open(&f, token, std::str::from_utf8(&t).unwrap(), "insertion");
            tried += 2;
        }
        // Every truncation.
        for n in 0..bytes.len() {
            must_not_open(&f, token, &token[..n], "truncation");
            tried += 1;
        }
        // Every bit flip of every decoded part (payload, MAC, box), re-encoded canonically.
        let parts: Vec<&str> = token.split('.').collect();
        for (pi, part) in parts.iter().enumerate().skip(2) {
            let decoded = b64.decode(part).unwrap();
            for byte in 0..decoded.len() {
                for bit in 0..8 {
                    let mut d = decoded.clone();
                    d[byte] ^= 1 << bit;
                    let mut p = parts.clone();
                    let enc = b64.encode(&d);
                    p[pi] = &enc;
                    must_not_open(&f, token, &p.join("."), "bit flip");
                    tried += 1;
                }
            }
        }
        // The other key id of the ring, with the body unchanged.
        let swapped = if parts[1] == "k2" {
            token.replacen(".k2.", ".k1.", 1)
        } else {
            token.replacen(".k1.", ".k2.", 1)
        };
        must_not_open(&f, token, &swapped, "swapped kid");
        tried += 1;
    }
    // A swapped purpose, and a token from another key ring with the same key ids.
    let other_purpose = f.ring.codec("csrf").unwrap();
    let mut other_ring = KeyRing::generate().unwrap();
    other_ring.rotate().unwrap();
    let other_ring = other_ring.codec("__Host-session").unwrap();
    for token in &f.tokens {
        assert_eq!(
            other_purpose.open(token, NOW).unwrap_err().kind(),
            ErrorKind::Invalid
        );
        assert_eq!(
            other_ring.open(token, NOW).unwrap_err().kind(),
            ErrorKind::Invalid
        );
        tried += 2;
    }
    println!("tamper suite: {tried} altered tokens tried, none opened");
    assert!(tried > 100_000, "the suite shrank: {tried}");
}

// ---------------------------------------------------------------------------------------------
// Property tests

proptest! {
    #[test]
    fn round_trip_any_payload_and_purpose(
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
        purpose in "\\PC{1,40}",
        iss in 0u64..u64::MAX / 2,
        ttl in 1u64..1_000_000,
    ) {
        let ring = KeyRing::generate().unwrap();
        let codec = ring.codec(&purpose).unwrap();
        let signed = codec.sign(&payload, iss, iss + ttl).unwrap();
        let sealed = codec.seal(&payload, iss, iss + ttl).unwrap();
        for token in [&signed, &sealed] {
            prop_assert!(token.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)));
            let opened = codec.open(token, iss).unwrap();
            prop_assert_eq!(opened.payload(), payload.as_slice());
            prop_assert_eq!(opened.expires_at(), iss + ttl);
            prop_assert_eq!(codec.open(token, iss + ttl).unwrap_err().kind(), ErrorKind::Expired);
        }
    }

    #[test]
    fn random_strings_are_invalid_and_never_panic(s in "\\PC{0,300}", prefix in "(s1|e1)\\.k1\\.") {
        let ring = KeyRing::generate().unwrap();
        let codec = ring.codec("p").unwrap();
        prop_assert_eq!(codec.open(&s, NOW).unwrap_err().kind(), ErrorKind::Invalid);
        let shaped = format!("{prefix}{s}");
        prop_assert_eq!(codec.open(&shaped, NOW).unwrap_err().kind(), ErrorKind::Invalid);
        let _ = inspect(&s);
        let _ = inspect(&shaped);
    }
}

// ---------------------------------------------------------------------------------------------
// A million random mutations

/// xorshift64*: fast, deterministic per seed, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// CLOAKROOM_MUTATIONS scales the count (default 1,000,000; CI runs the default). The crypto
/// crates and this crate are built with opt-level 3 even in the test profile (root Cargo.toml).
#[test]
fn million_random_mutations_all_rejected() {
    let count: u64 = std::env::var("CLOAKROOM_MUTATIONS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("CLOAKROOM_MUTATIONS must be a whole number")
        })
        .unwrap_or(1_000_000);
    let f = fixture();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ count);
    let mut rejected = 0u64;
    for _ in 0..count {
        let original = &f.tokens[rng.below(f.tokens.len())];
        let mut t = original.as_bytes().to_vec();
        // One to four edits: substitute, flip a bit of a character, delete, insert, swap.
        for _ in 0..=rng.below(4) {
            let i = rng.below(t.len());
            match rng.below(5) {
                0 => t[i] = ALPHABET[rng.below(ALPHABET.len())],
                1 => t[i] ^= 1 << rng.below(7),
                2 if t.len() > 1 => {
                    t.remove(i);
                }
                3 => t.insert(i, ALPHABET[rng.below(ALPHABET.len())]),
                _ => {
                    let j = rng.below(t.len());
                    t.swap(i, j);
                }
            }
        }
        let Ok(candidate) = String::from_utf8(t) else {
            rejected += 1;
            continue;
        };
        if candidate == *original {
            continue;
        }
        match f.codec.open(&candidate, NOW) {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Invalid);
                rejected += 1;
            }
            Ok(_) => panic!("mutation {candidate:?} of {original:?} opened"),
        }
    }
    println!(
        "million-mutation test: {rejected} of {count} mutations rejected (the rest were no-ops)"
    );
    assert!(
        rejected >= count * 99 / 100,
        "too many no-op mutations: {rejected} of {count}"
    );
}

// ---------------------------------------------------------------------------------------------
// Allocations when opening

/// The system allocator, counting the allocations each thread makes, so a test can say how
/// many heap allocations one call costs (the tests of this binary run on threads of their own).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so this allocator
// upholds exactly `System`'s contract; the counter is a const-initialised thread-local `Cell`
// without a destructor, which touches no heap. `try_with` leaves threads that are tearing down
// their thread-locals uncounted instead of panicking inside the allocator.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as `alloc`.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as `alloc`; `ptr` came from this allocator, which is `System`.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as `realloc`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: CountingAlloc = CountingAlloc;

/// How many heap allocations `f` makes on this thread (its result is dropped uncounted).
fn allocations<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(|n| n.get());
    let out = f();
    (ALLOCATIONS.with(|n| n.get()) - before, out)
}

/// Opening is allocation-free: a token that fails (altered, unknown key, other purpose,
/// expired) costs no heap allocation, and one that opens costs none if its payload fits inside
/// `Opened` (128 bytes: a session id, a CSRF secret, a small record), else one, its payload's
/// vector.
#[test]
fn opening_allocates_only_the_returned_payload() {
    let f = fixture();
    let other = f.ring.codec("csrf").unwrap();
    let late = NOW + 3600;
    for token in &f.tokens {
        let opened = f.codec.open(token, NOW).unwrap();
        let (n, result) = allocations(|| f.codec.open(token, NOW));
        assert_eq!(result.unwrap().payload(), opened.payload());
        let want = u64::from(opened.payload().len() > 128);
        assert_eq!(n, want, "opening {token:?}");

        let mut failures: Vec<(String, u64)> = vec![(token.clone(), late)];
        let bytes = token.as_bytes();
        for i in [3, token.len() / 2, token.len() - 1] {
            let mut t = bytes.to_vec();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            failures.push((String::from_utf8(t).unwrap(), NOW));
        }
        failures.push((token[..token.len() - 1].to_owned(), NOW));
        failures.push((token.replacen(".k", ".x", 1), NOW));
        for (candidate, now) in &failures {
            let (n, result) = allocations(|| f.codec.open(candidate, *now));
            assert!(result.is_err(), "{candidate:?} opened");
            assert_eq!(n, 0, "failing to open {candidate:?} allocated");
        }
        let (n, result) = allocations(|| other.open(token, NOW));
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(n, 0, "opening {token:?} for another purpose allocated");
    }
}
