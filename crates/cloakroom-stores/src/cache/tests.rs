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
fn a_commit_writes_through_only_if_nothing_touched_its_record_meanwhile() {
    let cache = Cache::new(8);
    cache.online();
    let r = record("u");
    let id = r.id_hash;
    let cached = |cache: &Cache| cache.lock().records.get(&id).cloned();
    let fill = |cache: &Cache| {
        let t = cache.ticket();
        cache.fill(t, |s, cap| Cache::insert_record(s, cap, r.clone()));
    };
    let mut next = r.clone();
    next.version += 1;

    // Nothing in between: written through.
    fill(&cache);
    let (n, base) = cache.begin_commit(&id, true).unwrap();
    assert_eq!(base, r);
    assert!(
        cached(&cache).is_none(),
        "the record leaves the cache while committed"
    );
    cache.end_commit(&id, Some(n), Some(next.clone()));
    assert_eq!(cached(&cache), Some(next.clone()));
    assert_eq!(cache.stats().written_through, 1);

    // What spoils it: an invalidation of the record, of everything, a lost channel,
    // another commit of the record beginning or ending, another write of it.
    type Spoil = fn(&Cache, &IdHash);
    let spoilers: [(&str, Spoil); 6] = [
        ("invalidation", |c, id| c.invalidate_record(id)),
        ("drop of everything", |c, _| c.invalidate_all()),
        ("lost channel", |c, _| {
            c.offline();
            c.online();
        }),
        ("second commit", |c, id| {
            assert!(c.begin_commit(id, true).is_none());
        }),
        ("other commit ending", |c, id| c.end_commit(id, None, None)),
        ("own write", |c, id| {
            c.wrote(|s| {
                s.records.remove(id);
                s.pending.remove(id);
            })
        }),
    ];
    for (what, spoil) in spoilers {
        fill(&cache);
        let (n, _) = cache.begin_commit(&id, true).unwrap();
        spoil(&cache, &id);
        cache.end_commit(&id, Some(n), Some(next.clone()));
        assert!(cached(&cache).is_none(), "{what} must evict");
    }
    // Nothing to write through: the record was not cached, or the channel echoes.
    assert!(cache.begin_commit(&id, true).is_none());
    fill(&cache);
    assert!(cache.begin_commit(&id, false).is_none());
    assert!(cached(&cache).is_none());
    assert_eq!(cache.stats().written_through, 1);
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
