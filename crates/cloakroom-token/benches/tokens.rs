//! Side-by-side benchmark of cloakroom-token against the `cookie` crate's signed and private
//! jars, with a 64-byte payload. Run: `cargo bench -p cloakroom-token --bench tokens`.
//!
//! The group and function names are fixed so runs can be compared over time:
//! `verify/{cloakroom_signed,cookie_signed}`, `open/{cloakroom_sealed,cookie_private}`,
//! `mint/{cloakroom_signed,cloakroom_sealed,cookie_signed,cookie_private}`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::hint::black_box;

use cloakroom_token::KeyRing;
use cookie::{Cookie, CookieJar, Key};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

const NOW: u64 = 1_767_225_600;
const NAME: &str = "__Host-session";

fn payload() -> String {
    // 64 bytes of cookie-safe text, so both libraries carry the same bytes.
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_".to_owned()
}

fn benches(c: &mut Criterion) {
    let data = payload();
    assert_eq!(data.len(), 64);
    let ring = KeyRing::generate().expect("key ring");
    let codec = ring.codec(NAME).expect("codec");
    let key = Key::generate();

    let signed = codec.sign(data.as_bytes(), NOW, NOW + 1800).unwrap();
    let sealed = codec.seal(data.as_bytes(), NOW, NOW + 1800).unwrap();
    let mut jar = CookieJar::new();
    jar.signed_mut(&key).add(Cookie::new(NAME, data.clone()));
    let cookie_signed = jar.get(NAME).unwrap().clone();
    let mut jar = CookieJar::new();
    jar.private_mut(&key).add(Cookie::new(NAME, data.clone()));
    let cookie_private = jar.get(NAME).unwrap().clone();
    let verifier = CookieJar::new();
    assert!(verifier
        .signed(&key)
        .verify(cookie_signed.clone())
        .is_some());
    assert!(verifier
        .private(&key)
        .decrypt(cookie_private.clone())
        .is_some());

    let mut g = c.benchmark_group("verify");
    g.bench_function("cloakroom_signed", |b| {
        b.iter(|| codec.verify(black_box(&signed), NOW).unwrap())
    });
    // The cookie crate takes the cookie by value: clone it outside the timed part.
    g.bench_function("cookie_signed", |b| {
        b.iter_batched(
            || cookie_signed.clone(),
            |ck| verifier.signed(&key).verify(black_box(ck)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("open");
    g.bench_function("cloakroom_sealed", |b| {
        b.iter(|| codec.unseal(black_box(&sealed), NOW).unwrap())
    });
    g.bench_function("cookie_private", |b| {
        b.iter_batched(
            || cookie_private.clone(),
            |ck| verifier.private(&key).decrypt(black_box(ck)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("mint");
    g.bench_function("cloakroom_signed", |b| {
        b.iter(|| {
            codec
                .sign(black_box(data.as_bytes()), NOW, NOW + 1800)
                .unwrap()
        })
    });
    g.bench_function("cloakroom_sealed", |b| {
        b.iter(|| {
            codec
                .seal(black_box(data.as_bytes()), NOW, NOW + 1800)
                .unwrap()
        })
    });
    // The cookie crate mints through a jar: adding to a jar is its public way to sign.
    g.bench_function("cookie_signed", |b| {
        b.iter_batched(
            || (CookieJar::new(), Cookie::new(NAME, data.clone())),
            |(mut jar, ck)| {
                jar.signed_mut(&key).add(black_box(ck));
                jar
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("cookie_private", |b| {
        b.iter_batched(
            || (CookieJar::new(), Cookie::new(NAME, data.clone())),
            |(mut jar, ck)| {
                jar.private_mut(&key).add(black_box(ck));
                jar
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(tokens, benches);
criterion_main!(tokens);
