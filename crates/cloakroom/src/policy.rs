//! Expiry policy and the clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, ErrorKind};
use crate::record::Record;

/// When sessions expire.
///
/// Both timeouts apply together: a session ends after [`Policy::idle`] without a request, or
/// [`Policy::absolute`] after login, whichever comes first. The defaults, 30 minutes idle
/// and 12 hours absolute, are NIST SP 800-63B's reauthentication limits for AAL2.
///
/// Idle expiry slides, but a request writes the new idle deadline only once
/// [`Policy::touch_fraction`] of the idle window has passed since the last write (default a
/// tenth: at most one write per 3 minutes per session, and a session never lives less
/// than 27 of its 30 idle minutes).
///
/// A "remember me" login ([`Session::login_remembered`](crate::Session::login_remembered))
/// asks for a longer lifetime; [`Policy::max_remember`] bounds it (default 30 days, NIST SP
/// 800-63B's reauthentication limit for AAL1), and a longer request is cut to the bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    idle: Duration,
    absolute: Duration,
    touch_fraction: f64,
    max_remember: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 60 * 60),
            touch_fraction: 0.1,
            max_remember: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

impl Policy {
    /// The idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// The absolute timeout.
    pub fn absolute(&self) -> Duration {
        self.absolute
    }

    /// The fraction of the idle window after which a request re-writes the idle deadline.
    pub fn touch_fraction(&self) -> f64 {
        self.touch_fraction
    }

    /// The longest lifetime a "remember me" login may have.
    pub fn max_remember(&self) -> Duration {
        self.max_remember
    }

    /// The lifetime a "remember me" login asking for `requested` gets: `requested`, cut to
    /// [`Policy::max_remember`].
    pub fn remember_lifetime(&self, requested: Duration) -> Duration {
        requested.min(self.max_remember)
    }

    /// Sets the longest lifetime a "remember me" login may have (default 30 days). A login
    /// asking for more gets this much.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if it is under one second.
    pub fn with_max_remember(mut self, max: Duration) -> Result<Self, Error> {
        self.max_remember = at_least_a_second("remember-me bound", max)?;
        Ok(self)
    }

    /// Sets the idle timeout.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if it is under one second.
    pub fn with_idle(mut self, idle: Duration) -> Result<Self, Error> {
        self.idle = at_least_a_second("idle timeout", idle)?;
        Ok(self)
    }

    /// Sets the absolute timeout.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if it is under one second.
    pub fn with_absolute(mut self, absolute: Duration) -> Result<Self, Error> {
        self.absolute = at_least_a_second("absolute timeout", absolute)?;
        Ok(self)
    }

    /// Sets the touch fraction: 0 writes on every request, 1 only when the idle window has
    /// fully passed (which, as the session is then dead, means never).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] unless `0 <= fraction < 1`.
    pub fn with_touch_fraction(mut self, fraction: f64) -> Result<Self, Error> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "touch fraction must be in [0, 1)",
            ));
        }
        self.touch_fraction = fraction;
        Ok(self)
    }

    /// The idle deadline a request at `now` earns, capped at the absolute deadline.
    pub fn idle_deadline(&self, now: u64, absolute_deadline: u64) -> u64 {
        now.saturating_add(self.idle.as_secs())
            .min(absolute_deadline)
    }

    /// The absolute deadline of a session created at `now`.
    pub fn absolute_deadline(&self, now: u64) -> u64 {
        now.saturating_add(self.absolute.as_secs())
    }

    /// Whether a request at `now` should write a new idle deadline for `record`: true once
    /// the touch fraction of the idle window has passed since `last_seen`, and only if that
    /// would move the deadline.
    pub fn needs_touch(&self, record: &Record, now: u64) -> bool {
        let threshold = (self.idle.as_secs() as f64 * self.touch_fraction) as u64;
        now.saturating_sub(record.last_seen) >= threshold
            && self.idle_deadline(now, record.absolute_deadline) > record.idle_deadline
    }
}

/// `duration`, unless it is under one second (`what` names it in the error).
fn at_least_a_second(what: &str, duration: Duration) -> Result<Duration, Error> {
    if duration.as_secs() == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{what} must be >= 1 s"),
        ));
    }
    Ok(duration)
}

/// Where the session layer gets the time (unix seconds). Inject a [`ManualClock`] in tests.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now)))
    }

    /// Sets the time.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdHash;

    #[test]
    fn defaults_are_nist_aal2() {
        let p = Policy::default();
        assert_eq!(p.idle(), Duration::from_secs(1800));
        assert_eq!(p.absolute(), Duration::from_secs(43200));
        assert_eq!(p.max_remember(), Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn remember_me_is_cut_to_the_bound() {
        let p = Policy::default()
            .with_max_remember(Duration::from_secs(7 * 86_400))
            .unwrap();
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(
            p.remember_lifetime(Duration::from_secs(86_400)),
            Duration::from_secs(86_400)
        );
        assert_eq!(p.remember_lifetime(week), week);
        assert_eq!(p.remember_lifetime(Duration::from_secs(365 * 86_400)), week);
        assert!(p.with_max_remember(Duration::ZERO).is_err());
    }

    #[test]
    fn touch_only_after_the_fraction() {
        let p = Policy::default();
        let r = Record::new(IdHash::from_bytes([0; 32]), 1000, &p);
        assert!(!p.needs_touch(&r, 1000));
        assert!(!p.needs_touch(&r, 1000 + 179));
        assert!(p.needs_touch(&r, 1000 + 180));
        // Near the absolute deadline the idle deadline cannot move: no write.
        let mut late = r.clone();
        late.idle_deadline = late.absolute_deadline;
        assert!(!p.needs_touch(&late, late.absolute_deadline - 10));
        assert_eq!(p.idle_deadline(5, 100), 100);
        assert!(p.with_touch_fraction(1.0).is_err());
        assert!(p.with_idle(Duration::ZERO).is_err());
    }

    #[test]
    fn manual_clock_moves() {
        let c = ManualClock::new(10);
        let c2 = c.clone();
        c.advance(Duration::from_secs(5));
        assert_eq!(c2.now(), 15);
    }
}
