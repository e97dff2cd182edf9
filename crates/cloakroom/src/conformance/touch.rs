//! Conformance cases: `touch` and `delete`.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn touch_moves_idle<S: Store>(s: &S) -> CaseResult {
    let mut r = with_user("carol");
    r.data.insert("k".into(), Value::from(1));
    ok("create", s.create(&r, r.last_seen).await)?;
    ok(
        "touch",
        s.touch(&r.id_hash, T0 + 600, T0 + 600 + IDLE).await,
    )?;
    let back = must_load(s, &r.id_hash, T0 + 601).await?;
    let mut want = r.clone();
    slide(&mut want, T0 + 600);
    same(
        "record after touch (only last_seen and idle deadline may change)",
        &back,
        &want,
    )?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0 + IDLE + 10).await)?.is_some(),
        "touched record died at its old idle deadline"
    );
    // Touch does not change the version, so a CAS based on the pre-touch read still wins.
    let mut next = r.clone();
    next.data.insert("k".into(), Value::from(2));
    returns("update after touch", s.update(&next, T0 + 601).await, 2)
}

pub(super) async fn touch_capped<S: Store>(s: &S) -> CaseResult {
    let mut r = fresh();
    r.idle_deadline = r.absolute_deadline - 100;
    ok("create", s.create(&r, r.last_seen).await)?;
    let now = r.absolute_deadline - 200;
    ok(
        "touch asking past the absolute deadline",
        s.touch(&r.id_hash, now, now + IDLE).await,
    )?;
    capped_at_absolute(s, &r, now, "touch").await
}

/// After `op` (apply or touch) at `now` asked to slide `r` past its absolute deadline: the
/// stored idle deadline is the absolute one, the absolute deadline is kept, `last_seen` is
/// `now`, and the record is gone once the absolute deadline comes.
pub(super) async fn capped_at_absolute<S: Store>(
    s: &S,
    r: &Record,
    now: u64,
    op: &str,
) -> CaseResult {
    let back = must_load(s, &r.id_hash, now + 1).await?;
    same(
        format_args!("stored idle deadline after {op}"),
        back.idle_deadline,
        r.absolute_deadline,
    )?;
    same(
        format_args!("absolute deadline after {op}"),
        back.absolute_deadline,
        r.absolute_deadline,
    )?;
    same(format_args!("last_seen after {op}"), back.last_seen, now)?;
    let got = ok("load", s.load(&r.id_hash, r.absolute_deadline).await)?;
    ensure!(
        got.is_none(),
        "{op} kept a record alive past its absolute deadline"
    );
    Ok(())
}

pub(super) async fn touch_gone<S: Store>(s: &S) -> CaseResult {
    let never = fresh();
    expect_kind(
        "touch of a never-created id",
        s.touch(&never.id_hash, T0, T0 + IDLE).await,
        ErrorKind::NotFound,
    )?;
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    expect_kind(
        "touch of an expired record",
        s.touch(&r.id_hash, T0 + IDLE, T0 + 2 * IDLE).await,
        ErrorKind::NotFound,
    )?;
    let got = ok("load", s.load(&r.id_hash, T0 + IDLE + 1).await)?;
    ensure!(got.is_none(), "touch revived an expired record");
    Ok(())
}

pub(super) async fn delete_then_load<S: Store>(s: &S) -> CaseResult {
    let r = with_user("dave");
    ok("create", s.create(&r, r.last_seen).await)?;
    returns(
        "delete of an existing record",
        s.delete(&r.id_hash).await,
        true,
    )?;
    let got = ok("load", s.load(&r.id_hash, T0).await)?;
    ensure!(got.is_none(), "record still loads after delete");
    returns("delete again", s.delete(&r.id_hash).await, false)?;
    let listed = ok("sessions_of", s.sessions_of("dave", T0).await)?;
    ensure!(
        listed.is_empty(),
        "deleted record still listed for its user"
    );
    // The id can be used again after delete.
    ok("create after delete", s.create(&r, r.last_seen).await)
}
