//! PING and the store verbs against an in-process daemon.

use cloakroom_proto::{Change, IdHash, Record, Reply, Request, Status, Value};

use crate::support::InProcess;

const NOW: u64 = 1_767_225_600;

fn hash(n: u8) -> IdHash {
    IdHash([n; 32])
}

fn record(n: u8, user: Option<&str>) -> Record {
    let mut r = Record::new(hash(n));
    r.user_id = user.map(str::to_owned);
    r.created = NOW;
    r.last_seen = NOW;
    r.idle_deadline = NOW + 1800;
    r.absolute_deadline = NOW + 43_200;
    r.version = 1;
    r
}

fn status(reply: &Reply) -> Status {
    reply.status()
}

#[test]
fn ping_answers_with_the_protocol_and_version() {
    let d = InProcess::start();
    let mut c = d.client();
    assert_eq!(
        c.call(&Request::Ping),
        Reply::pong(env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_store_verb_round_trips() {
    let d = InProcess::start();
    let mut c = d.client();
    let r = record(1, Some("950"));
    assert_eq!(
        c.call(&Request::Create {
            record: r.clone(),
            now: None
        }),
        Reply::Done
    );
    assert_eq!(
        status(&c.call(&Request::Create {
            record: r.clone(),
            now: None
        })),
        Status::Conflict
    );
    let Reply::Record(loaded) = c.call(&Request::Load {
        id_hash: hash(1),
        now: NOW,
    }) else {
        panic!("LOAD")
    };
    assert_eq!(*loaded, r);
    assert_eq!(
        status(&c.call(&Request::Load {
            id_hash: hash(2),
            now: NOW
        })),
        Status::NotFound
    );
    assert_eq!(
        c.call(&Request::Update {
            record: r.clone(),
            now: NOW + 1
        }),
        Reply::Version(2)
    );
    assert_eq!(
        status(&c.call(&Request::Update {
            record: r.clone(),
            now: NOW + 1
        })),
        Status::Conflict
    );
    let reply = c.call(&Request::Apply {
        id_hash: hash(1),
        changes: vec![
            Change::Set("theme".into(), Value::from("dark")),
            Change::Remove("cart".into()),
        ],
        now: NOW + 2,
        idle_deadline: NOW + 2 + 1800,
    });
    assert_eq!(
        reply,
        Reply::Applied {
            version: 3,
            idle_deadline: NOW + 2 + 1800
        }
    );
    assert_eq!(
        status(&c.call(&Request::Apply {
            id_hash: hash(9),
            changes: vec![],
            now: NOW,
            idle_deadline: NOW + 1
        })),
        Status::NotFound
    );
    assert_eq!(
        c.call(&Request::Touch {
            id_hash: hash(1),
            now: NOW + 3,
            idle_deadline: NOW + 3000
        }),
        Reply::Done
    );
    let Reply::Sessions(list) = c.call(&Request::SessionsOf {
        user_id: "950".into(),
        now: Some(NOW + 3),
    }) else {
        panic!("SESSIONS_OF")
    };
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].data.get("theme"), Some(&Value::from("dark")));
    assert_eq!(list[0].idle_deadline, NOW + 3000);
    assert_eq!(
        c.call(&Request::UserEpoch {
            user_id: "950".into()
        }),
        Reply::Epoch(0)
    );
    assert_eq!(
        c.call(&Request::BumpUserEpoch {
            user_id: "950".into()
        }),
        Reply::Epoch(1)
    );
    c.call(&Request::Create {
        record: record(2, Some("950")),
        now: None,
    });
    assert_eq!(
        c.call(&Request::RevokeUserSessions {
            user_id: "950".into(),
            except: Some(hash(1))
        }),
        Reply::Revoked(1)
    );
    assert_eq!(
        c.call(&Request::Delete { id_hash: hash(1) }),
        Reply::Deleted(true)
    );
    assert_eq!(
        c.call(&Request::Delete { id_hash: hash(1) }),
        Reply::Deleted(false)
    );
    let mut old = record(3, None);
    old.idle_deadline = NOW + 1;
    c.call(&Request::Create {
        record: old,
        now: None,
    });
    assert_eq!(
        c.call(&Request::PurgeExpired {
            now: NOW + 10,
            limit: 100
        }),
        Reply::Purged(1)
    );
}
