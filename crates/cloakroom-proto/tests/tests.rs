//! The CRP1 codec against its document: round trips of every verb and status, the byte
//! examples of docs/protocol.md (read from the document itself), every class of malformed
//! message, and random frames.

use std::collections::BTreeMap;

use cloakroom_proto::{
    Action, Change, Data, DecodeError, Device, ErrorKind, FeedCheck, FeedEvent, FeedMessage,
    FeedTracker, Flash, IdHash, IssuedCookie, Limits, OpenedSession, Record, Reply, Request,
    RequestId, Secret, Status, Value, Verb,
};
use proptest::prelude::*;

const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const DOC: &str = include_str!("../../../docs/protocol.md");

fn id_hash() -> IdHash {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    IdHash(bytes)
}

fn other_hash() -> IdHash {
    IdHash([0xee; 32])
}

fn cookie() -> Secret {
    Secret::new("s1.k1.EXAMPLE")
}

fn record() -> Record {
    let mut r = Record::new(id_hash());
    r.user_id = Some("950".into());
    r.user_epoch = 2;
    r.created = NOW;
    r.last_seen = NOW;
    r.idle_deadline = NOW + 1800;
    r.absolute_deadline = NOW + 43_200;
    r.version = 1;
    r.data
        .insert("cart".into(), Value::Array(vec![1.into(), 2.into()]));
    r.device = Device::new().with_user_agent("curl/8");
    r
}

fn data() -> Data {
    BTreeMap::from([("theme".to_string(), Value::from("dark"))])
}

fn changes() -> Vec<Change> {
    vec![
        Change::Set("theme".into(), Value::from("dark")),
        Change::Remove("cart".into()),
    ]
}

fn opened() -> OpenedSession {
    let mut s = OpenedSession::new(id_hash(), Secret::new("CSRF-EXAMPLE"), NOW + 1800);
    s.user_id = Some("950".into());
    s.data = data();
    s.flashes = vec![Flash::new("success", "Saved.")];
    s
}

