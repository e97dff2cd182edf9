//! The verbs that act on other sessions: sign out elsewhere, revoke a user, list and end a
//! user's sessions, purge.

use super::{SessionInfo, SessionManager, SignedOut};
use crate::error::{Error, ErrorKind};
use crate::id::IdHash;
use crate::session::{Mode, Session};
use crate::store::{self, Store};

impl SessionManager {
    /// Ends every session of the session's user except this one ("sign out everywhere
    /// else") and returns how many were ended. In client mode it bumps the user's epoch
    /// (ending all their cookies) and gives this session the new epoch at commit, so the
    /// count is unknown and reported as 0. Does nothing for an anonymous session.
    ///
    /// This borrows the session across the store call; a caller that keeps the session
    /// behind a lock (a web framework's per-request slot) should use the two halves,
    /// [`SessionManager::sign_out_others_of`] and [`Session::apply_signed_out`], so the
    /// session stays in place if the call is cancelled.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn sign_out_other_sessions(&self, session: &mut Session) -> Result<u64, Error> {
        let Some(user) = session.user_id().map(str::to_owned) else {
            return Ok(0);
        };
        let done = self
            .sign_out_others_of(&user, session.id_hash().as_ref())
            .await?;
        Ok(session.apply_signed_out(&done))
    }

    /// The store half of [`SessionManager::sign_out_other_sessions`]: ends every session of
    /// `user` but `current` (server and hybrid modes), or bumps the user's epoch (client
    /// mode). Give the result to [`Session::apply_signed_out`] of the current session.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn sign_out_others_of(
        &self,
        user: &str,
        current: Option<&IdHash>,
    ) -> Result<SignedOut, Error> {
        match self.mode {
            Mode::Server | Mode::Hybrid => {
                let ended = self.store.revoke_user_sessions(user, current).await?;
                Ok(SignedOut {
                    user: user.to_owned(),
                    ended,
                    new_epoch: None,
                })
            }
            Mode::Client => {
                let epoch = self.store.bump_user_epoch(user).await?;
                Ok(SignedOut {
                    user: user.to_owned(),
                    ended: 0,
                    new_epoch: Some(epoch),
                })
            }
        }
    }

    /// Logs the session's user out of every session they have, this one included: bumps the
    /// user's epoch (every client-mode and hybrid cookie of the user dies on its next
    /// request, copies included) and deletes the user's records (server and hybrid modes),
    /// then ends this session as [`Session::logout`] does. Returns how many records were
    /// deleted (0 in client mode, which keeps none). Does nothing but the logout for an
    /// anonymous session.
    ///
    /// This is what client mode needs for a logout that a copied cookie cannot survive:
    /// [`Session::logout`] there only removes the browser's cookie.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store; the session is then left as it was.
    pub async fn logout_everywhere(&self, session: &mut Session) -> Result<u64, Error> {
        let ended = match session.user_id() {
            Some(user) => self.revoke_user(user).await?,
            None => 0,
        };
        session.logout();
        Ok(ended)
    }

    /// Ends every session of `user` (password change, account lock): bumps the user's epoch,
    /// so client-mode cookies die too, then deletes the user's records. Returns how many
    /// records were deleted.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn revoke_user(&self, user: &str) -> Result<u64, Error> {
        // Bump first: a login racing this either sees the new epoch or is deleted below
        // (see `create_replacing`).
        self.store.bump_user_epoch(user).await?;
        Ok(self.store.revoke_user_sessions(user, None).await?)
    }

    /// The live sessions of `user`, oldest first, for a "your devices" page.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] in client mode, which keeps no list;
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>, Error> {
        if self.mode == Mode::Client {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "client mode keeps no list of sessions",
            ));
        }
        let now = self.clock.now();
        let mut out: Vec<SessionInfo> = self
            .store
            .sessions_of(user, now)
            .await?
            .into_iter()
            .map(|r| SessionInfo {
                id_hash: r.id_hash,
                created: r.created,
                last_seen: r.last_seen,
                idle_deadline: r.idle_deadline,
                absolute_deadline: r.absolute_deadline,
                device_bound: r.data.contains_key(crate::session::BINDING_KEY),
                device: r.device,
            })
            .collect();
        out.sort_by_key(|s| (s.created, s.id_hash));
        Ok(out)
    }

    /// Ends one session of `user` from a "your devices" page. Returns false if it was not
    /// theirs or is already gone.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn end_session(&self, user: &str, id_hash: &IdHash) -> Result<bool, Error> {
        let now = self.clock.now();
        match self.store.load(id_hash, now).await {
            Ok(Some(r)) if r.user_id.as_deref() == Some(user) => {
                Ok(self.store.delete(id_hash).await?)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == store::ErrorKind::Corrupt => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes expired records in batches of `batch` until none are left; returns the total.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn purge_expired(&self, batch: usize) -> Result<usize, Error> {
        let now = self.clock.now();
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let n = self.store.purge_expired(now, batch).await?;
            total += n;
            if n < batch {
                return Ok(total);
            }
        }
    }
}
