//! Side-by-side benchmark of cloakroom-token against the `cookie` crate's signed and private
//! jars, with a 64-byte payload. Run: `cargo bench -p cloakroom-token --bench tokens`.
//!
//! Time is measured as the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: the build machines are shared and noisy, and a thread's CPU clock stops while another
//! process has the core, so the ratios stay comparable from run to run. Set
//! `CLOAKROOM_BENCH_WALL=1` to measure wall time instead.
//!
//! The group and function names are fixed so runs can be compared over time:
//! `verify/{cloakroom_signed,cookie_signed}`, `open/{cloakroom_sealed,cookie_private}`,
//! `open/cloakroom_sealed_first` (a token never opened before: no cached subkey),
//! `mint/{cloakroom_signed,cloakroom_sealed,cookie_signed,cookie_private}`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::hint::black_box;

use cloakroom_token::KeyRing;
use cookie::{Cookie, CookieJar, Key};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, BatchSize, Bencher, Criterion};

#[path = "support/thread_cpu.rs"]
mod thread_cpu;
use thread_cpu::thread_cpu_ns;

const NOW: u64 = 1_767_225_600;
const NAME: &str = "__Host-session";

fn payload() -> String {
    // 64 bytes of cookie-safe text, so both libraries carry the same bytes.
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_".to_owned()
}

/// Criterion measurement: thread CPU time, formatted like wall time.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

/// Times `f` on a clone of `cookie`: the cookie crate takes cookies by value, so each clone is
/// made outside the timed part.
fn on_clones<M: Measurement, R>(
    b: &mut Bencher<'_, M>,
    cookie: &Cookie<'static>,
    f: impl Fn(Cookie<'static>) -> R,
) {
    b.iter_batched(
        || cookie.clone(),
        |ck| f(black_box(ck)),
        BatchSize::SmallInput,
    );
}

/// Times `add`ing a new cookie holding `value` to a new jar: the cookie crate mints through a
/// jar, adding to one is its public way to sign. Cookie and jar are made outside the timed
/// part, and the jar is dropped outside it.
fn added_to_a_jar<M: Measurement>(
    b: &mut Bencher<'_, M>,
    value: &str,
    add: impl Fn(&mut CookieJar, Cookie<'static>),
) {
    b.iter_batched(
        || (CookieJar::new(), Cookie::new(NAME, value.to_owned())),
        |(mut jar, ck)| {
            add(&mut jar, black_box(ck));
            jar
        },
        BatchSize::SmallInput,
    );
}

fn benches<M: Measurement>(c: &mut Criterion<M>) {
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
    g.bench_function("cookie_signed", |b| {
        on_clones(b, &cookie_signed, |ck| {
            verifier.signed(&key).verify(ck).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("open");
    g.bench_function("cloakroom_sealed", |b| {
        b.iter(|| codec.unseal(black_box(&sealed), NOW).unwrap())
    });
    g.bench_function("cookie_private", |b| {
        on_clones(b, &cookie_private, |ck| {
            verifier.private(&key).decrypt(ck).unwrap()
        })
    });
    // The first open of each token: `open/cloakroom_sealed` opens one token again and again,
    // as a cookie is opened on every request, and so hits the codec's cache of subkeys; here
    // every token is new (minted outside the timed part), so every open computes its subkey
    // and caches it.
    g.bench_function("cloakroom_sealed_first", |b| {
        b.iter_batched(
            || codec.seal(data.as_bytes(), NOW, NOW + 1800).unwrap(),
            |token| codec.unseal(black_box(&token), NOW).unwrap(),
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
    g.bench_function("cookie_signed", |b| {
        added_to_a_jar(b, &data, |jar, ck| jar.signed_mut(&key).add(ck))
    });
    g.bench_function("cookie_private", |b| {
        added_to_a_jar(b, &data, |jar, ck| jar.private_mut(&key).add(ck))
    });
    g.finish();
}

fn cpu() -> Criterion<ThreadCpu> {
    Criterion::default().with_measurement(ThreadCpu)
}

criterion_group! {
    name = tokens;
    config = cpu();
    targets = benches
}
criterion_group!(tokens_wall, benches);

fn main() {
    if std::env::var_os("CLOAKROOM_BENCH_WALL").is_some() {
        tokens_wall();
    } else {
        tokens();
    }
    Criterion::default().configure_from_args().final_summary();
}
