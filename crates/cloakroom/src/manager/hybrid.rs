//! Hybrid mode: the store keeps the record without data (liveness, the user index, the
//! data's version); the sealed cookie carries the id, the data and that version.

use cloakroom_token::Opened;

use super::{Commit, Rotate, SessionManager};
use crate::error::Error;
use crate::id::{SessionId, SESSION_ID_LEN};
use crate::record::Record;
use crate::session::{Session, Verb};
use crate::store::{self, Changes, Store};

impl SessionManager {
    /// Hybrid mode's load: the sealed cookie holds the id and the data; the server record
    /// decides liveness and names the data's version.
    pub(super) async fn open_hybrid(&self, opened: &Opened, now: u64) -> Result<Session, Error> {
        let payload = opened.payload();
        if payload.len() < SESSION_ID_LEN {
            return Ok(self.fresh(now, true));
        }
        let (id, rest) = payload.split_at(SESSION_ID_LEN);
        let (Ok(id), Ok(data)) = (SessionId::from_bytes(id), Record::decode(rest)) else {
            return Ok(self.fresh(now, true));
        };
        let Some(mut record) = self.load_record(&id, now).await? else {
            return Ok(self.fresh(now, true));
        };
        // The server record's version names the data's latest version: an older
        // cookie of the same live id (its data since changed) is stale, not this
        // session.
        if record.user_id != data.user_id
            || record.user_epoch != data.user_epoch
            || record.version != data.version
        {
            return Ok(self.fresh(now, true));
        }
        // The server record is the authority on liveness; the cookie on data.
        record.data = data.data;
        Ok(self.loaded(id, record))
    }

    /// Hybrid mode: the store keeps the live id's record without data, and its version
    /// names the data's version; the sealed cookie carries the id, the data and that
    /// version, so an older cookie of the same session is refused at load.
    pub(super) async fn commit_hybrid(&self, session: Session, now: u64) -> Result<Commit, Error> {
        let (id, record) = match self.rotate(&session).await? {
            Rotate::Done(commit) => return Ok(commit),
            Rotate::To(id) => {
                let record = self.reborn(&session, id.hash(), now).await?;
                self.create_replacing(&session, &without_data(&record), now)
                    .await?;
                (id, record)
            }
            Rotate::No => match session.loaded_id.clone() {
                None => {
                    if session.changes.is_empty() {
                        return Ok(Self::gone(&session));
                    }
                    let id = SessionId::generate()?;
                    let record = self.reborn(&session, id.hash(), now).await?;
                    self.store.create(&without_data(&record), now).await?;
                    (id, record)
                }
                Some(id) if session.changes.is_empty() => {
                    let touched = self.touch_if_due(&session, &id.hash(), now).await?;
                    if touched.ended_concurrently || !session.reissue {
                        return Ok(touched);
                    }
                    // A key rotation: the same data and version under the new primary.
                    (id, session.base.clone())
                }
                Some(id) => {
                    let Some(applied) = self.bump_hybrid_version(&session, &id, now).await? else {
                        return Ok(Commit::ended());
                    };
                    let mut record = session.base.clone();
                    record.data = session.merged_onto(&session.base.data);
                    record.version = applied.version;
                    record.last_seen = now;
                    record.idle_deadline = applied.idle_deadline;
                    (id, record)
                }
            },
        };
        // The cookie carries the server record's version (1 for a new record).
        let mut payload = Vec::with_capacity(SESSION_ID_LEN + 256);
        payload.extend_from_slice(id.expose());
        payload.extend_from_slice(&record.encode()?);
        let result = self.sealed_cookie(&payload, &record, now);
        let created = session.verb != Verb::None || session.loaded_id.is_none();
        if result.is_err() && created {
            // The cookie cannot be issued: do not leave a server record nobody can use.
            let _ = self.store.delete(&id.hash()).await;
        }
        result
    }

    /// Moves the hybrid server record of `id` to a new version (the data changed), sliding
    /// its idle deadline, in one [`Store::apply`] with no key changes (the record holds no
    /// data); returns what the store applied, or `None` if the session was ended meanwhile.
    /// A concurrent change of the same session only moves the version further: the last
    /// cookie written is the session.
    async fn bump_hybrid_version(
        &self,
        session: &Session,
        id: &SessionId,
        now: u64,
    ) -> Result<Option<crate::store::Applied>, Error> {
        let idle_deadline = self
            .policy
            .idle_deadline(now, session.base.absolute_deadline);
        match self
            .store
            .apply(&id.hash(), &Changes::new(), now, idle_deadline)
            .await
        {
            Ok(applied) => Ok(Some(applied)),
            Err(e) if e.kind() == store::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The server record of a hybrid session: the record without its data, which the cookie
/// carries.
fn without_data(record: &Record) -> Record {
    let mut server = record.clone();
    server.data.clear();
    server
}
