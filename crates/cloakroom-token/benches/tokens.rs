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
use criterion::{criterion_group, BatchSize, Criterion};

const NOW: u64 = 1_767_225_600;
const NAME: &str = "__Host-session";

fn payload() -> String {
    // 64 bytes of cookie-safe text, so both libraries carry the same bytes.
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_".to_owned()
}

/// The calling thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_THREAD_CPUTIME_ID is supported on
    // every Linux since 2.6.12; the call writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
