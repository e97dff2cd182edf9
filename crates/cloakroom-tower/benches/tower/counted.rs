//! Counting the Cloakroom side's store calls (`BENCH_COUNT=1`): how many round trips a
//! request costs.

use std::sync::Arc;

/// The Cloakroom sides' store calls, when `BENCH_COUNT` is set.
pub(crate) static CALLS: std::sync::OnceLock<Arc<Calls>> = std::sync::OnceLock::new();

/// The store calls a Cloakroom side made, by kind (`BENCH_COUNT=1`): how many round trips a
/// request costs.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    counts: [std::sync::atomic::AtomicU64; 6],
}

pub(crate) const CALL_NAMES: [&str; 6] = ["load", "apply", "touch", "create", "delete", "other"];

impl Calls {
    pub(crate) fn add(&self, i: usize) {
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.counts[i].load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A store that counts the calls it passes on.
pub(crate) struct Counted {
    pub(crate) inner: Arc<dyn cloakroom::Store>,
    pub(crate) calls: Arc<Calls>,
}

#[async_trait::async_trait]
impl cloakroom::Store for Counted {
    async fn create(&self, r: &cloakroom::Record, now: u64) -> Result<(), cloakroom::store::Error> {
        self.calls.add(3);
        self.inner.create(r, now).await
    }
    async fn load(
        &self,
        id: &cloakroom::IdHash,
        now: u64,
    ) -> Result<Option<cloakroom::Record>, cloakroom::store::Error> {
        self.calls.add(0);
        self.inner.load(id, now).await
    }
    async fn update(
        &self,
        r: &cloakroom::Record,
        now: u64,
    ) -> Result<u64, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.update(r, now).await
    }
    async fn apply(
        &self,
        id: &cloakroom::IdHash,
        changes: &cloakroom::Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<cloakroom::Applied, cloakroom::store::Error> {
        self.calls.add(1);
        self.inner.apply(id, changes, now, idle_deadline).await
    }
    async fn touch(
        &self,
        id: &cloakroom::IdHash,
        now: u64,
        idle: u64,
    ) -> Result<(), cloakroom::store::Error> {
        self.calls.add(2);
        self.inner.touch(id, now, idle).await
    }
    async fn delete(&self, id: &cloakroom::IdHash) -> Result<bool, cloakroom::store::Error> {
        self.calls.add(4);
        self.inner.delete(id).await
    }
    async fn sessions_of(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Vec<cloakroom::Record>, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.sessions_of(user, now).await
    }
    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&cloakroom::IdHash>,
    ) -> Result<u64, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.revoke_user_sessions(user, except).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.user_epoch(user).await
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.bump_user_epoch(user).await
    }
    async fn purge_expired(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<usize, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.purge_expired(now, limit).await
    }
}
