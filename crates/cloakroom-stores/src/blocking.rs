//! The async face of the stores whose work is blocking I/O (file, SQLite).

/// Implements [`cloakroom::Store`] for `$store`, a type with a method
/// `async fn run<T>(&self, f: impl FnOnce(&Inner) -> Result<T, Error>) -> Result<T, Error>`
/// that runs `f` on tokio's blocking pool. Each operation moves owned copies of its arguments
/// into `run` and calls the inner store's synchronous method of the same name; `update`
/// hands over the record by value. `apply` is native too: the inner store merges the
/// changes under its own lock or transaction. `$name` is the store's name in messages; the
/// operator queries (`find_by_prefix`, `stats`) live in `crate::admin`.
macro_rules! blocking_store {
    ($store:ty, $name:literal) => {
        #[::async_trait::async_trait]
        impl ::cloakroom::Store for $store {
            async fn create(
                &self,
                record: &::cloakroom::Record,
                now: u64,
            ) -> Result<(), ::cloakroom::store::Error> {
                let record = record.clone();
                self.run(move |s| s.create(&record, now)).await
            }

            async fn load(
                &self,
                id: &::cloakroom::IdHash,
                now: u64,
            ) -> Result<Option<::cloakroom::Record>, ::cloakroom::store::Error> {
                let id = *id;
                self.run(move |s| s.load(&id, now)).await
            }

            async fn update(
                &self,
                record: &::cloakroom::Record,
                now: u64,
            ) -> Result<u64, ::cloakroom::store::Error> {
                let record = record.clone();
                self.run(move |s| s.update(record, now)).await
            }

            async fn apply(
                &self,
                id: &::cloakroom::IdHash,
                changes: &::cloakroom::Changes,
                now: u64,
                idle_deadline: u64,
            ) -> Result<::cloakroom::Applied, ::cloakroom::store::Error> {
                let id = *id;
                let changes = changes.clone();
                self.run(move |s| s.apply(&id, &changes, now, idle_deadline))
                    .await
            }

            async fn touch(
                &self,
                id: &::cloakroom::IdHash,
                now: u64,
                idle_deadline: u64,
            ) -> Result<(), ::cloakroom::store::Error> {
                let id = *id;
                self.run(move |s| s.touch(&id, now, idle_deadline)).await
            }

            async fn delete(
                &self,
                id: &::cloakroom::IdHash,
            ) -> Result<bool, ::cloakroom::store::Error> {
                let id = *id;
                self.run(move |s| s.delete(&id)).await
            }

            async fn sessions_of(
                &self,
                user: &str,
                now: u64,
            ) -> Result<Vec<::cloakroom::Record>, ::cloakroom::store::Error> {
                let user = user.to_owned();
                self.run(move |s| s.sessions_of(&user, now)).await
            }

            async fn revoke_user_sessions(
                &self,
                user: &str,
                except: Option<&::cloakroom::IdHash>,
            ) -> Result<u64, ::cloakroom::store::Error> {
                let user = user.to_owned();
                let except = except.copied();
                self.run(move |s| s.revoke_user_sessions(&user, except.as_ref()))
                    .await
            }

            async fn user_epoch(&self, user: &str) -> Result<u64, ::cloakroom::store::Error> {
                let user = user.to_owned();
                self.run(move |s| s.user_epoch(&user)).await
            }

            async fn bump_user_epoch(&self, user: &str) -> Result<u64, ::cloakroom::store::Error> {
                let user = user.to_owned();
                self.run(move |s| s.bump_user_epoch(&user)).await
            }

            async fn purge_expired(
                &self,
                now: u64,
                limit: usize,
            ) -> Result<usize, ::cloakroom::store::Error> {
                self.run(move |s| s.purge_expired(now, limit)).await
            }

            async fn find_by_prefix(
                &self,
                prefix: &str,
                now: u64,
            ) -> Result<Vec<::cloakroom::Record>, ::cloakroom::store::Error> {
                let prefix = prefix.to_owned();
                self.run(move |s| s.find_by_prefix(&prefix, now)).await
            }

            async fn stats(
                &self,
                now: u64,
            ) -> Result<::cloakroom::Stats, ::cloakroom::store::Error> {
                self.run(move |s| s.stats(now)).await
            }

            fn store_name(&self) -> &'static str {
                $name
            }
        }
    };
}

pub(crate) use blocking_store;
