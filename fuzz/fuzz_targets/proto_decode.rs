//! Fuzzes the CRP1 decoders (cloakroom-proto): any frames, decoded as a request, as a reply
//! to every verb and as a feed message, never panic; a request that decodes re-encodes to
//! the same request; a request that does not decode is answered exactly when its first
//! three frames are readable, and the answer itself decodes.
#![no_main]

use cloakroom_proto::{FeedMessage, FeedTracker, Limits, Reply, Request, Verb};
use libfuzzer_sys::fuzz_target;

/// The input as frames. First byte: bit 7 set means "a valid header, the verb picked by
/// the second byte, the rest is the body" (to reach body parsing quickly); otherwise its
/// low 3 bits are the frame count, each frame but the last is a length byte and that many
/// bytes, and the last frame is whatever is left.
fn frames(data: &[u8]) -> Vec<Vec<u8>> {
    let Some((&first, rest)) = data.split_first() else {
        return Vec::new();
    };
    if first & 0x80 != 0 {
        let Some((&pick, body)) = rest.split_first() else {
            return Vec::new();
        };
        let verb = Verb::ALL[usize::from(pick) % Verb::ALL.len()];
        return vec![
            Vec::new(),
            b"CRP1".to_vec(),
            vec![0, 0, 0, 0, 0, 0, 0, 1],
            verb.as_str().as_bytes().to_vec(),
            body.to_vec(),
        ];
    }
    let count = usize::from(first & 0x07);
    let mut out = Vec::with_capacity(count);
    let mut rest = rest;
    for i in 0..count {
        if i + 1 == count {
            out.push(rest.to_vec());
            break;
        }
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let len = usize::from(len).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        out.push(frame.to_vec());
        rest = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let frames = frames(data);
    let limits = Limits::default().with_max_body(64 * 1024);
    match Request::decode(&frames, &limits) {
        Ok((id, request)) => {
            let again = Request::decode(&request.encode(id), &limits).expect("re-encoded request");
            assert_eq!(again, (id, request));
        }
        Err(e) => {
            let readable = frames.len() >= 3 && frames[0].is_empty() && frames[2].len() == 8;
            assert_eq!(e.request_id().is_some(), readable, "{e}");
            assert!(!e.message().contains('\n'));
            if let Some((id, reply)) = e.reply() {
                let back = Reply::decode(&reply.encode(id), Verb::Ping, &limits)
                    .expect("an error reply decodes");
                assert_eq!(back, (id, reply));
            }
        }
    }
    for verb in Verb::ALL {
        if let Ok((id, reply)) = Reply::decode(&frames, *verb, &limits) {
            let again = Reply::decode(&reply.encode(id), *verb, &limits).expect("re-encoded reply");
            assert_eq!(again, (id, reply));
        }
    }
    let _ = Reply::peek_id(&frames);
    if let Ok(message) = FeedMessage::decode(&frames, &limits) {
        let _ = FeedTracker::new().observe(&message);
        assert_eq!(FeedMessage::decode(&message.encode(), &limits), Ok(message));
    }
});
