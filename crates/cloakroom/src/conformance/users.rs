//! Conformance cases: The per-user index and epochs: `sessions_of`, a user change, revocation, epochs.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn sessions_of<S: Store>(s: &S) -> CaseResult {
    let a1 = with_user("erin");
    let a2 = with_user("erin");
    let mut expired = with_user("erin");
    expired.idle_deadline = T0 + 10;
    let b = with_user("erin2");
    let anon = fresh();
    for r in [&a1, &a2, &expired, &b, &anon] {
        ok("create", s.create(r, r.last_seen).await)?;
    }
    let want = BTreeSet::from([a1.id_hash, a2.id_hash]);
    let got = sessions_are(s, "ids listed for erin", "erin", T0 + 20, want).await?;
    for rec in &got {
        let want = if rec.id_hash == a1.id_hash { &a1 } else { &a2 };
        same("listed record", rec, want)?;
    }
    let none = ok("sessions_of", s.sessions_of("nobody", T0).await)?;
    ensure!(
        none.is_empty(),
        "sessions_of an unknown user returned {none:?}"
    );
    let prefix = ok("sessions_of", s.sessions_of("eri", T0).await)?;
    ensure!(prefix.is_empty(), "sessions_of matched a user id prefix");
    Ok(())
}

pub(super) async fn user_change<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    let mut logged_in = r.clone();
    logged_in.user_id = Some("frank".into());
    ok("update setting the user", s.update(&logged_in, T0).await)?;
    let only_r = BTreeSet::from([r.id_hash]);
    sessions_are(s, "frank's sessions", "frank", T0, only_r.clone()).await?;
    let mut moved = must_load(s, &r.id_hash, T0).await?;
    moved.user_id = Some("grace".into());
    ok("update changing the user", s.update(&moved, T0).await)?;
    let frank = ok("sessions_of", s.sessions_of("frank", T0).await)?;
    ensure!(
        frank.is_empty(),
        "old user still lists the session after a user change"
    );
    sessions_are(s, "grace's sessions", "grace", T0, only_r).await?;
    returns(
        "revoke of the old user",
        s.revoke_user_sessions("frank", None).await,
        0,
    )?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0).await)?.is_some(),
        "revoking the old user deleted the session"
    );
    Ok(())
}

pub(super) async fn revoke_except<S: Store>(s: &S) -> CaseResult {
    let keep = with_user("heidi");
    let others: Vec<Record> = (0..4).map(|_| with_user("heidi")).collect();
    let bystander = with_user("ivan");
    ok("create", s.create(&keep, keep.last_seen).await)?;
    for r in &others {
        ok("create", s.create(r, r.last_seen).await)?;
    }
    ok("create", s.create(&bystander, bystander.last_seen).await)?;
    let n = ok(
        "revoke except",
        s.revoke_user_sessions("heidi", Some(&keep.id_hash)).await,
    )?;
    same("sessions revoked", n, 4)?;
    let kept = BTreeSet::from([keep.id_hash]);
    sessions_are(s, "heidi's sessions after revoke-except", "heidi", T0, kept).await?;
    for r in &others {
        ensure!(
            ok("load", s.load(&r.id_hash, T0).await)?.is_none(),
            "a revoked session still loads"
        );
    }
    ensure!(
        ok("load", s.load(&bystander.id_hash, T0).await)?.is_some(),
        "another user's session was revoked"
    );
    let n = ok("revoke all", s.revoke_user_sessions("heidi", None).await)?;
    same("sessions revoked by revoke-all", n, 1)?;
    ensure!(
        ok("load", s.load(&keep.id_hash, T0).await)?.is_none(),
        "revoke-all left the kept session"
    );
    returns(
        "revoke of a user with none",
        s.revoke_user_sessions("heidi", None).await,
        0,
    )
}

pub(super) async fn epochs<S: Store>(s: &S) -> CaseResult {
    returns("epoch of a new user", s.user_epoch("judy").await, 0)?;
    returns("first bump", s.bump_user_epoch("judy").await, 1)?;
    returns("second bump", s.bump_user_epoch("judy").await, 2)?;
    returns("epoch read back", s.user_epoch("judy").await, 2)?;
    returns("another user's epoch", s.user_epoch("judy2").await, 0)?;
    // Bumping the epoch alone deletes nothing: the session layer revokes separately.
    let r = with_user("judy");
    ok("create", s.create(&r, r.last_seen).await)?;
    ok("bump", s.bump_user_epoch("judy").await)?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0).await)?.is_some(),
        "bumping the epoch deleted a record"
    );
    Ok(())
}
