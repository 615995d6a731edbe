//! Rate limits per client address (issue #13, like Postfix's anvil): connections, failed AUTH
//! attempts, VRFY/EXPN and ETRN, each so many per minute (GCRA, `governor`). Clients in
//! `limit_exceptions` (by default `relay_networks` and loopback) are never limited. And the
//! connection limits: so many at once, so many per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::settings::RateLimitSettings;

/// What a limit is about (one limiter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new connection.
    Connection,
    /// A failed AUTH attempt.
    AuthFailure,
    /// A VRFY or EXPN command.
    Verify,
    /// An ETRN command.
    Etrn,
}

/// The limiters of a running server.
#[derive(Debug)]
pub struct RateLimits {
    connection: Option<DefaultKeyedRateLimiter<IpAddr>>,
    auth_failure: Option<DefaultKeyedRateLimiter<IpAddr>>,
    verify: Option<DefaultKeyedRateLimiter<IpAddr>>,
    etrn: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Checks since the last clean-up of addresses not seen for a while.
    checks: AtomicU32,
}

/// After this many checks, addresses whose limit has recovered are forgotten (the keyed
/// store would otherwise grow with every address ever seen).
const CLEAN_EVERY: u32 = 10_000;

fn limiter(per_minute: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl RateLimits {
    /// The limiters for `settings` (0: that limit is off).
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            connection: limiter(settings.connections_per_minute),
            auth_failure: limiter(settings.auth_failures_per_minute),
            verify: limiter(settings.verify_per_minute),
            etrn: limiter(settings.etrn_per_minute),
            checks: AtomicU32::new(0),
        }
    }

    /// Counts one `event` from `ip`; false when that goes over its limit (the caller refuses).
    pub fn allow(&self, event: Event, ip: IpAddr) -> bool {
        let limiter = match event {
            Event::Connection => &self.connection,
            Event::AuthFailure => &self.auth_failure,
            Event::Verify => &self.verify,
            Event::Etrn => &self.etrn,
        };
        let Some(limiter) = limiter else {
            return true;
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) >= CLEAN_EVERY {
            self.checks.store(0, Ordering::Relaxed);
            for l in [
                &self.connection,
                &self.auth_failure,
                &self.verify,
                &self.etrn,
            ]
            .into_iter()
            .flatten()
            {
                l.retain_recent();
            }
        }
        limiter.check_key(&ip.to_canonical()).is_ok()
    }
}

/// Connection limits: a global semaphore and a count per client address.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    global: Arc<Semaphore>,
    /// The size of `global` (`smtp.max_connections`), changed by a reload.
    max: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds a connection's place in the limits; released on drop.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    limits: Arc<ConnectionLimits>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl ConnectionLimits {
    pub(crate) fn new(max: usize) -> Self {
        ConnectionLimits {
            global: Arc::new(Semaphore::new(max.max(1))),
            max: AtomicUsize::new(max.max(1)),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// A place for a connection from `ip`, unless `ip` already holds `max_per_ip` (the
    /// listener's limit) or the server is full.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, max_per_ip: usize) -> Option<Slot> {
        let permit = self.global.clone().try_acquire_owned().ok()?;
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= max_per_ip.max(1) {
            return None;
        }
        *count += 1;
        Some(Slot {
            _permit: permit,
            ip,
            limits: self.clone(),
        })
    }

    /// Makes room for `max` connections at once (a reload); connections beyond a smaller
    /// limit are not closed, new ones wait for them to end.
    pub(crate) fn resize(&self, max: usize) {
        let max = max.max(1);
        let old = self.max.swap(max, Ordering::AcqRel);
        crate::reload::resize(&self.global, old, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_budget_and_zero_is_off() {
        let limits = RateLimits::new(&RateLimitSettings {
            connections_per_minute: 3,
            auth_failures_per_minute: 0,
            verify_per_minute: 1,
            etrn_per_minute: 1,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| limits.allow(Event::Connection, a)));
        assert!(!limits.allow(Event::Connection, a));
        // The same client over IPv4-mapped IPv6 is the same client.
        assert!(!limits.allow(Event::Connection, mapped));
        assert!(limits.allow(Event::Connection, b));
        assert!((0..100).all(|_| limits.allow(Event::AuthFailure, a)));
        assert!(limits.allow(Event::Verify, a) && !limits.allow(Event::Verify, a));
        assert!(limits.allow(Event::Etrn, b) && !limits.allow(Event::Etrn, b));
    }
}
