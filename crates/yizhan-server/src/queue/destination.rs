//! Destinations (an MX domain or a smarthost): how many deliveries each may have at once, and
//! whether it is down.
//!
//! A message that finds its destination's permits all taken does not wait for one (it would
//! hold a slot of the runner's window that mail for another destination could use, which is
//! how one dead or slow destination used to stop everything): its recipients for that
//! destination are left as they are, and the message is *parked* until a permit of that
//! destination is given back ([`DestinationPermit`]'s drop tells the runner which one).
//!
//! A destination none of whose hosts could be reached (refused, timed out, no greeting) is
//! *down* for a back-off of its own (the retry schedule's, `[queue] retry_initial` doubling up
//! to `retry_max_backoff`, counted in the destination's failures in a row): its mail is
//! deferred at once ("delivery temporarily suspended", as Postfix says) with the next attempt no
//! earlier than the end of the back-off, and when it ends one delivery probes the destination
//! while the others stay parked. An answer from any host (even a refusal) brings it back up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use super::shared::Shared;

/// The destinations the runner has delivered to, by key (see `remote::destination_key`).
#[derive(Default)]
pub(super) struct Destinations {
    map: Mutex<HashMap<String, Destination>>,
    /// Keys whose permit was given back since the runner last looked.
    freed: Arc<Mutex<Vec<String>>>,
}

struct Destination {
    permits: Arc<Semaphore>,
    down: Option<Down>,
}

/// Why and until when a destination is down.
struct Down {
    /// Unix seconds.
    until: i64,
    reason: String,
    /// Back-offs in a row.
    failures: u32,
    /// One delivery is probing it (the back-off is over).
    probing: bool,
}

/// What a delivery to a destination may do now.
pub(super) enum Slot {
    /// Go ahead; the permit is given back on drop.
    Go(DestinationPermit),
    /// Every permit is taken: park the message until one is given back.
    Busy,
    /// Down: defer, not before `until` (Unix seconds).
    Down { until: i64, reason: String },
}

/// One of a destination's permits; on drop the runner hears that the destination has room.
pub(super) struct DestinationPermit {
    permit: Option<OwnedSemaphorePermit>,
    key: String,
    freed: Arc<Mutex<Vec<String>>>,
    wake: Arc<Notify>,
}

impl Drop for DestinationPermit {
    fn drop(&mut self) {
        // Given back first, so that the runner sees the room when it hears of it.
        drop(self.permit.take());
        lock(&self.freed).push(std::mem::take(&mut self.key));
        self.wake.notify_one();
    }
}

impl Destinations {
    /// The keys of destinations that got room back since the last call.
    pub(super) fn take_freed(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.freed))
    }
}

impl Shared {
    /// Asks for a slot at destination `key` at `now` (Unix seconds).
    pub(super) fn destination_slot(&self, key: &str, now: i64) -> Slot {
        let mut map = lock(&self.destinations.map);
        let dest = map.entry(key.to_owned()).or_insert_with(|| Destination {
            permits: Arc::new(Semaphore::new(
                self.config().outbound.per_destination.max(1),
            )),
            down: None,
        });
        if let Some(down) = &mut dest.down {
            if down.until > now {
                return Slot::Down {
                    until: down.until,
                    reason: down.reason.clone(),
                };
            }
            if down.probing {
                return Slot::Busy;
            }
            down.probing = true;
        }
        match dest.permits.clone().try_acquire_owned() {
            Ok(permit) => Slot::Go(DestinationPermit {
                permit: Some(permit),
                key: key.to_owned(),
                freed: self.destinations.freed.clone(),
                wake: self.wake.clone(),
            }),
            Err(_) => {
                if let Some(down) = &mut dest.down {
                    down.probing = false;
                }
                Slot::Busy
            }
        }
    }

    /// How many parked messages of destination `key` may start now: its free permits, or
    /// all of them when it is down (they are deferred without connecting).
    pub(super) fn destination_room(&self, key: &str, now: i64) -> usize {
        let map = lock(&self.destinations.map);
        match map.get(key) {
            None => usize::MAX,
            Some(dest) => match &dest.down {
                Some(down) if down.until > now => usize::MAX,
                Some(down) if down.probing => 0,
                Some(_) => 1,
                None => dest.permits.available_permits(),
            },
        }
    }

    /// No host of destination `key` could be reached at `now`: it is down for its back-off.
    /// Returns until when.
    pub(super) fn destination_failed(&self, key: &str, now: i64, reason: &str) -> i64 {
        let mut map = lock(&self.destinations.map);
        let Some(dest) = map.get_mut(key) else {
            return now;
        };
        let failures = dest.down.as_ref().map_or(0, |d| d.failures) + 1;
        let backoff = self.config().settings.retry.wait(failures).max(1);
        let until = now.saturating_add(backoff);
        warn!(
            destination = key,
            retry_in = backoff,
            failures,
            error = reason,
            "destination is down; its mail is deferred until the back-off ends"
        );
        dest.down = Some(Down {
            until,
            reason: reason.to_owned(),
            failures,
            probing: false,
        });
        until
    }

    /// Forgets that destinations are down: those of `domain` (`mx:` and any smarthost), or
    /// all. A flush asks for delivery now, so a back-off must not stand in its way.
    pub(super) fn revive_destinations(&self, domain: Option<&str>) {
        let mut map = lock(&self.destinations.map);
        for (key, dest) in map.iter_mut() {
            let wanted = match domain {
                None => true,
                Some(d) => key.strip_prefix("mx:") == Some(d) || key.starts_with("smarthost:"),
            };
            if wanted && dest.down.take().is_some() {
                info!(destination = %key, "destination back-off cleared by a flush");
            }
        }
    }

    /// A host of destination `key` answered: it is up.
    pub(super) fn destination_answered(&self, key: &str) {
        let mut map = lock(&self.destinations.map);
        if let Some(dest) = map.get_mut(key)
            && dest.down.take().is_some()
        {
            info!(destination = key, "destination is up again");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
