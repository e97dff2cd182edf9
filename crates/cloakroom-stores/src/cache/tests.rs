//! Unit tests of the cache itself (no backend).

use super::*;
use cloakroom::{MemoryStore, Policy, SessionId, Value};

const NOW: u64 = 1_700_000_000;

fn record(user: &str) -> Record {
    let mut r = Record::new(
        SessionId::generate().unwrap().hash(),
        NOW,
        &Policy::default(),
    );
    r.user_id = Some(user.into());
    r
}

#[tokio::test]
async fn hits_follow_this_process_writes_and_stay_bounded() {
    let store = CachedStore::without_invalidation_for_tests(MemoryStore::new(), 2).unwrap();
    let r = record("u");
    store.create(&r, r.last_seen).await.unwrap();
    assert_eq!(
        store.load(&r.id_hash, NOW).await.unwrap().unwrap().version,
        1
    );
    assert_eq!(
        store.load(&r.id_hash, NOW).await.unwrap().unwrap().version,
        1
    );
    assert_eq!(store.cache_stats().hits, 1);
    let mut c = Changes::new();
    c.set("k", Value::from(1));
    store
        .apply(&r.id_hash, &c, NOW + 1, NOW + 100)
        .await
        .unwrap();
    let got = store.load(&r.id_hash, NOW + 1).await.unwrap().unwrap();
    assert_eq!(got.data.get("k"), Some(&Value::from(1)));
    store.load(&r.id_hash, NOW + 1).await.unwrap();
    assert_eq!(store.cache_stats().hits, 2);
    store.revoke_user_sessions("u", None).await.unwrap();
    assert!(store.load(&r.id_hash, NOW + 1).await.unwrap().is_none());
    assert_eq!(store.user_epoch("u").await.unwrap(), 0);
    assert_eq!(store.user_epoch("u").await.unwrap(), 0);
    assert_eq!(store.bump_user_epoch("u").await.unwrap(), 1);
    assert_eq!(store.user_epoch("u").await.unwrap(), 1);
    for _ in 0..5 {
        let r = record("v");
        store.create(&r, r.last_seen).await.unwrap();
        store.load(&r.id_hash, NOW).await.unwrap();
    }
    assert!(store.len() <= 2);
}

#[tokio::test]
async fn a_read_that_raced_an_invalidation_is_not_cached() {
    let store = CachedStore::without_invalidation_for_tests(MemoryStore::new(), 8).unwrap();
    let r = record("u");
    store.create(&r, r.last_seen).await.unwrap();
    let ticket = store.cache.ticket();
    store.cache.invalidate_record(&r.id_hash);
    store
        .cache
        .fill(ticket, |s, cap| Cache::insert_record(s, cap, r.clone()));
    assert!(store.is_empty());
    // Offline: nothing is served or filled.
    store.cache.offline();
    store.load(&r.id_hash, NOW).await.unwrap();
    store.load(&r.id_hash, NOW).await.unwrap();
    assert!(store.is_empty());
    assert_eq!(store.cache_stats().bypassed, 2);
    assert_eq!(store.cache_stats().lost, 1);
}

