//! Server mode: the store keeps the record, the cookie a signed id.

use cloakroom_token::Opened;

use super::{Commit, CookieUpdate, Rotate, SessionManager};
use crate::error::Error;
use crate::id::SessionId;
use crate::session::{Session, Verb};
use crate::store::{self, Changes, Store};

impl SessionManager {
    /// Server mode's load: the cookie signs the session id; the store has the record.
    pub(super) async fn open_server(&self, opened: &Opened, now: u64) -> Result<Session, Error> {
        let Ok(id) = SessionId::from_bytes(opened.payload()) else {
            return Ok(self.fresh(now, true));
        };
        match self.load_record(&id, now).await? {
            Some(record) => Ok(self.loaded(id, record)),
            None => Ok(self.fresh(now, true)),
        }
    }

    pub(super) async fn commit_server(&self, session: Session, now: u64) -> Result<Commit, Error> {
        match self.rotate(&session).await? {
            Rotate::Done(commit) => return Ok(commit),
            Rotate::To(id) => {
                let record = match (&session.verb, &session.loaded_id) {
                    // A cycle keeps the session: start from its latest version, and never
                    // bring back one that was ended meanwhile.
                    (Verb::Cycle, Some(old)) => match self.load_record(old, now).await? {
                        Some(latest) => self.reborn_from(&session, &latest, id.hash(), now).await?,
                        None => return Ok(Commit::ended()),
                    },
                    _ => self.reborn(&session, id.hash(), now).await?,
                };
                self.create_replacing(&session, &record, now).await?;
                return self.signed_cookie(&id, &record, now);
            }
            Rotate::No => {}
        }
        let Some(id) = session.loaded_id.clone() else {
            if session.changes.is_empty() {
                return Ok(Self::gone(&session));
            }
            // A new session with something worth keeping.
            let id = SessionId::generate()?;
            let record = self.reborn(&session, id.hash(), now).await?;
            self.store.create(&record, now).await?;
            return self.signed_cookie(&id, &record, now);
        };
        let done = if session.changes.is_empty() {
            self.touch_if_due(&session, &id.hash(), now).await?
        } else {
            self.apply_changes(&session, &id, now).await?
        };
        if session.reissue && !done.ended_concurrently {
            return self.signed_cookie(&id, &session.base, now);
        }
        Ok(done)
    }

    /// Applies the session's changed keys to the latest stored version of `id` with one
    /// [`Store::apply`]: the store merges them atomically, so a request never fails because
    /// another request of the same session overlapped, and a session ended meanwhile is
    /// reported, never written back.
    async fn apply_changes(
        &self,
        session: &Session,
        id: &SessionId,
        now: u64,
    ) -> Result<Commit, Error> {
        let changes: Changes = session
            .changes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let hash = id.hash();
        let idle_deadline = self
            .policy
            .idle_deadline(now, session.base.absolute_deadline);
        match self.store.apply(&hash, &changes, now, idle_deadline).await {
            Ok(_) => Ok(Commit::cookie(CookieUpdate::Keep)),
            Err(e) if e.kind() == store::ErrorKind::NotFound => Ok(Commit::ended()),
            Err(e) if e.kind() == store::ErrorKind::Corrupt => {
                // As on load: a record that does not decode is absent; delete it.
                tracing::warn!(session = %hash, error = %e, "corrupt session record at commit; treating it as ended and deleting it");
                let _ = self.store.delete(&hash).await;
                Ok(Commit::ended())
            }
            Err(e) => Err(e.into()),
        }
    }
}
