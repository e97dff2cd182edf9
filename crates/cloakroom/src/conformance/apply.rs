//! Conformance cases: `apply`: per-key merges, sliding, gone records, the index, races.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn changes(sets: &[(&str, Value)], removes: &[&str]) -> Changes {
    let mut c = Changes::new();
    for (k, v) in sets {
        c.set(*k, v.clone());
    }
    for k in removes {
        c.remove(*k);
    }
    c
}

pub(super) async fn apply_ok<S: Store>(s: &S) -> CaseResult {
    let mut r = with_user("mallory");
    r.user_epoch = 7;
    r.data.insert("a".into(), Value::from(1));
    r.data.insert("b".into(), Value::from("two"));
    r.data.insert("keep".into(), Value::Binary(vec![9, 9]));
    r.device = Device::new().with_label("tablet");
    ok("create", s.create(&r, r.last_seen).await)?;
    let c = changes(
        &[
            ("a", Value::from(10)),
            ("c", Value::Array(vec![Value::from(true), Value::Nil])),
        ],
        &["b", "never-there"],
    );
    let got = ok(
        "apply",
        s.apply(&r.id_hash, &c, T0 + 10, T0 + 10 + IDLE).await,
    )?;
    same("apply's answer", got, Applied::new(2, T0 + 10 + IDLE))?;
    let back = must_load(s, &r.id_hash, T0 + 11).await?;
    let mut want = r.clone();
    want.data.insert("a".into(), Value::from(10));
    want.data.remove("b");
    want.data.insert(
        "c".into(),
        Value::Array(vec![Value::from(true), Value::Nil]),
    );
    want.version = 2;
    slide(&mut want, T0 + 10);
    same(
        "record after apply (only data, version, last_seen, idle deadline change)",
        &back,
        &want,
    )?;
    // Apply merges onto what is stored now, whoever wrote it: an update in between is kept.
    let mut other = back.clone();
    other.data.insert("d".into(), Value::from("from update"));
    returns("update between applies", s.update(&other, T0 + 12).await, 3)?;
    let got = ok(
        "second apply",
        s.apply(
            &r.id_hash,
            &changes(&[("e", Value::from(5))], &["a"]),
            T0 + 13,
            T0 + 13 + IDLE,
        )
        .await,
    )?;
    same("version after the second apply", got.version, 4)?;
    let back = must_load(s, &r.id_hash, T0 + 14).await?;
    let keys: Vec<&str> = back.data.keys().map(String::as_str).collect();
    same(
        "keys after update and apply",
        keys,
        vec!["c", "d", "e", "keep"],
    )?;
    // A compare-and-swap based on the version apply returned wins.
    returns(
        "update at the version apply returned",
        s.update(&back, T0 + 15).await,
        5,
    )?;
    // An empty change still counts as a write: version and deadline move.
    let got = ok(
        "empty apply",
        s.apply(&r.id_hash, &Changes::new(), T0 + 16, T0 + 16 + IDLE)
            .await,
    )?;
    same("empty apply's answer", got, Applied::new(6, T0 + 16 + IDLE))
}

pub(super) async fn apply_slides<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    ok(
        "touch",
        s.touch(&r.id_hash, T0 + 600, T0 + 600 + IDLE).await,
    )?;
    // A request that started earlier commits later, asking for an earlier deadline.
    let got = ok(
        "apply asking for an earlier idle deadline",
        s.apply(
            &r.id_hash,
            &changes(&[("k", Value::from(1))], &[]),
            T0 + 100,
            T0 + 100 + IDLE,
        )
        .await,
    )?;
    same(
        "idle deadline apply returned",
        got.idle_deadline,
        T0 + 600 + IDLE,
    )?;
    let back = must_load(s, &r.id_hash, T0 + 601).await?;
    same(
        "idle deadline (never shortened)",
        back.idle_deadline,
        T0 + 600 + IDLE,
    )?;
    same("last_seen (never moved back)", back.last_seen, T0 + 600)?;
    same("data", back.data.get("k"), Some(&Value::from(1)))?;
    // Near the end: capped at the absolute deadline.
    let mut r = fresh();
    r.idle_deadline = r.absolute_deadline - 100;
    ok("create", s.create(&r, r.last_seen).await)?;
    let now = r.absolute_deadline - 200;
    let got = ok(
        "apply asking past the absolute deadline",
        s.apply(
            &r.id_hash,
            &changes(&[("k", Value::from(2))], &[]),
            now,
            now + IDLE,
        )
        .await,
    )?;
    same(
        "idle deadline asked past the absolute one",
        got.idle_deadline,
        r.absolute_deadline,
    )?;
    capped_at_absolute(s, &r, now, "apply").await
}

