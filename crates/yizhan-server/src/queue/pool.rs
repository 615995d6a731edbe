//! Connections kept open per host, and the permits that bound deliveries per destination.

use tokio::time::Instant;
use tracing::debug;
use yizhan_delivery::smtp::Connection;

use super::shared::Shared;

impl Shared {
    /// An idle connection to this host with this policy, if one is kept.
    pub(super) fn take_connection(&self, key: &str) -> Option<Connection> {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = self.config().outbound.connection_idle;
        let list = pool.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < idle && conn.is_usable() {
                return Some(conn);
            }
            tokio::spawn(conn.quit());
        }
        None
    }

    pub(super) fn return_connection(&self, key: String, conn: Connection) {
        if !conn.is_usable() || conn.messages() >= self.config().outbound.messages_per_connection {
            tokio::spawn(conn.quit());
            return;
        }
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pool.entry(key).or_default().push((conn, Instant::now()));
        drop(pool);
        // The runner sleeps until the earliest idle expiry; let it recompute.
        self.wake.notify_one();
    }

    /// Closes idle connections past their time (all of them with `all`).
    pub(super) fn sweep_pool(&self, all: bool) {
        let idle = self.config().outbound.connection_idle;
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for list in pool.values_mut() {
            let (keep, close): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|(_, since)| !all && since.elapsed() < idle);
            *list = keep;
            for (conn, _) in close {
                debug!(target = ?conn.target(), "closing idle connection");
                tokio::spawn(conn.quit());
            }
        }
        pool.retain(|_, list| !list.is_empty());
    }

    pub(super) fn pool_expiry(&self) -> Option<Instant> {
        let pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pool.values()
            .flatten()
            .map(|(_, since)| *since + self.config().outbound.connection_idle)
            .min()
    }
}