/// One request and its `OK` reply per verb: the examples of docs/protocol.md, by name.
fn verb_examples() -> Vec<(&'static str, Request, Reply)> {
    let issued = IssuedCookie::new(cookie(), id_hash(), NOW + 1800);
    vec![
        ("PING", Request::Ping, Reply::pong("0.1.0")),
        (
            "CREATE",
            Request::Create {
                record: record(),
                now: None,
            },
            Reply::Done,
        ),
        (
            "LOAD",
            Request::Load {
                id_hash: id_hash(),
                now: NOW,
            },
            Reply::Record(Box::new(record())),
        ),
        (
            "UPDATE",
            Request::Update {
                record: record(),
                now: NOW,
            },
            Reply::Version(2),
        ),
        (
            "APPLY",
            Request::Apply {
                id_hash: id_hash(),
                changes: changes(),
                now: NOW,
                idle_deadline: NOW + 1800,
            },
            Reply::Applied {
                version: 3,
                idle_deadline: 1_767_227_400,
            },
        ),
        (
            "TOUCH",
            Request::Touch {
                id_hash: id_hash(),
                now: NOW,
                idle_deadline: NOW + 1800,
            },
            Reply::Done,
        ),
        (
            "DELETE",
            Request::Delete { id_hash: id_hash() },
            Reply::Deleted(true),
        ),
        (
            "SESSIONS_OF",
            Request::SessionsOf {
                user_id: "950".into(),
                now: Some(NOW),
            },
            Reply::Sessions(vec![record()]),
        ),
        (
            "REVOKE_USER_SESSIONS",
            Request::RevokeUserSessions {
                user_id: "950".into(),
                except: Some(id_hash()),
            },
            Reply::Revoked(2),
        ),
        (
            "USER_EPOCH",
            Request::UserEpoch {
                user_id: "950".into(),
            },
            Reply::Epoch(2),
        ),
        (
            "BUMP_USER_EPOCH",
            Request::BumpUserEpoch {
                user_id: "950".into(),
            },
            Reply::Epoch(3),
        ),
        (
            "PURGE_EXPIRED",
            Request::PurgeExpired {
                now: NOW,
                limit: 500,
            },
            Reply::Purged(17),
        ),
        (
            "FIND_PREFIX",
            Request::FindPrefix {
                prefix: "0001".into(),
                now: Some(NOW),
            },
            Reply::Sessions(vec![record()]),
        ),
        (
            "STATS",
            Request::Stats { now: Some(NOW) },
            Reply::Stats {
                live: 1200,
                expired_not_purged: 35,
                bytes: Some(524_288),
            },
        ),
        (
            "OPEN",
            Request::Open {
                cookie: cookie(),
                take_flashes: true,
            },
            Reply::Opened(Box::new(opened())),
        ),
        (
            "ISSUE",
            Request::Issue {
                user_id: None,
                data: data(),
                device: Device::new(),
            },
            Reply::Issued(issued.clone()),
        ),
        (
            "LOGIN",
            Request::Login {
                cookie: Some(cookie()),
                user_id: "950".into(),
                device: Device::new().with_label("Work laptop"),
            },
            Reply::Issued(issued),
        ),
        (
            "LOGOUT",
            Request::Logout { cookie: cookie() },
            Reply::Ended(true),
        ),
        (
            "SET",
            Request::Set {
                cookie: Some(cookie()),
                changes: changes(),
            },
            Reply::Cookie(None),
        ),
        (
            "REMOVE",
            Request::Remove {
                cookie: cookie(),
                keys: vec!["cart".into()],
            },
            Reply::Cookie(None),
        ),
        (
            "FLASH",
            Request::Flash {
                cookie: None,
                level: "info".into(),
                message: "Welcome!".into(),
            },
            Reply::Cookie(Some(cookie())),
        ),
        (
            "CSRF",
            Request::Csrf {
                cookie: cookie(),
                verify: None,
            },
            Reply::CsrfToken(Secret::new("CSRF-EXAMPLE")),
        ),
        (
            "CSRF.verify",
            Request::Csrf {
                cookie: cookie(),
                verify: Some(Secret::new("CSRF-EXAMPLE")),
            },
            Reply::CsrfValid(true),
        ),
        (
            "SIGN_OUT_OTHERS",
            Request::SignOutOthers { cookie: cookie() },
            Reply::Revoked(1),
        ),
        (
            "REVOKE_USER",
            Request::RevokeUser {
                user_id: "950".into(),
            },
            Reply::UserRevoked {
                revoked: 3,
                epoch: 3,
            },
        ),
        (
            "END_SESSION",
            Request::EndSession {
                id_hash: other_hash(),
                user_id: Some("950".into()),
            },
            Reply::Ended(false),
        ),
    ]
}

fn feed_examples() -> Vec<(&'static str, FeedMessage)> {
    let stream = *b"\x8a\x01\x02\x03\x04\x05\x06\x07";
    vec![
        (
            "feed.session",
            FeedMessage::new(
                stream,
                41,
                FeedEvent::Session {
                    id_hash: id_hash(),
                    user_id: Some("950".into()),
                    epoch: 2,
                },
            ),
        ),
        (
            "feed.user",
            FeedMessage::new(
                stream,
                42,
                FeedEvent::User {
                    user_id: "950".into(),
                    epoch: 3,
                    except: None,
                },
            ),
        ),
        (
            "feed.heartbeat",
            FeedMessage::new(stream, 42, FeedEvent::Heartbeat),
        ),
    ]
}

fn id() -> RequestId {
    RequestId::from_u64(1)
}

fn limits() -> Limits {
    Limits::default()
}

// ---------------------------------------------------------------------------------------
// Round trips

