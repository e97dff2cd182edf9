//! Client mode: the sealed cookie is the record; the store keeps only the users' epochs.

use cloakroom_token::Opened;

use super::{Commit, CookieUpdate, SessionManager};
use crate::error::Error;
use crate::id::SessionId;
use crate::record::Record;
use crate::session::{Session, Verb};

impl SessionManager {
    /// Client mode's load: the sealed cookie holds the whole record, live while its user's
    /// epoch has not moved.
    pub(super) async fn open_client(&self, opened: &Opened, now: u64) -> Result<Session, Error> {
        let Ok(record) = Record::decode(opened.payload()) else {
            return Ok(self.fresh(now, true));
        };
        if !record.is_live(now) {
            return Ok(self.fresh(now, true));
        }
        if let Some(user) = &record.user_id {
            if self.store.user_epoch(user).await? != record.user_epoch {
                return Ok(self.fresh(now, true));
            }
        }
        let mut session = Session::new(self.mode, record, false);
        session.stored = true;
        Ok(session)
    }

    pub(super) async fn commit_client(&self, session: Session, now: u64) -> Result<Commit, Error> {
        let record = match &session.verb {
            Verb::Destroy => return Ok(Self::gone(&session)),
            Verb::Login { .. } | Verb::Cycle => {
                // No server-side id: a random hash stands in as the session's name in logs.
                let placeholder = SessionId::generate()?.hash();
                self.reborn(&session, placeholder, now).await?
            }
            Verb::None => {
                let due = session.stored
                    && (session.reissue || self.policy.needs_touch(&session.base, now));
                if session.changes.is_empty() && session.new_epoch.is_none() && !due {
                    return Ok(if session.stored {
                        Commit::cookie(CookieUpdate::Keep)
                    } else {
                        Self::gone(&session)
                    });
                }
                let hash = if session.stored {
                    session.base.id_hash
                } else {
                    SessionId::generate()?.hash()
                };
                self.reborn(&session, hash, now).await?
            }
        };
        // No race with `revoke_user` to close here: a cookie minted with an epoch that was
        // bumped meanwhile dies on its next load.
        let payload = record.encode()?;
        self.sealed_cookie(&payload, &record, now)
    }
}
