//! tower-sessions' stores on 0.15: the SQLite and Redis stores of tower-sessions implement
//! tower-sessions-core 0.14; this adapter makes them 0.15 stores.

/// A store written for tower-sessions-core 0.14 (tower-sessions-sqlx-store 0.15 and
/// tower-sessions-redis-store 0.16, their current releases) used as a tower-sessions 0.15
/// store: each call is passed on, the record and id converted field by field.
#[derive(Debug, Clone)]
pub(crate) struct Core14<S>(pub(crate) S);

mod convert {
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store::{Error, Result};
    use tower_sessions_core as old;

    pub(crate) fn record(r: &Record) -> old::session::Record {
        old::session::Record {
            id: old::session::Id(r.id.0),
            data: r.data.clone(),
            expiry_date: r.expiry_date,
        }
    }

    pub(crate) fn record_back(r: old::session::Record) -> Record {
        Record {
            id: Id(r.id.0),
            data: r.data,
            expiry_date: r.expiry_date,
        }
    }

    pub(crate) fn id(id: &Id) -> old::session::Id {
        old::session::Id(id.0)
    }

    pub(crate) fn error(e: old::session_store::Error) -> Error {
        match e {
            old::session_store::Error::Encode(m) => Error::Encode(m),
            old::session_store::Error::Decode(m) => Error::Decode(m),
            old::session_store::Error::Backend(m) => Error::Backend(m),
        }
    }

    pub(crate) type R<T> = Result<T>;
}

#[async_trait::async_trait]
impl<S> tower_sessions::SessionStore for Core14<S>
where
    S: tower_sessions_core::SessionStore + Clone,
{
    async fn create(&self, record: &mut tower_sessions::session::Record) -> convert::R<()> {
        let mut old = convert::record(record);
        self.0.create(&mut old).await.map_err(convert::error)?;
        // The store may have picked another id (a collision).
        record.id = tower_sessions::session::Id(old.id.0);
        Ok(())
    }

    async fn save(&self, record: &tower_sessions::session::Record) -> convert::R<()> {
        self.0
            .save(&convert::record(record))
            .await
            .map_err(convert::error)
    }

    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> convert::R<Option<tower_sessions::session::Record>> {
        Ok(self
            .0
            .load(&convert::id(id))
            .await
            .map_err(convert::error)?
            .map(convert::record_back))
    }

    async fn delete(&self, id: &tower_sessions::session::Id) -> convert::R<()> {
        self.0
            .delete(&convert::id(id))
            .await
            .map_err(convert::error)
    }
}