#[test]
fn every_verb_round_trips_with_its_reply() {
    let examples = verb_examples();
    for verb in Verb::ALL {
        assert!(
            examples.iter().any(|(_, r, _)| r.verb() == *verb),
            "no example of {verb}"
        );
    }
    for (name, request, reply) in examples {
        let id = RequestId::from_u64(0x0102_0304_0506_0708);
        let frames = request.encode(id);
        assert_eq!(frames.len(), 5, "{name}");
        assert_eq!(frames[3], request.verb().as_str().as_bytes());
        assert_eq!(
            Request::decode(&frames, &limits()),
            Ok((id, request.clone())),
            "{name}"
        );

        let frames = reply.encode(id);
        assert_eq!(frames[3], b"OK", "{name}");
        assert_eq!(
            Reply::decode(&frames, request.verb(), &limits()),
            Ok((id, reply)),
            "{name}"
        );
        assert_eq!(Reply::peek_id(&frames), Some(id));
    }
}

#[test]
fn every_status_round_trips_as_an_error_reply() {
    for status in Status::ALL.iter().filter(|s| **s != Status::Ok) {
        for verb in Verb::ALL {
            let reply = Reply::error(*status, "the store is down");
            let frames = reply.encode(id());
            assert_eq!(frames[3], status.as_str().as_bytes());
            assert_eq!(Reply::decode(&frames, *verb, &limits()), Ok((id(), reply)));
        }
    }
    assert_eq!(Status::from_bytes(b"OK"), Some(Status::Ok));
    assert_eq!(Status::from_bytes(b"ok"), None);
}

#[test]
fn the_document_lists_every_status_in_order() {
    let section = &DOC[DOC.find("## Statuses").expect("a Statuses section")..];
    let table = &section[section.find("\n|").expect("a table")..];
    let table = &table[..table.find("\n\n").expect("the table ends")];
    let listed: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(listed, all);
}

#[test]
fn error_messages_are_one_line_and_ok_is_never_an_error_status() {
    let reply = Reply::error(Status::Internal, "first line\nsecond line");
    assert_eq!(
        reply,
        Reply::Error {
            status: Status::Internal,
            message: "first line".into()
        }
    );
    let odd = Reply::Error {
        status: Status::Ok,
        message: "oops".into(),
    };
    assert_eq!(odd.status(), Status::Internal);
    assert_eq!(odd.encode(id())[3], b"INTERNAL");
}

#[test]
fn feed_messages_round_trip() {
    for (name, message) in feed_examples() {
        let frames = message.encode();
        assert_eq!(frames[0], message.topic().as_bytes(), "{name}");
        assert_eq!(
            FeedMessage::decode(&frames, &limits()),
            Ok(message),
            "{name}"
        );
    }
}

#[test]
fn secrets_and_data_values_stay_out_of_debug() {
    let request = Request::Set {
        cookie: Some(Secret::new("s1.k1.TOPSECRET")),
        changes: vec![Change::Set("pw".into(), Value::from("hunter2"))],
    };
    let mut r = record();
    r.data.insert("csrf".into(), Value::from("hunter3"));
    let shown = format!(
        "{request:?} {r:?} {:?} {:?}",
        opened(),
        Reply::Issued(IssuedCookie::new(
            Secret::new("s1.k1.TOPSECRET"),
            id_hash(),
            1
        ))
    );
    for secret in ["TOPSECRET", "hunter2", "hunter3", "CSRF-EXAMPLE", "dark"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("pw") && shown.contains("csrf"));
}

// ---------------------------------------------------------------------------------------
// The document's byte examples