pub(super) async fn apply_gone<S: Store>(s: &S) -> CaseResult {
    let c = changes(&[("k", Value::from("late"))], &[]);
    let never = fresh();
    expect_kind(
        "apply to a never-created id",
        s.apply(&never.id_hash, &c, T0, T0 + IDLE).await,
        ErrorKind::NotFound,
    )?;
    ensure!(
        ok("load", s.load(&never.id_hash, T0).await)?.is_none(),
        "apply created a record"
    );
    let r = with_user("nina");
    ok("create", s.create(&r, r.last_seen).await)?;
    ok("delete", s.delete(&r.id_hash).await)?;
    expect_kind(
        "apply after delete",
        s.apply(&r.id_hash, &c, T0 + 1, T0 + 1 + IDLE).await,
        ErrorKind::NotFound,
    )?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0 + 2).await)?.is_none(),
        "apply brought a deleted record back"
    );
    ensure!(
        ok("sessions_of", s.sessions_of("nina", T0 + 2).await)?.is_empty(),
        "apply brought a deleted record back into its user's list"
    );
    // Expired at the idle deadline: not found, and nothing written (the record as it was
    // still reads back at an earlier time, with the old deadline).
    let idle = fresh();
    ok("create", s.create(&idle, idle.last_seen).await)?;
    expect_kind(
        "apply at the idle deadline",
        s.apply(&idle.id_hash, &c, T0 + IDLE, T0 + 2 * IDLE).await,
        ErrorKind::NotFound,
    )?;
    let back = must_load(s, &idle.id_hash, T0 + IDLE - 1).await?;
    same("record after apply to an expired one", &back, &idle)?;
    // Past the absolute deadline, with a far idle deadline.
    let mut abs = fresh();
    abs.idle_deadline = abs.absolute_deadline + 1000;
    ok("create", s.create(&abs, abs.last_seen).await)?;
    expect_kind(
        "apply at the absolute deadline",
        s.apply(&abs.id_hash, &c, T0 + ABSOLUTE, T0 + ABSOLUTE + IDLE)
            .await,
        ErrorKind::NotFound,
    )?;
    ensure!(
        ok("load", s.load(&abs.id_hash, T0 + ABSOLUTE).await)?.is_none(),
        "apply revived a record past its absolute deadline"
    );
    let back = must_load(s, &abs.id_hash, T0 + ABSOLUTE - 1).await?;
    same("record after apply past the absolute deadline", &back, &abs)
}

pub(super) async fn apply_index<S: Store>(s: &S) -> CaseResult {
    let r = with_user("olga");
    let other = with_user("olga");
    let anon = fresh();
    for rec in [&r, &other, &anon] {
        ok("create", s.create(rec, rec.last_seen).await)?;
    }
    for (i, rec) in [&r, &anon].into_iter().enumerate() {
        let now = T0 + 100 * (i as u64 + 1);
        ok(
            "apply",
            s.apply(
                &rec.id_hash,
                &changes(&[("page", Value::from(i as u64))], &[]),
                now,
                now + IDLE,
            )
            .await,
        )?;
    }
    // Listed at a time only the slid deadline reaches: the index knows the new expiry.
    let later = T0 + IDLE + 50;
    let only_r = BTreeSet::from([r.id_hash]);
    let what = "olga's sessions after apply (the other one expired)";
    let listed = sessions_are(s, what, "olga", later, only_r).await?;
    same(
        "listed data",
        listed[0].data.get("page"),
        Some(&Value::from(0u64)),
    )?;
    same("listed user", listed[0].user_id.as_deref(), Some("olga"))?;
    // (The expired one may or may not still be indexed: stores prune dead entries as they
    // list them.)
    let revoked = ok("revoke", s.revoke_user_sessions("olga", None).await)?;
    ensure!(
        (1..=2).contains(&revoked),
        "revoke after apply revoked {revoked}"
    );
    ensure!(
        ok("load", s.load(&r.id_hash, T0 + 200).await)?.is_none(),
        "revoke missed a session that apply wrote"
    );
    ensure!(
        ok("load", s.load(&anon.id_hash, T0 + 200).await)?.is_some(),
        "revoke removed an anonymous session"
    );
    Ok(())
}

