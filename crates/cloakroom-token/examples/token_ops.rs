//! Loops one token operation, for counting its instructions with callgrind (deterministic on a
//! loaded machine, unlike a timer). The same operations as `benches/tokens.rs`, both sides:
//!
//! ```sh
//! cargo build --release -p cloakroom-token --example token_ops
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='token_ops::run' \
//!     target/release/examples/token_ops verify 10000
//! ```
//!
//! Only `run` (never inlined) is counted: tokens and cookies are made before it, as the bench
//! makes them outside the timed part. Divide the `Collected` instruction count by the count.
//! Operations: `verify`, `cookie_signed`, `unseal` (one token again and again, as a cookie
//! comes back on every request), `unseal_first` (each token opened once), `cookie_private`,
//! `sign`, `seal`.

#![allow(missing_docs)]

use std::hint::black_box;

use cloakroom_token::{Codec, KeyRing};
use cookie::{Cookie, CookieJar, Key};

// The clock the bench measures with.
#[path = "../benches/support/thread_cpu.rs"]
mod thread_cpu;
use thread_cpu::thread_cpu_ns;

const NOW: u64 = 1_767_225_600;
const NAME: &str = "__Host-session";
const PAYLOAD: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

enum Work {
    Ours(Vec<String>),
    Cookies(Vec<Cookie<'static>>),
    Mint,
}

/// Opens every cookie with `open` (the cookie crate's signed or private jar); how many opened.
/// The bench drops the cookie crate's outputs outside the timed part; so does this.
fn open_all(
    cookies: &mut Vec<Cookie<'static>>,
    open: impl Fn(Cookie<'static>) -> Option<Cookie<'static>>,
) -> usize {
    let mut out = Vec::with_capacity(cookies.len());
    for ck in cookies.drain(..) {
        out.push(open(black_box(ck)));
    }
    let ok = out.iter().filter(|c| c.is_some()).count();
    std::mem::forget(out);
    ok
}

#[inline(never)]
fn run(op: &str, codec: &Codec, key: &Key, work: &mut Work, n: usize) -> usize {
    let verifier = CookieJar::new();
    let mut ok = 0;
    match (op, work) {
        ("verify", Work::Ours(tokens)) => {
            for t in tokens.iter().cycle().take(n) {
                ok += usize::from(codec.verify(black_box(t), NOW).is_ok());
            }
        }
        ("unseal" | "unseal_first", Work::Ours(tokens)) => {
            for t in tokens.iter().cycle().take(n) {
                ok += usize::from(codec.unseal(black_box(t), NOW).is_ok());
            }
        }
        ("cookie_signed", Work::Cookies(cookies)) => {
            ok = open_all(cookies, |ck| verifier.signed(key).verify(ck));
        }
        ("cookie_private", Work::Cookies(cookies)) => {
            ok = open_all(cookies, |ck| verifier.private(key).decrypt(ck));
        }
        ("sign", Work::Mint) => {
            for _ in 0..n {
                let token = codec.sign(black_box(PAYLOAD.as_bytes()), NOW, NOW + 1800);
                ok += usize::from(token.is_ok());
            }
        }
        ("seal", Work::Mint) => {
            for _ in 0..n {
                let token = codec.seal(black_box(PAYLOAD.as_bytes()), NOW, NOW + 1800);
                ok += usize::from(token.is_ok());
            }
        }
        (op, _) => panic!("unknown operation {op}"),
    }
    ok
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `time`: the best of 7 rounds, thread CPU time per operation, instead of one round.
    let rounds = if args.first().is_some_and(|a| a == "time") {
        args.remove(0);
        7
    } else {
        1
    };
    let mut args = args.into_iter();
    let op = args.next().unwrap_or_else(|| "verify".to_owned());
    let n: usize = args.next().map_or(10_000, |s| s.parse().expect("a count"));
    let ring = KeyRing::generate().expect("key ring");
    let codec = ring.codec(NAME).expect("codec");
    let key = Key::generate();
    let data = PAYLOAD.as_bytes();
    let mut best = u64::MAX;
    for _ in 0..rounds {
        let mut work = match op.as_str() {
            "verify" => Work::Ours(vec![codec.sign(data, NOW, NOW + 1800).unwrap()]),
            "unseal" => {
                let token = codec.seal(data, NOW, NOW + 1800).unwrap();
                // Opened once already, as a returning cookie is.
                codec.unseal(&token, NOW).unwrap();
                Work::Ours(vec![token])
            }
            "unseal_first" => Work::Ours(
                (0..n)
                    .map(|_| codec.seal(data, NOW, NOW + 1800).unwrap())
                    .collect(),
            ),
            "cookie_signed" | "cookie_private" => {
                let mut jar = CookieJar::new();
                if op == "cookie_signed" {
                    jar.signed_mut(&key).add(Cookie::new(NAME, PAYLOAD));
                } else {
                    jar.private_mut(&key).add(Cookie::new(NAME, PAYLOAD));
                }
                let ck = jar.get(NAME).unwrap().clone();
                Work::Cookies(vec![ck; n])
            }
            _ => Work::Mint,
        };
        let start = thread_cpu_ns();
        let ok = run(&op, &codec, &key, &mut work, n);
        best = best.min(thread_cpu_ns() - start);
        assert_eq!(ok, n, "every operation succeeds");
    }
    if rounds > 1 {
        println!("{op}: {:.1} ns", best as f64 / n as f64);
    } else {
        println!("{op}: {n} ok");
    }
}
