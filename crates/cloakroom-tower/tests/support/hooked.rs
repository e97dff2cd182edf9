//! A store that wraps a store: [`Hooked`] forwards every call of the [`Store`] trait to the
//! store inside, running its [`Hooks`] around them. The tests stop, gate, count and break
//! stores with it; the benchmark counts the store calls a request costs.
//!
//! (Shared by `tests/tests.rs`, `tests/contended.rs` and `benches/tower`, which include this
//! file as a module of their own.)

use std::sync::Arc;

use cloakroom::store::Error;
use cloakroom::{Applied, Changes, IdHash, Record, Store};
use cloakroom_tower::async_trait;

/// A call of the [`Store`] trait, as [`Hooks`] see it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Load,
    Update,
    Apply,
    Touch,
    Delete,
    SessionsOf,
    Revoke,
    UserEpoch,
    BumpUserEpoch,
    Purge,
}

/// What a wrapper adds to the store it wraps; [`Hooked`] forwards every call.
#[async_trait]
pub(crate) trait Hooks: Send + Sync + Sized + 'static {
    /// Whether `apply` is the trait's default, a compare-and-swap over the wrapper's `load`
    /// and `update` (so the hooks see those two); if not, it is the inner store's own `apply`
    /// after `before(Op::Apply)`.
    const COMPARE_AND_SWAP: bool = false;

    /// Runs before a call reaches the inner store; an error ends the call with it.
    async fn before(&self, op: Op) -> Result<(), Error> {
        let _ = op;
        Ok(())
    }

    /// Runs once a `load` has come back from the inner store.
    fn after_load(&self) {}

    /// `apply` of the wrapper `store`: as [`Hooks::COMPARE_AND_SWAP`] says, unless a wrapper
    /// whose commit is under test writes its own.
    async fn apply(store: &Hooked<Self>, call: Applying<'_>) -> Result<Applied, Error> {
        let Applying { id, changes, .. } = call;
        if Self::COMPARE_AND_SWAP {
            cloakroom::apply_by_compare_and_swap(store, id, changes, call.now, call.idle_deadline)
                .await
        } else {
            store.hooks.before(Op::Apply).await?;
            store
                .inner
                .apply(id, changes, call.now, call.idle_deadline)
                .await
        }
    }
}

/// The arguments of a call of `Store::apply`.
pub(crate) struct Applying<'a> {
    pub(crate) id: &'a IdHash,
    pub(crate) changes: &'a Changes,
    pub(crate) now: u64,
    pub(crate) idle_deadline: u64,
}

/// A store that forwards every call to `inner`, running its [`Hooks`] around them; it
/// dereferences to the hooks, so a test reaches their switches and counters directly.
pub(crate) struct Hooked<H> {
    pub(crate) inner: Arc<dyn Store>,
    pub(crate) hooks: H,
}

impl<H> Hooked<H> {
    pub(crate) fn new(inner: Arc<dyn Store>, hooks: H) -> Arc<Self> {
        Arc::new(Self { inner, hooks })
    }
}

impl<H> std::ops::Deref for Hooked<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hooks
    }
}

#[async_trait]
impl<H: Hooks> Store for Hooked<H> {
    async fn create(&self, r: &Record, now: u64) -> Result<(), Error> {
        self.hooks.before(Op::Create).await?;
        self.inner.create(r, now).await
    }
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        self.hooks.before(Op::Load).await?;
        let loaded = self.inner.load(id, now).await;
        self.hooks.after_load();
        loaded
    }
    async fn update(&self, r: &Record, now: u64) -> Result<u64, Error> {
        self.hooks.before(Op::Update).await?;
        self.inner.update(r, now).await
    }
    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let call = Applying {
            id,
            changes,
            now,
            idle_deadline,
        };
        H::apply(self, call).await
    }
    async fn touch(&self, id: &IdHash, now: u64, idle: u64) -> Result<(), Error> {
        self.hooks.before(Op::Touch).await?;
        self.inner.touch(id, now, idle).await
    }
    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        self.hooks.before(Op::Delete).await?;
        self.inner.delete(id).await
    }
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.hooks.before(Op::SessionsOf).await?;
        self.inner.sessions_of(user, now).await
    }
    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        self.hooks.before(Op::Revoke).await?;
        self.inner.revoke_user_sessions(user, except).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.hooks.before(Op::UserEpoch).await?;
        self.inner.user_epoch(user).await
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.hooks.before(Op::BumpUserEpoch).await?;
        self.inner.bump_user_epoch(user).await
    }
    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        self.hooks.before(Op::Purge).await?;
        self.inner.purge_expired(now, limit).await
    }
}