pub(super) async fn apply_race<S: Store>(s: Arc<S>) -> CaseResult {
    const TASKS: u64 = 64;
    const EACH: u64 = 4;
    let r = with_user("pat");
    ok("create", s.create(&r, r.last_seen).await)?;
    let id = r.id_hash;
    let versions = race(&s, TASKS, |s, t| async move {
        let mut versions = Vec::new();
        for i in 0..EACH {
            let mut c = Changes::new();
            c.set(format!("t{t}.{i}"), Value::from(t * 100 + i));
            if i > 0 {
                // Each task also removes the key it set before and sets it again under
                // another name at the end: removes race with sets of other keys.
                c.remove(format!("t{t}.{}", i - 1));
                c.set(format!("done{t}.{}", i - 1), Value::from(true));
            }
            let now = T0 + i;
            match s.apply(&id, &c, now, now + IDLE).await {
                Ok(applied) => versions.push(applied.version),
                Err(e) => {
                    return Err(format!(
                        "apply {t}.{i}: {:?} {e} (an overlapping apply must never fail)",
                        e.kind()
                    ))
                }
            }
            tokio::task::yield_now().await;
        }
        Ok(versions)
    })
    .await?;
    let total = TASKS * EACH;
    let unique: BTreeSet<u64> = versions.iter().copied().collect();
    same(
        "versions returned by the applies (one per apply)",
        unique,
        (2..=total + 1).collect::<BTreeSet<u64>>(),
    )?;
    let back = must_load(&*s, &id, T0 + EACH).await?;
    let mut want = BTreeSet::new();
    for t in 0..TASKS {
        want.insert(format!("t{t}.{}", EACH - 1));
        for i in 0..EACH - 1 {
            want.insert(format!("done{t}.{i}"));
        }
    }
    let got: BTreeSet<String> = back.data.keys().cloned().collect();
    let lost: Vec<&String> = want.difference(&got).take(5).collect();
    let extra: Vec<&String> = got.difference(&want).take(5).collect();
    ensure!(
        lost.is_empty() && extra.is_empty(),
        "keys after 64 overlapping writers: {} lost (e.g. {lost:?}), {} not removed (e.g. {extra:?})",
        want.difference(&got).count(),
        got.difference(&want).count()
    );
    same("version after the race", back.version, total + 1)?;
    same("user after the race", back.user_id.as_deref(), Some("pat"))?;
    let pats = BTreeSet::from([id]);
    sessions_are(&*s, "pat's sessions after the race", "pat", T0 + EACH, pats).await?;
    Ok(())
}

pub(super) async fn apply_delete_race<S: Store>(s: Arc<S>) -> CaseResult {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const ROUNDS: u64 = 8;
    const TASKS: u64 = 16;
    for round in 0..ROUNDS {
        let r = with_user("quinn");
        ok("create", s.create(&r, r.last_seen).await)?;
        let id = r.id_hash;
        let deleted = Arc::new(AtomicBool::new(false));
        let applied = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let (s, deleted, applied) = (Arc::clone(&s), deleted.clone(), applied.clone());
            handles.push(tokio::spawn(async move {
                for i in 0..64u64 {
                    let after_delete = deleted.load(Ordering::SeqCst);
                    let key = format!("k{t}.{i}");
                    let c = changes(&[(key.as_str(), Value::from(i))], &[]);
                    match s.apply(&id, &c, T0 + 1, T0 + 1 + IDLE).await {
                        Ok(_) if after_delete => {
                            return Err(
                                "an apply begun after the delete returned succeeded".to_owned()
                            )
                        }
                        Ok(_) => {
                            applied.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                        Err(e) => return Err(format!("apply: {:?} {e}", e.kind())),
                    }
                    tokio::task::yield_now().await;
                }
                Ok(())
            }));
        }
        // Delete while the applies run.
        while applied.load(Ordering::SeqCst) < TASKS && !handles.iter().all(|h| h.is_finished()) {
            tokio::task::yield_now().await;
        }
        returns("delete during the applies", s.delete(&id).await, true)?;
        deleted.store(true, Ordering::SeqCst);
        for h in handles {
            h.await.map_err(|e| format!("task panicked: {e}"))??;
        }
        ensure!(
            ok("load", s.load(&id, T0 + 2).await)?.is_none(),
            "round {round}: an apply racing the delete brought the session back"
        );
        ensure!(
            ok("sessions_of", s.sessions_of("quinn", T0 + 2).await)?.is_empty(),
            "round {round}: an apply racing the delete put the session back in its user's list"
        );
    }
    Ok(())
}
