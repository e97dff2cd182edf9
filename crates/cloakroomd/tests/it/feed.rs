//! The revocation feed: what it announces, how fast, and gaps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_proto::{
    Data, Device, FeedCheck, FeedEvent, FeedMessage, FeedTracker, Limits, Reply, Request, Verb,
};
use cloakroom_zmq::zmq;

use crate::support::InProcess;

/// A SUB socket on the daemon's feed, returned once a heartbeat shows it is subscribed.
fn subscriber(d: &InProcess, tune: impl FnOnce(&zmq::Socket)) -> zmq::Socket {
    let sub = d.ctx.socket(zmq::SUB).unwrap();
    tune(&sub);
    sub.set_linger(0).unwrap();
    sub.set_rcvtimeo(3000).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(d.daemon().events_endpoint()).unwrap();
    let m = next(&sub).expect("a heartbeat within 3 s");
    assert_eq!(m.event, FeedEvent::Heartbeat);
    sub
}

fn next(sub: &zmq::Socket) -> Option<FeedMessage> {
    let frames = sub.recv_multipart(0).ok()?;
    Some(FeedMessage::decode(&frames, &Limits::default()).expect("a feed message"))
}

/// The next revocation (heartbeats skipped).
fn next_revocation(sub: &zmq::Socket) -> FeedMessage {
    loop {
        let m = next(sub).expect("a revocation");
        if m.event != FeedEvent::Heartbeat {
            return m;
        }
    }
}

fn memory_store(c: &mut cloakroomd::Config) {
    c.store_instance = Some(Arc::new(cloakroom::MemoryStore::new()));
}

#[test]
fn every_ending_is_announced_in_order() {
    let d = InProcess::start_with(memory_store);
    let sub = subscriber(&d, |_| {});
    let mut c = d.client();
    let Reply::Issued(a) = c.call(&Request::Issue {
        user_id: Some("950".into()),
        data: Data::new(),
        device: Device::new(),
    }) else {
        panic!()
    };
    assert_eq!(
        c.call(&Request::Logout { cookie: a.cookie }),
        Reply::Ended(true)
    );
    let m1 = next_revocation(&sub);
    assert_eq!(
        m1.event,
        FeedEvent::Session {
            id_hash: a.id_hash,
            user_id: Some("950".into()),
            epoch: 0
        }
    );
    c.call(&Request::RevokeUser {
        user_id: "950".into(),
    });
    let m2 = next_revocation(&sub);
    assert_eq!(
        m2.event,
        FeedEvent::User {
            user_id: "950".into(),
            epoch: 1,
            except: None
        }
    );
    assert_eq!(m2.seq, m1.seq + 1);
    assert_eq!(m2.stream, m1.stream);
}

#[test]
fn a_revocation_reaches_a_subscriber_within_10_ms() {
    let d = InProcess::start_with(memory_store);
    let sub = subscriber(&d, |_| {});
    let mut c = d.client();
    let mut took = Vec::new();
    for _ in 0..30 {
        let Reply::Issued(s) = c.call(&Request::Issue {
            user_id: None,
            data: Data::new(),
            device: Device::new(),
        }) else {
            panic!()
        };
        let t = Instant::now();
        c.send(&Request::Logout { cookie: s.cookie });
        let m = next_revocation(&sub);
        took.push(t.elapsed());
        assert!(matches!(m.event, FeedEvent::Session { id_hash, .. } if id_hash == s.id_hash));
        c.recv(Verb::Logout).expect("LOGOUT answered");
    }
    took.sort();
    let median = took[took.len() / 2];
    println!(
        "LOGOUT sent -> revoke.session received: median {median:?}, max {:?}",
        took.last().unwrap()
    );
    assert!(median <= Duration::from_millis(10), "median {median:?}");
    assert!(
        *took.last().unwrap() <= Duration::from_millis(100),
        "{took:?}"
    );
}

#[test]
fn a_dropped_feed_message_shows_as_a_gap() {
    let d = InProcess::start_with(memory_store);
    // A subscriber that cannot keep up: libzmq drops what does not fit (PUB's per-subscriber
    // high-water mark, a 1-message receive queue, a small kernel buffer).
    let sub = subscriber(&d, |s| {
        s.set_rcvhwm(1).unwrap();
        s.set_rcvbuf(4096).unwrap();
    });
    let mut c = d.client();
    let n = 5000;
    for i in 0..n {
        c.send(&Request::BumpUserEpoch {
            // Long user ids: 20 MB of feed, more than every buffer on the way holds.
            user_id: format!("gap-{i}-{}", "x".repeat(4096)),
        });
        if i % 500 == 499 {
            for _ in 0..500 {
                c.recv(Verb::BumpUserEpoch).expect("answered");
            }
        }
    }
    // Read it all, heartbeats included (a heartbeat repeats the last number: one after a
    // lost tail shows the gap too), until two heartbeats carry the last number.
    let mut tracker = FeedTracker::new();
    let (mut gaps, mut seen, mut last_seq) = (0, 0, 0);
    let (mut after_gap_in_order, mut first, mut final_beats) = (false, true, 0);
    while let Some(m) = next(&sub) {
        if m.event == FeedEvent::Heartbeat {
            final_beats += u32::from(m.seq == n);
        } else {
            seen += 1;
            assert!(m.seq > last_seq, "sequence numbers only grow");
            last_seq = m.seq;
        }
        let check = tracker.observe(&m);
        if first {
            first = false;
        } else if check == FeedCheck::Resync {
            gaps += 1;
        } else if gaps > 0 {
            after_gap_in_order = true;
        }
        if final_beats >= 2 {
            break;
        }
    }
    println!("{seen} of {n} revocations received, {gaps} gaps seen");
    assert!(
        seen < n as usize,
        "nothing was dropped: the test proves nothing"
    );
    assert!(gaps > 0, "a dropped message must show as a gap");
    assert!(
        after_gap_in_order,
        "the tracker resyncs and carries on in order"
    );
}