/// Frames of every `<!-- example NAME -->` block in docs/protocol.md, by name.
fn doc_examples() -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let marker = "<!-- example ";
    let mut rest = DOC;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let name = rest[..rest.find(" -->").expect("marker end")]
            .trim()
            .to_string();
        let start = rest.find("```text\n").expect("block after marker") + 8;
        let block = &rest[start..];
        let block = &block[..block.find("```").expect("block end")];
        let mut frames: Vec<String> = Vec::new();
        for line in block.lines() {
            if let Some(hex) = line.strip_prefix("frame ") {
                let (_, hex) = hex.split_once(':').expect("frame N: hex");
                frames.push(hex.trim().to_string());
            } else if line.starts_with("         ") && !frames.is_empty() {
                frames.last_mut().unwrap().push_str(line.trim());
            }
        }
        let frames = frames
            .iter()
            .map(|h| {
                hex::decode(h.replace("(empty)", "").replace(' ', ""))
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            })
            .collect();
        assert!(
            out.insert(name.clone(), frames).is_none(),
            "duplicate example {name}"
        );
    }
    out
}

/// Renders frames as the document writes them (64 hex digits a line).
fn render(frames: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for (i, f) in frames.iter().enumerate() {
        let hex = if f.is_empty() {
            "(empty)".to_string()
        } else {
            hex::encode(f)
        };
        let mut chunks = hex.as_bytes().chunks(64);
        out += &format!(
            "frame {i}: {}\n",
            chunks
                .next()
                .map_or("", |c| std::str::from_utf8(c).unwrap())
        );
        for c in chunks {
            out += &format!("         {}\n", std::str::from_utf8(c).unwrap());
        }
    }
    out
}

