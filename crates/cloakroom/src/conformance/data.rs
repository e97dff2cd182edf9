//! Conformance cases: What records hold: large data, corrupt bytes, unusual user ids.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn big_data<S: Store>(s: &S) -> CaseResult {
    let mut r = fresh();
    let blob: Vec<u8> = (0..64 * 1024).map(|i: u32| (i * 7 + 3) as u8).collect();
    r.data.insert("blob".into(), Value::Binary(blob.clone()));
    r.data
        .insert("text".into(), Value::from("é".repeat(8 * 1024)));
    ok("create", s.create(&r, r.last_seen).await)?;
    let back = must_load(s, &r.id_hash, T0).await?;
    same("64 KiB record", &back, &r)?;
    let mut next = back.clone();
    let mut blob2 = blob;
    blob2.reverse();
    next.data.insert("blob".into(), Value::Binary(blob2));
    ok("update of 64 KiB record", s.update(&next, T0).await)?;
    let back = must_load(s, &r.id_hash, T0).await?;
    same("64 KiB data after update", &back.data, &next.data)
}

pub(super) async fn corrupt<T: ConformanceTarget>(s: &T) -> CaseResult {
    let r = with_user("leo");
    ok("create", s.create(&r, r.last_seen).await)?;
    let fine = with_user("leo");
    ok("create", s.create(&fine, fine.last_seen).await)?;
    ok("inject_corrupt", s.inject_corrupt(&r.id_hash).await)?;
    expect_kind(
        "load of a corrupt record",
        s.load(&r.id_hash, T0).await,
        ErrorKind::Corrupt,
    )?;
    ensure!(
        ok(
            "load of an intact record beside it",
            s.load(&fine.id_hash, T0).await
        )?
        .is_some(),
        "a corrupt record hid another one"
    );
    returns(
        "delete of a corrupt record",
        s.delete(&r.id_hash).await,
        true,
    )?;
    let got = ok(
        "load after deleting the corrupt record",
        s.load(&r.id_hash, T0).await,
    )?;
    ensure!(got.is_none(), "deleted corrupt record still loads");
    Ok(())
}

pub(super) async fn unicode_users<S: Store>(s: &S) -> CaseResult {
    let long: String = "ü".repeat(512); // 1 KiB of UTF-8
    let users = [
        "名前@例え.jp".to_owned(),
        "🦀 rustacean".to_owned(),
        "Zoë 'quote\" back\\slash %_ *".to_owned(),
        long.clone(),
        format!("{long}x"),
    ];
    let mut by_user = BTreeMap::new();
    for u in &users {
        let r = with_user(u);
        ok("create", s.create(&r, r.last_seen).await)?;
        by_user.insert(u.clone(), r);
    }
    for (u, r) in &by_user {
        let back = must_load(s, &r.id_hash, T0).await?;
        same(
            format!("user id of {}…", u.chars().take(8).collect::<String>()),
            &back.user_id,
            &r.user_id,
        )?;
        let want = BTreeSet::from([r.id_hash]);
        sessions_are(s, "sessions of a unicode user", u, T0, want).await?;
        returns(
            "epoch bump of a unicode user",
            s.bump_user_epoch(u).await,
            1,
        )?;
    }
    returns(
        "revoke of the 1 KiB user",
        s.revoke_user_sessions(&long, None).await,
        1,
    )?;
    let other = &by_user[&format!("{long}x")];
    ensure!(
        ok("load", s.load(&other.id_hash, T0).await)?.is_some(),
        "revoking a 1 KiB user id hit a longer one"
    );
    returns(
        "epoch of the longer user",
        s.user_epoch(&format!("{long}x")).await,
        1,
    )?;
    Ok(())
}
