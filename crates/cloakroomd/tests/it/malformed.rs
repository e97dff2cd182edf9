//! 10,000 malformed messages against the binary: each answered or dropped as
//! docs/protocol.md says, the daemon stays up, its memory does not grow.

use std::time::Duration;

use cloakroom_proto::{Reply, Request, RequestId, Status, Verb};
use cloakroom_zmq::zmq;
use rand::{Rng, SeedableRng};

use crate::support::{free_port, rss, wait_for_ping, Process};

/// One malformed message, and the status it must get (`None`: dropped).
fn malformed(
    rng: &mut rand::rngs::StdRng,
    id: RequestId,
) -> (Vec<Vec<u8>>, Option<&'static [Status]>) {
    let ping = Request::Ping.encode(id);
    let idb = id.0.to_vec();
    match rng.gen_range(0..10) {
        // Random bytes, one frame: dropped.
        0 => {
            let n = rng.gen_range(0..200);
            (vec![(0..n).map(|_| rng.gen()).collect()], None)
        }
        // Truncated: a delimiter and a version only; or a short request id.
        1 => (vec![vec![], b"CRP1".to_vec()], None),
        2 => (
            vec![
                vec![],
                b"CRP1".to_vec(),
                vec![1; 7],
                b"PING".to_vec(),
                vec![0x80],
            ],
            None,
        ),
        // Another version.
        3 => (
            vec![vec![], b"CRP9".to_vec(), idb, b"PING".to_vec(), vec![0x80]],
            Some(&[Status::BadVersion]),
        ),
        // An unknown verb.
        4 => (
            vec![vec![], b"CRP1".to_vec(), idb, b"FLY".to_vec(), vec![0x80]],
            Some(&[Status::UnknownVerb]),
        ),
        // A 2 MiB body (only sometimes: 1 in 50 messages).
        5 if rng.gen_range(0..5) == 0 => {
            let mut body = vec![0x81, 0xa1, b'x', 0xc6];
            body.extend_from_slice(&(2u32 << 20).to_be_bytes());
            body.resize(2 << 20, 0);
            (
                vec![vec![], b"CRP1".to_vec(), idb, b"SET".to_vec(), body],
                Some(&[Status::TooLarge]),
            )
        }
        // Wrong MessagePack types: LOAD with a string id hash and a negative time.
        6 | 5 => (
            vec![
                vec![],
                b"CRP1".to_vec(),
                idb,
                b"LOAD".to_vec(),
                // {"id_hash": "abc", "now": -1}
                vec![
                    0x82, 0xa7, b'i', b'd', b'_', b'h', b'a', b's', b'h', 0xa3, b'a', b'b', b'c',
                    0xa3, b'n', b'o', b'w', 0xff,
                ],
            ],
            Some(&[Status::BadRequest]),
        ),
        // Random bytes as the body of a real verb.
        7 => {
            let n = rng.gen_range(0..100);
            let body = (0..n).map(|_| rng.gen()).collect();
            (
                vec![vec![], b"CRP1".to_vec(), idb, b"OPEN".to_vec(), body],
                Some(&[Status::BadRequest, Status::TooLarge]),
            )
        }
        // Too many frames.
        8 => {
            let mut f = ping;
            f.push(b"extra".to_vec());
            (f, Some(&[Status::BadRequest]))
        }
        // A body that is not a map, and one nested past the limit.
        _ => {
            let body = if rng.gen() {
                vec![0x93, 1, 2, 3]
            } else {
                let mut b = vec![0x81, 0xa1, b'x'];
                b.extend(std::iter::repeat_n(0x91, 100));
                b.push(0xc0);
                b
            };
            (
                vec![vec![], b"CRP1".to_vec(), idb, b"PING".to_vec(), body],
                Some(&[Status::BadRequest, Status::TooLarge]),
            )
        }
    }
}

/// Sends `count` malformed messages in batches and checks every answer; returns how many
/// were dropped.
fn barrage(sock: &zmq::Socket, rng: &mut rand::rngs::StdRng, count: u64, first_id: u64) -> u64 {
    let mut dropped = 0;
    let mut id = first_id;
    let mut sent = 0;
    while sent < count {
        let mut expected = std::collections::HashMap::new();
        for _ in 0..100.min(count - sent) {
            id += 1;
            sent += 1;
            let rid = RequestId::from_u64(id);
            let (frames, want) = malformed(rng, rid);
            sock.send_multipart(frames, 0).unwrap();
            match want {
                Some(w) => {
                    expected.insert(rid, w);
                }
                None => dropped += 1,
            }
        }
        while !expected.is_empty() {
            let frames = sock
                .recv_multipart(0)
                .unwrap_or_else(|e| panic!("{} answers missing: {e}", expected.len()));
            let rid = Reply::peek_id(&frames).expect("a CRP1 reply");
            let want = expected
                .remove(&rid)
                .expect("a reply to a message that must be dropped, or twice");
            let status = Status::from_bytes(&frames[3]).expect("a status word");
            assert!(
                want.contains(&status),
                "{status} for a message that gets {want:?}"
            );
            // The error body is {"error": str}.
            let (_, reply) =
                Reply::decode(&frames, Verb::Ping, &cloakroom_proto::Limits::default()).unwrap();
            assert!(matches!(reply, Reply::Error { .. }));
        }
    }
    dropped
}

#[test]
fn ten_thousand_malformed_messages_are_answered_or_dropped_and_the_daemon_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let ep = format!("tcp://127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{metrics_port}");
    let p = Process::spawn(dir.path(), &["--bind", &ep, "--metrics", &metrics]);
    let ctx = zmq::Context::new();
    wait_for_ping(&ctx, &ep, Duration::from_secs(20));
    let sock = ctx.socket(zmq::DEALER).unwrap();
    sock.set_linger(0).unwrap();
    sock.set_rcvtimeo(20_000).unwrap();
    sock.set_maxmsgsize(-1).unwrap();
    sock.connect(&ep).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC10A);
    // Warm up with the same mix, then measure.
    let mut dropped = barrage(&sock, &mut rng, 1000, 0);
    let before = rss(p.pid());
    dropped += barrage(&sock, &mut rng, 10_000, 1000);
    let after = rss(p.pid());
    // Still serving.
    wait_for_ping(&ctx, &ep, Duration::from_secs(5));
    let counted = scrape(&metrics, "cloakroomd_bad_frames_total");
    println!("RSS before {before} bytes, after {after}; {dropped} dropped, {counted} counted");
    assert_eq!(counted, dropped, "every dropped message is counted");
    let growth = after as f64 / before as f64;
    assert!(
        (0.9..=1.1).contains(&growth),
        "RSS went from {before} to {after} bytes ({growth:.3}x)"
    );
}

fn scrape(addr: &str, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}
