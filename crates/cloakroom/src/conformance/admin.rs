//! Conformance cases: Operators' operations: purge, find by prefix, stats.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn purge<S: Store>(s: &S) -> CaseResult {
    let mut expired = Vec::new();
    for i in 0..25u64 {
        let mut r = with_user("kim");
        r.idle_deadline = T0 + 10 + i;
        ok("create", s.create(&r, r.last_seen).await)?;
        expired.push(r);
    }
    let mut live = Vec::new();
    for _ in 0..5 {
        let r = with_user("kim");
        ok("create", s.create(&r, r.last_seen).await)?;
        live.push(r);
    }
    let now = T0 + 100;
    let mut counts = Vec::new();
    loop {
        let n = ok("purge", s.purge_expired(now, 10).await)?;
        ensure!(n <= 10, "purge with limit 10 removed {n}");
        counts.push(n);
        if n < 10 || counts.len() > 10 {
            break;
        }
    }
    same("purge batch counts", counts, vec![10, 10, 5])?;
    returns(
        "purge when nothing is expired",
        s.purge_expired(now, 10).await,
        0,
    )?;
    for r in &live {
        ensure!(
            ok("load", s.load(&r.id_hash, now).await)?.is_some(),
            "purge removed a live record"
        );
    }
    sessions_are(s, "kim's sessions after purge", "kim", now, ids(&live)).await?;
    // Purged records are gone from the index too: revoking finds only the live ones.
    returns(
        "revoke after purge",
        s.revoke_user_sessions("kim", None).await,
        5,
    )?;
    for r in &expired {
        ensure!(
            ok("load", s.load(&r.id_hash, T0).await)?.is_none(),
            "a purged record loads at an earlier time"
        );
    }
    Ok(())
}

/// Whether the store says it cannot enumerate its records (memcached): then both operator
/// queries must say so, with [`ErrorKind::Unsupported`], and nothing else is checked.
pub(super) async fn unsupported_admin<S: Store>(s: &S) -> Result<bool, String> {
    let find = s.find_by_prefix("ab", T0).await;
    let stats = s.stats(T0).await;
    fn unsupported<V>(r: &Result<V, Error>) -> bool {
        matches!(r, Err(e) if e.kind() == ErrorKind::Unsupported)
    }
    match (unsupported(&find), unsupported(&stats)) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        _ => Err("find_by_prefix and stats disagree on being Unsupported".into()),
    }
}

pub(super) async fn find_by_prefix<S: Store>(s: &S) -> CaseResult {
    if unsupported_admin(s).await? {
        return Ok(());
    }
    let live = with_user("ana");
    let other = fresh();
    let mut expired = fresh();
    expired.idle_deadline = T0 + 10;
    for r in [&live, &other, &expired] {
        ok("create", s.create(r, r.last_seen).await)?;
    }
    let now = T0 + 100;
    let hex = live.id_hash.to_hex();
    for len in [64, 8, 1] {
        let found = ok("find_by_prefix", s.find_by_prefix(&hex[..len], now).await)?;
        ensure!(
            found.contains(&live),
            "find_by_prefix({}) misses the live record (got {} records)",
            &hex[..len],
            found.len()
        );
        ensure!(
            found
                .iter()
                .all(|r| r.id_hash.to_hex().starts_with(&hex[..len])),
            "find_by_prefix({}) returned a record with another prefix",
            &hex[..len]
        );
    }
    same(
        "find_by_prefix(full id hash)",
        ok("find_by_prefix", s.find_by_prefix(&hex, now).await)?.len(),
        1,
    )?;
    let gone = expired.id_hash.to_hex();
    same(
        "find_by_prefix of an expired record",
        ok("find_by_prefix", s.find_by_prefix(&gone, now).await)?.len(),
        0,
    )?;
    ok("delete", s.delete(&live.id_hash).await)?;
    same(
        "find_by_prefix of a deleted record",
        ok("find_by_prefix", s.find_by_prefix(&hex, now).await)?.len(),
        0,
    )?;
    for bad in ["", "XY", "0g", &"a".repeat(65)] {
        expect_kind(
            "find_by_prefix of a bad prefix",
            s.find_by_prefix(bad, now).await,
            ErrorKind::InvalidInput,
        )?;
    }
    Ok(())
}

pub(super) async fn stats<S: Store>(s: &S) -> CaseResult {
    if unsupported_admin(s).await? {
        return Ok(());
    }
    same(
        "stats of an empty store",
        ok("stats", s.stats(T0).await)?.live,
        0,
    )?;
    for i in 0..3u64 {
        let mut r = with_user("bo");
        r.idle_deadline = T0 + 10 + i;
        ok("create", s.create(&r, r.last_seen).await)?;
    }
    for _ in 0..2 {
        ok("create", s.create(&fresh(), T0).await)?;
    }
    let now = T0 + 100;
    let st: Stats = ok("stats", s.stats(now).await)?;
    same("live", st.live, 2)?;
    same("expired, not purged", st.expired_not_purged, 3)?;
    if let Some(bytes) = st.bytes {
        ensure!(bytes > 0, "stats says 5 records take 0 bytes");
    }
    while ok("purge", s.purge_expired(now, 100).await)? == 100 {}
    let st = ok("stats", s.stats(now).await)?;
    same("live after purge", st.live, 2)?;
    same("expired after purge", st.expired_not_purged, 0)?;
    Ok(())
}