#[test]
fn a_commit_writes_through_only_onto_the_version_it_was_applied_to() {
    let cache = Cache::new(8);
    cache.online();
    let r = record("u");
    let id = r.id_hash;
    let cached = |cache: &Cache| cache.lock().records.get(&id).cloned();
    let fill = |cache: &Cache, r: &Record| {
        let t = cache.ticket();
        cache.fill(t, |s, cap| Cache::insert_record(s, cap, r.clone()));
    };
    let change = |key: &str| {
        let mut c = Changes::new();
        c.set(key, Value::from(1));
        c
    };
    let idle = NOW + 60;
    let after =
        |base: &Record, c: &Changes| cloakroom::apply_changes(base.clone(), c, NOW, idle).unwrap();
    let answer = |x: &Record| Applied::new(x.version, x.idle_deadline);

    // Nothing in between: the record stays while the commit runs, then is written through.
    fill(&cache, &r);
    let (a, b) = (change("a"), change("b"));
    let one = after(&r, &a);
    let two = after(&one, &b);
    cache.commit_through(&id, &answer(&one), &a, NOW, idle);
    assert_eq!(cached(&cache), Some(one.clone()));
    // A second commit, applied by the store after the first: written through on top of it.
    cache.commit_through(&id, &answer(&two), &b, NOW, idle);
    assert_eq!(cached(&cache), Some(two.clone()));
    assert_eq!(cache.stats().written_through, 2);

    // Answers taken out of order: the later commit's answer comes first and finds a version
    // two behind: evicted, and the earlier commit's answer then finds nothing.
    fill(&cache, &r);
    cache.commit_through(&id, &answer(&two), &b, NOW, idle);
    assert!(cached(&cache).is_none(), "a version gap must evict");
    cache.commit_through(&id, &answer(&one), &a, NOW, idle);
    assert!(cached(&cache).is_none(), "nothing cached, nothing written");
    // A load after both commits filled the newer version: a late answer keeps it.
    fill(&cache, &two);
    cache.commit_through(&id, &answer(&one), &a, NOW, idle);
    assert_eq!(
        cached(&cache),
        Some(two.clone()),
        "a late answer evicted a newer record"
    );
    cache.commit_through(&id, &answer(&two), &b, NOW, idle);
    assert_eq!(cached(&cache), Some(two.clone()));

    // What else spoils it: an invalidation, a drop of everything, a lost channel, another
    // write of this process, a deadline the store computed otherwise.
    type Spoil = fn(&Cache, &IdHash);
    let spoilers: [(&str, Spoil); 4] = [
        ("invalidation", |c, id| c.invalidate_record(id)),
        ("drop of everything", |c, _| c.invalidate_all()),
        ("lost channel", |c, _| c.offline()),
        ("own write", |c, id| {
            c.wrote(|s| {
                s.records.remove(id);
            });
        }),
    ];
    for (what, spoil) in spoilers {
        cache.online();
        fill(&cache, &r);
        spoil(&cache, &id);
        cache.commit_through(&id, &answer(&one), &a, NOW, idle);
        assert!(cached(&cache).is_none(), "{what} must evict");
    }
    cache.online();
    fill(&cache, &r);
    cache.commit_through(&id, &Applied::new(one.version, idle + 1), &a, NOW, idle);
    assert!(cached(&cache).is_none(), "another deadline must evict");
    assert_eq!(cache.stats().written_through, 2);

    // A read that began before a commit (it holds the version before it) does not fill
    // the cache afterwards, even when the commit's record was evicted meanwhile; a read of
    // the committed version does; a newer cached version is never replaced by an older one.
    let fill_record = |cache: &Cache, ticket: Ticket, r: &Record| {
        cache.fill(ticket, |s, cap| Cache::fill_record(s, cap, r.clone()));
    };
    let ticket = cache.ticket();
    fill(&cache, &r);
    cache.commit_through(&id, &answer(&one), &a, NOW, idle);
    assert_eq!(cached(&cache), Some(one.clone()));
    fill_record(&cache, ticket, &r);
    assert_eq!(
        cached(&cache),
        Some(one.clone()),
        "an older read replaced a newer record"
    );
    cache.lock().records.remove(&id);
    fill_record(&cache, ticket, &r);
    assert!(
        cached(&cache).is_none(),
        "a read from before the commit filled the cache"
    );
    fill_record(&cache, ticket, &one);
    assert_eq!(cached(&cache), Some(one.clone()));
    // Floors stay bounded: past `capacity` sessions they are dropped with the generation.
    let ticket = cache.ticket();
    for _ in 0..8 {
        let other = record("v");
        fill(&cache, &other);
        let x = after(&other, &a);
        cache.commit_through(&other.id_hash, &answer(&x), &a, NOW, idle);
    }
    assert!(cache.lock().floors.len() <= 8);
    cache.lock().records.remove(&id);
    fill_record(&cache, ticket, &one);
    assert!(
        cached(&cache).is_none(),
        "a read from before the floors were dropped filled"
    );
}

/// A channel that commits on the store itself (no echo): for the version check.
struct Through(Arc<MemoryStore>);

#[async_trait]
impl Channel for Through {
    fn writes_through(&self) -> bool {
        true
    }
    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Via<Result<Applied, Error>> {
        Via::Channel(self.0.apply(id, changes, now, idle_deadline).await)
    }
}

#[tokio::test]
async fn a_commit_over_a_write_the_cache_missed_is_not_written_through() {
    let memory = Arc::new(MemoryStore::new());
    let cache = Arc::new(Cache::new(8));
    cache.online();
    let store = CachedStore::with_channel(
        Arc::clone(&memory),
        cache,
        Arc::new(Through(Arc::clone(&memory))),
        None,
    );
    let r = record("u");
    store.create(&r, NOW).await.unwrap();
    store.load(&r.id_hash, NOW).await.unwrap();
    let mut c = Changes::new();
    c.set("mine", Value::from(1));
    store.apply(&r.id_hash, &c, NOW, NOW + 60).await.unwrap();
    assert_eq!(store.cache_stats().written_through, 1);
    assert_eq!(
        store.load(&r.id_hash, NOW).await.unwrap(),
        memory.load(&r.id_hash, NOW).await.unwrap()
    );
    // Another writer whose change the cache never heard of (as if its invalidation
    // were still on its way): the commit's version tells, and the record is evicted.
    let mut theirs = Changes::new();
    theirs.set("theirs", Value::from(2));
    memory
        .apply(&r.id_hash, &theirs, NOW, NOW + 60)
        .await
        .unwrap();
    store.apply(&r.id_hash, &c, NOW, NOW + 60).await.unwrap();
    assert_eq!(store.cache_stats().written_through, 1);
    let got = store.load(&r.id_hash, NOW).await.unwrap().unwrap();
    assert_eq!(got.data.get("theirs"), Some(&Value::from(2)));
}

#[test]
fn a_cache_of_nothing_is_refused() {
    let err = CachedStore::without_invalidation_for_tests(MemoryStore::new(), 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