#[test]
fn docs_byte_examples_are_what_the_codec_writes_and_reads() {
    let doc = doc_examples();
    let mut expected: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for (name, request, reply) in verb_examples() {
        expected.push((format!("{name}.request"), request.encode(id())));
        expected.push((format!("{name}.reply"), reply.encode(id())));
    }
    for (name, message) in feed_examples() {
        expected.push((name.to_string(), message.encode()));
    }
    let bad = Request::decode(
        &[b"".as_slice(), b"CRP2", &id().0, b"PING", b"\x80"],
        &limits(),
    )
    .unwrap_err();
    let (bad_id, bad_reply) = bad.reply().unwrap();
    expected.push(("BAD_VERSION.reply".into(), bad_reply.encode(bad_id)));

    let mut wrong = String::new();
    for (name, frames) in &expected {
        if doc.get(name) != Some(frames) {
            wrong += &format!(
                "<!-- example {name} -->\n```text\n{}```\n\n",
                render(frames)
            );
        }
    }
    for name in doc.keys() {
        assert!(
            expected.iter().any(|(n, _)| n == name),
            "docs/protocol.md has an example this test does not know: {name}"
        );
    }
    assert!(
        wrong.is_empty(),
        "docs/protocol.md disagrees with the codec; the codec writes:\n\n{wrong}"
    );
    // And the codec reads the document's bytes back as the values they were made from.
    for (name, request, reply) in verb_examples() {
        let verb = request.verb();
        let frames = &doc[&format!("{name}.request")];
        assert_eq!(
            Request::decode(frames, &limits()),
            Ok((id(), request)),
            "{name}"
        );
        let frames = &doc[&format!("{name}.reply")];
        assert_eq!(
            Reply::decode(frames, verb, &limits()),
            Ok((id(), reply)),
            "{name}"
        );
    }
    for (name, message) in feed_examples() {
        assert_eq!(
            FeedMessage::decode(&doc[name], &limits()),
            Ok(message),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Malformed messages: the outcomes docs/protocol.md ("Errors and dropped messages") gives

fn ping_frames() -> Vec<Vec<u8>> {
    Request::Ping.encode(id())
}

fn with_body(verb: &str, body: &[u8]) -> Vec<Vec<u8>> {
    vec![
        vec![],
        b"CRP1".to_vec(),
        id().0.to_vec(),
        verb.as_bytes().to_vec(),
        body.to_vec(),
    ]
}

fn outcome(frames: &[Vec<u8>]) -> (ErrorKind, Action) {
    let err: DecodeError = Request::decode(frames, &limits()).unwrap_err();
    assert!(!err.message().contains('\n'));
    (err.kind(), err.action())
}

fn answered(status: Status) -> Action {
    Action::Reply { id: id(), status }
}

#[test]
fn unreadable_headers_are_dropped() {
    let good = ping_frames();
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("no frames", vec![]),
        ("one frame", vec![b"PING".to_vec()]),
        ("two frames", good[..2].to_vec()),
        ("missing delimiter", good[1..].to_vec()),
        ("non-empty delimiter", {
            let mut f = good.clone();
            f[0] = b"x".to_vec();
            f
        }),
        ("short id", {
            let mut f = good.clone();
            f[2] = vec![0; 7];
            f
        }),
        ("long id", {
            let mut f = good.clone();
            f[2] = vec![0; 9];
            f
        }),
    ];
    for (name, frames) in cases {
        assert_eq!(
            outcome(&frames),
            (ErrorKind::Unreadable, Action::Drop),
            "{name}"
        );
        let err = Request::decode(&frames, &limits()).unwrap_err();
        assert_eq!(
            (err.reply(), err.request_id(), err.status()),
            (None, None, None)
        );
    }
}

#[test]
fn readable_headers_are_answered_with_their_request_id() {
    let good = ping_frames();
    let mut bad_version = good.clone();
    bad_version[1] = b"CRP2".to_vec();
    let mut unknown = good.clone();
    unknown[3] = b"FLY".to_vec();
    let mut lower = good.clone();
    lower[3] = b"ping".to_vec();
    let cases: Vec<(&str, Vec<Vec<u8>>, ErrorKind, Status)> = vec![
        (
            "wrong version",
            bad_version,
            ErrorKind::BadVersion,
            Status::BadVersion,
        ),
        (
            "wrong version, 3 frames",
            vec![vec![], b"CRP0".to_vec(), id().0.to_vec()],
            ErrorKind::BadVersion,
            Status::BadVersion,
        ),
        (
            "unknown verb",
            unknown,
            ErrorKind::UnknownVerb,
            Status::UnknownVerb,
        ),
        (
            "verbs are case-sensitive",
            lower,
            ErrorKind::UnknownVerb,
            Status::UnknownVerb,
        ),
        (
            "three frames",
            good[..3].to_vec(),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "four frames",
            good[..4].to_vec(),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "six frames",
            [good.clone(), vec![vec![]]].concat(),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "empty body",
            with_body("PING", b""),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "body an array",
            with_body("PING", b"\x90"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "body a string",
            with_body("PING", b"\xa1x"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "two maps",
            with_body("PING", b"\x80\x80"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "truncated map",
            with_body("PING", b"\x81\xa1k"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "reserved byte",
            with_body("PING", b"\xc1"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "integer key",
            with_body("PING", b"\x81\x01\x02"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "duplicate key",
            with_body("USER_EPOCH", b"\x82\xa7user_id\xa1a\xa7user_id\xa1b"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "missing field",
            with_body("USER_EPOCH", b"\x80"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "string where a number goes",
            with_body("PURGE_EXPIRED", b"\x82\xa3now\xa11\xa5limit\x01"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "negative number",
            with_body("PURGE_EXPIRED", b"\x82\xa3now\xff\xa5limit\x01"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "id hash of 31 bytes",
            with_body(
                "DELETE",
                &[b"\x81\xa7id_hash\xc4\x1f".as_slice(), &[0; 31]].concat(),
            ),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "id hash as a string",
            with_body("DELETE", b"\x81\xa7id_hash\xa2ab"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "change with neither set nor remove",
            with_body("SET", b"\x81\xa7changes\x91\x81\xa3key\xa1k"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "change with both",
            with_body(
                "SET",
                b"\x81\xa7changes\x91\x83\xa3key\xa1k\xa3set\x01\xa6remove\xc3",
            ),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "string not UTF-8",
            with_body("USER_EPOCH", b"\x81\xa7user_id\xa1\xff"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "length prefix beyond the body",
            with_body("USER_EPOCH", b"\x81\xa7user_id\xdb\xff\xff\xff\xff"),
            ErrorKind::Malformed,
            Status::BadRequest,
        ),
        (
            "nested too deep",
            with_body(
                "PING",
                &[b"\x81\xa1k".as_slice(), &[0x91; 40], b"\x01"].concat(),
            ),
            ErrorKind::TooLarge,
            Status::TooLarge,
        ),
        (
            "oversized body",
            with_body("PING", &vec![0xc1; Limits::DEFAULT_MAX_BODY + 1]),
            ErrorKind::TooLarge,
            Status::TooLarge,
        ),
    ];
    for (name, frames, kind, status) in cases {
        assert_eq!(outcome(&frames), (kind, answered(status)), "{name}");
        let err = Request::decode(&frames, &limits()).unwrap_err();
        let (rid, reply) = err.reply().expect(name);
        let back = Reply::decode(&reply.encode(rid), Verb::Ping, &limits()).unwrap();
        assert_eq!(back.1.status(), status, "{name}");
    }
}

#[test]
fn the_body_limit_is_exact_and_configurable() {
    // A valid body of exactly the limit is read; one byte more is TOO_LARGE.
    let filler = |n: usize| {
        let mut body = b"\x81\xa1k\xc6".to_vec();
        let len = n - body.len() - 4;
        body.extend_from_slice(&(len as u32).to_be_bytes());
        body.resize(n, 7);
        body
    };
    let small = limits().with_max_body(1000);
    assert!(Request::decode(&with_body("PING", &filler(1000)), &small).is_ok());
    let err = Request::decode(&with_body("PING", &filler(1001)), &small).unwrap_err();
    assert_eq!(err.status(), Some(Status::TooLarge));
    // Too many values is TOO_LARGE too.
    let few = limits().with_max_values(10);
    let mut body = b"\x81\xa1k\x9f".to_vec();
    body.extend_from_slice(&[1; 15]);
    let err = Request::decode(&with_body("PING", &body), &few).unwrap_err();
    assert_eq!(err.status(), Some(Status::TooLarge));
}

#[test]
fn unknown_fields_are_ignored_and_nil_is_absent() {
    let frames = with_body("PING", b"\x81\xa5extra\x01");
    assert_eq!(
        Request::decode(&frames, &limits()),
        Ok((id(), Request::Ping))
    );
    let frames = with_body("SESSIONS_OF", b"\x82\xa7user_id\xa1u\xa3now\xc0");
    assert_eq!(
        Request::decode(&frames, &limits()),
        Ok((
            id(),
            Request::SessionsOf {
                user_id: "u".into(),
                now: None
            }
        ))
    );
}

/// What decoding `frames` as the reply to `verb` fails with.
fn reply_outcome(frames: &[Vec<u8>], verb: Verb) -> (ErrorKind, Action) {
    let err = Reply::decode(frames, verb, &limits()).unwrap_err();
    (err.kind(), err.action())
}

#[test]
fn bad_replies_are_dropped() {
    let good = Reply::pong("0.1.0").encode(id());
    let mut unknown = good.clone();
    unknown[3] = b"MAYBE".to_vec();
    assert_eq!(
        reply_outcome(&unknown, Verb::Ping),
        (ErrorKind::UnknownStatus, Action::Drop)
    );
    let mut version = good.clone();
    version[1] = b"CRP9".to_vec();
    assert_eq!(
        reply_outcome(&version, Verb::Ping),
        (ErrorKind::BadVersion, Action::Drop)
    );
    // An OK reply of the wrong shape for the verb.
    assert_eq!(
        reply_outcome(&good, Verb::Load),
        (ErrorKind::Malformed, Action::Drop)
    );
    assert_eq!(Reply::peek_id(&good[..2]), None);
}

// ---------------------------------------------------------------------------------------
// The feed tracker

#[test]
fn the_feed_tracker_resyncs_on_gaps_restarts_and_losses() {
    let s1 = [1; 8];
    let s2 = [2; 8];
    let rev = |stream, seq| {
        FeedMessage::new(
            stream,
            seq,
            FeedEvent::User {
                user_id: "u".into(),
                epoch: 1,
                except: None,
            },
        )
    };
    let beat = |stream, seq| FeedMessage::new(stream, seq, FeedEvent::Heartbeat);
    let mut t = FeedTracker::new();
    let steps = [
        (beat(s1, 5), FeedCheck::Resync, "first message"),
        (beat(s1, 5), FeedCheck::InOrder, "heartbeat, nothing new"),
        (rev(s1, 6), FeedCheck::InOrder, "next"),
        (rev(s1, 7), FeedCheck::InOrder, "next"),
        (rev(s1, 9), FeedCheck::Resync, "gap"),
        (rev(s1, 10), FeedCheck::InOrder, "after a gap"),
        (
            beat(s1, 11),
            FeedCheck::Resync,
            "heartbeat shows a lost tail",
        ),
        (rev(s1, 12), FeedCheck::InOrder, "next"),
        (rev(s1, 12), FeedCheck::Resync, "repeat"),
        (rev(s1, 3), FeedCheck::Resync, "backwards"),
        (rev(s2, 4), FeedCheck::Resync, "daemon restarted"),
        (rev(s2, 5), FeedCheck::InOrder, "next"),
        (rev(s2, u64::MAX), FeedCheck::Resync, "gap to the end"),
        (rev(s2, 0), FeedCheck::Resync, "no wrap-around"),
    ];
    for (message, check, name) in steps {
        assert_eq!(t.observe(&message), check, "{name}");
    }
    t.lost();
    assert_eq!(t.observe(&rev(s2, 1)), FeedCheck::Resync, "after lost()");
}

#[test]
fn bad_feed_messages_are_errors() {
    let good = feed_examples()[0].1.encode();
    let mut topic = good.clone();
    topic[0] = b"revoke.planet".to_vec();
    let mut version = good.clone();
    version[1] = b"CRP2".to_vec();
    for frames in [vec![], good[..2].to_vec(), topic, version] {
        let err = FeedMessage::decode(&frames, &limits()).unwrap_err();
        assert_eq!(err.action(), Action::Drop);
    }
}

// ---------------------------------------------------------------------------------------
// Random input

fn frames_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..7)
}

fn check_any(frames: &[Vec<u8>]) {
    match Request::decode(frames, &limits()) {
        Ok((rid, request)) => {
            // Whatever decodes, re-encodes to something that decodes the same.
            assert_eq!(
                Request::decode(&request.encode(rid), &limits()),
                Ok((rid, request))
            );
        }
        Err(e) => {
            let readable = frames.len() >= 3 && frames[0].is_empty() && frames[2].len() == 8;
            assert_eq!(e.request_id().is_some(), readable, "{e}");
            assert!(!e.message().contains('\n'));
        }
    }
    for verb in Verb::ALL {
        let _ = Reply::decode(frames, *verb, &limits());
    }
    let _ = FeedMessage::decode(frames, &limits());
    let _ = Reply::peek_id(frames);
}

proptest! {
    #[test]
    fn random_frames_never_panic(frames in frames_strategy()) {
        check_any(&frames);
    }

    #[test]
    fn random_bodies_under_a_real_header_never_panic(
        verb in prop::sample::select(Verb::ALL.to_vec()),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        check_any(&with_body(verb.as_str(), &body));
    }

    #[test]
    fn mutated_examples_never_panic(
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let examples = verb_examples();
        let (_, request, reply) = &examples[pick.index(examples.len())];
        for mut frames in [request.encode(id()), reply.encode(id())] {
            let body = &mut frames[4];
            let i = at.index(body.len());
            if cut { body.truncate(i) } else { body[i] = byte }
            check_any(&frames);
        }
    }
}
