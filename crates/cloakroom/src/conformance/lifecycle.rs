//! Conformance cases: Create, load, update and the compare-and-swap race.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn create_then_load<S: Store>(s: &S) -> CaseResult {
    let mut r = with_user("alice");
    r.user_epoch = 3;
    r.data.insert("n".into(), Value::from(1));
    r.data.insert("s".into(), Value::from("text"));
    r.data.insert("b".into(), Value::Binary(vec![0, 255, 7]));
    r.data.insert(
        "m".into(),
        Value::Map(vec![(
            Value::from("k"),
            Value::Array(vec![Value::Nil, Value::from(true)]),
        )]),
    );
    r.device = Device::new()
        .with_user_agent("Mozilla/5.0")
        .with_label("laptop")
        .with_ip("2001:db8::1");
    ok("create", s.create(&r, r.last_seen).await)?;
    let back = must_load(s, &r.id_hash, T0 + 1).await?;
    same("loaded record", &back, &r)?;
    same("version of a new record", back.version, 1)
}

pub(super) async fn duplicate_create<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("first create", s.create(&r, r.last_seen).await)?;
    let mut other = r.clone();
    other.data.insert("x".into(), Value::from(1));
    expect_kind(
        "second create of one id",
        s.create(&other, other.last_seen).await,
        ErrorKind::Conflict,
    )?;
    let back = must_load(s, &r.id_hash, T0).await?;
    same("record after the refused create", &back, &r)
}

/// A create is judged at the `now` it is given, not at the new record's times: a record
/// live at `now` is a conflict even when the new record starts after the old one expires.
pub(super) async fn create_at_now<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("first create", s.create(&r, T0).await)?;
    let later = T0 + IDLE + 5;
    let mut other = Record::new(r.id_hash, later, &Policy::default());
    other.data.insert("x".into(), Value::from(1));
    expect_kind(
        "create of a live id with a record that starts after it expires",
        s.create(&other, T0 + 10).await,
        ErrorKind::Conflict,
    )?;
    let back = must_load(s, &r.id_hash, T0 + 10).await?;
    same("record after the refused create", &back, &r)
}

pub(super) async fn load_missing<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    let got = ok("load", s.load(&r.id_hash, T0).await)?;
    ensure!(got.is_none(), "load of a never-created id returned {got:?}");
    Ok(())
}

pub(super) async fn load_expired<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0 + IDLE - 1).await)?.is_some(),
        "record gone one second before its idle deadline"
    );
    let got = ok("load", s.load(&r.id_hash, T0 + IDLE).await)?;
    ensure!(got.is_none(), "load at the idle deadline returned a record");
    // Past the absolute deadline, even with a far idle deadline.
    let mut r2 = fresh();
    r2.idle_deadline = r2.absolute_deadline + 1000;
    ok("create", s.create(&r2, r2.last_seen).await)?;
    ensure!(
        ok("load", s.load(&r2.id_hash, T0 + ABSOLUTE - 1).await)?.is_some(),
        "record gone before its absolute deadline"
    );
    let got = ok("load", s.load(&r2.id_hash, T0 + ABSOLUTE).await)?;
    ensure!(
        got.is_none(),
        "load at the absolute deadline returned a record"
    );
    Ok(())
}

pub(super) async fn update_ok<S: Store>(s: &S) -> CaseResult {
    let r = with_user("bob");
    ok("create", s.create(&r, r.last_seen).await)?;
    let mut next = must_load(s, &r.id_hash, T0 + 10).await?;
    next.data.insert(
        "cart".into(),
        Value::from(vec![Value::from(1), Value::from(2)]),
    );
    slide(&mut next, T0 + 10);
    next.user_epoch = 4;
    next.device.label = Some("phone".into());
    let v = ok("update", s.update(&next, T0 + 10).await)?;
    same("version returned by update", v, 2)?;
    let back = must_load(s, &r.id_hash, T0 + 11).await?;
    let mut want = next.clone();
    want.version = 2;
    same("record after update", &back, &want)?;
    let v3 = ok("second update", s.update(&back, T0 + 12).await)?;
    same("version after second update", v3, 3)
}

pub(super) async fn update_stale<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    let mut a = r.clone();
    a.data.insert("k".into(), Value::from("a"));
    ok("first update", s.update(&a, T0).await)?;
    let mut b = r.clone(); // still version 1
    b.data.insert("k".into(), Value::from("b"));
    expect_kind(
        "update with a stale version",
        s.update(&b, T0).await,
        ErrorKind::Conflict,
    )?;
    let back = must_load(s, &r.id_hash, T0).await?;
    same("version after the refused update", back.version, 2)?;
    same(
        "data after the refused update",
        back.data.get("k"),
        Some(&Value::from("a")),
    )?;
    let mut future = back.clone();
    future.version = 99;
    expect_kind(
        "update with a future version",
        s.update(&future, T0).await,
        ErrorKind::Conflict,
    )
}

pub(super) async fn update_gone<S: Store>(s: &S) -> CaseResult {
    let never = fresh();
    expect_kind(
        "update of a never-created id",
        s.update(&never, T0).await,
        ErrorKind::NotFound,
    )?;
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    ok("delete", s.delete(&r.id_hash).await)?;
    expect_kind(
        "update after delete",
        s.update(&r, T0).await,
        ErrorKind::NotFound,
    )?;
    let got = ok("load", s.load(&r.id_hash, T0).await)?;
    ensure!(
        got.is_none(),
        "an update after delete brought the record back"
    );
    let e = fresh();
    ok("create", s.create(&e, e.last_seen).await)?;
    expect_kind(
        "update of an expired record",
        s.update(&e, T0 + IDLE).await,
        ErrorKind::NotFound,
    )
}

pub(super) async fn cas_race<S: Store>(s: Arc<S>) -> CaseResult {
    const TASKS: u64 = 32;
    const EACH: u64 = 8;
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    let id = r.id_hash;
    let versions = race(&s, TASKS, |s, _| async move {
        let mut won = Vec::new();
        for _ in 0..EACH {
            loop {
                let mut cur = match s.load(&id, T0).await {
                    Ok(Some(cur)) => cur,
                    Ok(None) => return Err("record vanished during the race".to_owned()),
                    Err(e) => return Err(format!("load: {e}")),
                };
                // Let the other tasks read the same version before we write: contention
                // is the point of this case, even against a store that answers at once.
                tokio::task::yield_now().await;
                let n = cur.data.get("n").and_then(Value::as_u64).unwrap_or(0);
                cur.data.insert("n".into(), Value::from(n + 1));
                match s.update(&cur, T0).await {
                    Ok(v) => {
                        won.push(v);
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict => tokio::task::yield_now().await,
                    Err(e) => return Err(format!("update: {:?} {e}", e.kind())),
                }
            }
        }
        Ok(won)
    })
    .await?;
    let total = TASKS * EACH;
    let unique: BTreeSet<u64> = versions.iter().copied().collect();
    same("successful updates", versions.len() as u64, total)?;
    same(
        "distinct winning versions (one winner per version)",
        unique.len() as u64,
        total,
    )?;
    same(
        "winning versions",
        unique,
        (2..=total + 1).collect::<BTreeSet<u64>>(),
    )?;
    let back = must_load(&*s, &id, T0).await?;
    same(
        "counter after the race (lost increments?)",
        back.data.get("n").and_then(Value::as_u64),
        Some(total),
    )?;
    same("version after the race", back.version, total + 1)
}
