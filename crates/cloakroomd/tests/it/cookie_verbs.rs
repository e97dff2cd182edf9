//! Every cookie verb end to end against an in-process daemon.

use cloakroom_proto::{
    Change, Data, Device, IssuedCookie, Reply, Request, Secret, Status, Value, Verb,
};

use crate::support::{Client, InProcess};

fn issue(c: &mut Client, user: Option<&str>) -> IssuedCookie {
    match c.call(&Request::Issue {
        user_id: user.map(str::to_owned),
        data: Data::new(),
        device: Device::new(),
    }) {
        Reply::Issued(i) => i,
        other => panic!("ISSUE: {other:?}"),
    }
}

fn open(c: &mut Client, cookie: &Secret) -> Reply {
    c.call(&Request::Open {
        cookie: cookie.clone(),
        take_flashes: false,
    })
}

fn set(c: &mut Client, cookie: Option<&Secret>, key: &str, value: i64) -> Reply {
    c.call(&Request::Set {
        cookie: cookie.cloned(),
        changes: vec![Change::Set(key.into(), Value::from(value))],
    })
}

fn csrf(c: &mut Client, cookie: &Secret, verify: Option<&Secret>) -> Reply {
    c.call(&Request::Csrf {
        cookie: cookie.clone(),
        verify: verify.cloned(),
    })
}

fn flash(c: &mut Client, cookie: &Secret, level: &str, message: &str) -> Reply {
    c.call(&Request::Flash {
        cookie: Some(cookie.clone()),
        level: level.into(),
        message: message.into(),
    })
}

fn logout(c: &mut Client, cookie: &Secret) -> Reply {
    c.call(&Request::Logout {
        cookie: cookie.clone(),
    })
}

#[test]
fn issue_open_and_a_cookie_that_does_not_verify() {
    let d = InProcess::start();
    let mut c = d.client();
    let issued = issue(&mut c, None);
    let Reply::Opened(s) = open(&mut c, &issued.cookie) else {
        panic!("OPEN")
    };
    assert_eq!(s.id_hash, issued.id_hash);
    assert_eq!(s.user_id, None);
    assert!(s.cookie.is_none());
    assert!(s.expires_at > 0);
    let forged = Secret::new(format!("{}x", issued.cookie.expose()));
    assert_eq!(open(&mut c, &forged).status(), Status::Invalid);
    assert_eq!(
        open(&mut c, &Secret::new("nonsense")).status(),
        Status::Invalid
    );
    // CSRF for a session without a user: stable across requests, and it verifies.
    let Reply::CsrfToken(token) = csrf(&mut c, &issued.cookie, None) else {
        panic!("CSRF")
    };
    assert_eq!(
        csrf(&mut c, &issued.cookie, Some(&token)),
        Reply::CsrfValid(true)
    );
    assert_eq!(
        csrf(&mut c, &issued.cookie, Some(&s.csrf)),
        Reply::CsrfValid(true),
        "OPEN's token verifies too"
    );
    assert_eq!(
        csrf(&mut c, &issued.cookie, Some(&Secret::new("AAAA"))),
        Reply::CsrfValid(false)
    );
}

#[test]
fn login_cycles_the_id_and_logout_ends_the_session() {
    let d = InProcess::start();
    let mut c = d.client();
    // SET without a cookie creates a session and answers its cookie.
    let Reply::Cookie(Some(anon)) = set(&mut c, None, "cart", 3) else {
        panic!("SET creates a session")
    };
    let Reply::Issued(login) = c.call(&Request::Login {
        cookie: Some(anon.clone()),
        user_id: "950".into(),
        device: Device::new().with_label("laptop"),
    }) else {
        panic!("LOGIN")
    };
    assert_ne!(login.cookie, anon);
    // The old id is dead, the new one carries the data over.
    assert_eq!(open(&mut c, &anon).status(), Status::Expired);
    let Reply::Opened(s) = open(&mut c, &login.cookie) else {
        panic!("OPEN after login")
    };
    assert_eq!(s.user_id.as_deref(), Some("950"));
    assert_eq!(s.data.get("cart"), Some(&Value::from(3)));
    assert_eq!(s.id_hash, login.id_hash);
    // LOGIN with a forged cookie: INVALID.
    assert_eq!(
        c.call(&Request::Login {
            cookie: Some(Secret::new("forged")),
            user_id: "950".into(),
            device: Device::new()
        })
        .status(),
        Status::Invalid
    );
    assert_eq!(logout(&mut c, &login.cookie), Reply::Ended(true));
    assert_eq!(open(&mut c, &login.cookie).status(), Status::Expired);
    assert_eq!(logout(&mut c, &login.cookie), Reply::Ended(false));
    assert_eq!(
        set(&mut c, Some(&login.cookie), "x", 1).status(),
        Status::Expired,
        "an ended session is not brought back"
    );
}

#[test]
fn concurrent_sets_of_different_keys_are_both_kept() {
    let d = InProcess::start();
    let mut c = d.client();
    let issued = issue(&mut c, Some("u1"));
    // 200 SETs in flight at once on one connection, 2 keys each alternately, plus a second
    // connection doing the same with other keys.
    let mut c2 = d.client();
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(c.send(&Request::Set {
            cookie: Some(issued.cookie.clone()),
            changes: vec![Change::Set(format!("a{i}"), Value::from(i))],
        }));
        c2.send(&Request::Set {
            cookie: Some(issued.cookie.clone()),
            changes: vec![Change::Set(format!("b{i}"), Value::from(i))],
        });
    }
    for _ in 0..100 {
        let (_, r) = c.recv(Verb::Set).expect("a reply");
        assert_eq!(r, Reply::Cookie(None));
        let (_, r) = c2.recv(Verb::Set).expect("a reply");
        assert_eq!(r, Reply::Cookie(None));
    }
    let Reply::Opened(s) = open(&mut c, &issued.cookie) else {
        panic!("OPEN")
    };
    for i in 0..100 {
        assert_eq!(s.data.get(&format!("a{i}")), Some(&Value::from(i)), "a{i}");
        assert_eq!(s.data.get(&format!("b{i}")), Some(&Value::from(i)), "b{i}");
    }
    // REMOVE and FLASH.
    assert_eq!(
        c.call(&Request::Remove {
            cookie: issued.cookie.clone(),
            keys: vec!["a1".into(), "b1".into()]
        }),
        Reply::Cookie(None)
    );
    assert_eq!(
        flash(&mut c, &issued.cookie, "success", "Saved."),
        Reply::Cookie(None)
    );
    assert_eq!(
        flash(&mut c, &issued.cookie, "loud", "x").status(),
        Status::BadRequest
    );
    let Reply::Opened(s) = c.call(&Request::Open {
        cookie: issued.cookie.clone(),
        take_flashes: true,
    }) else {
        panic!("OPEN")
    };
    assert!(!s.data.contains_key("a1") && !s.data.contains_key("b1"));
    assert_eq!(s.flashes.len(), 1);
    assert_eq!(s.flashes[0].message, "Saved.");
    let Reply::Opened(s) = open(&mut c, &issued.cookie) else {
        panic!("OPEN")
    };
    assert!(s.flashes.is_empty(), "taken flashes are gone");
    // A reserved key is refused.
    assert_eq!(
        c.call(&Request::Set {
            cookie: Some(issued.cookie.clone()),
            changes: vec![Change::Set("__cloakroom.csrf".into(), Value::Nil)]
        })
        .status(),
        Status::BadRequest
    );
}

#[test]
fn revoking_a_user_expires_their_cookies_and_sign_out_others_keeps_this_one() {
    let d = InProcess::start();
    let mut c = d.client();
    let a = issue(&mut c, Some("950"));
    let b = issue(&mut c, Some("950"));
    let other = issue(&mut c, Some("951"));
    assert_eq!(
        c.call(&Request::SignOutOthers {
            cookie: a.cookie.clone()
        }),
        Reply::Revoked(1)
    );
    assert_eq!(open(&mut c, &b.cookie).status(), Status::Expired);
    assert!(matches!(open(&mut c, &a.cookie), Reply::Opened(_)));
    let c2 = issue(&mut c, Some("950"));
    assert_eq!(
        c.call(&Request::RevokeUser {
            user_id: "950".into()
        }),
        Reply::UserRevoked {
            revoked: 2,
            epoch: 1
        }
    );
    assert_eq!(open(&mut c, &a.cookie).status(), Status::Expired);
    assert_eq!(open(&mut c, &c2.cookie).status(), Status::Expired);
    assert!(matches!(open(&mut c, &other.cookie), Reply::Opened(_)));
    // END_SESSION: only the user's own session, when a user is given.
    assert_eq!(
        c.call(&Request::EndSession {
            id_hash: other.id_hash,
            user_id: Some("950".into())
        }),
        Reply::Ended(false)
    );
    assert_eq!(
        c.call(&Request::EndSession {
            id_hash: other.id_hash,
            user_id: Some("951".into())
        }),
        Reply::Ended(true)
    );
    assert_eq!(open(&mut c, &other.cookie).status(), Status::Expired);
}
