//! A configuration reload (SIGHUP, `yizhan reload`): a new, validated [`Settings`] replaces
//! the one in force as one value. Sessions in flight keep the configuration they were accepted
//! under; new sessions, new deliveries and the next picked-up message use the new one.
//!
//! Some settings cannot change under a running server: the listeners (sockets bound as root),
//! `data_dir`, `user` and `group`, turning TLS on or off, and the DNS servers of outbound
//! delivery (the resolver is built once). When they differ, the running values are kept and
//! each is named, so the operator knows a restart is needed.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tracing::info;

use crate::conn::Shared;
use crate::limits::{ConnectionLimits, RateLimits};
use crate::listener::{outbound_settings, policies, runner_settings};
use crate::queue::RunnerHandle;
use crate::settings::{LiveSettings, Settings};
use crate::tls::TlsError;

/// Applies a new configuration to a running server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    /// What sessions are accepted under.
    pub(crate) live: Arc<ArcSwap<Shared>>,
    /// What the maildrop pickup reads.
    pub(crate) pickup: LiveSettings,
    /// The connection limits (`smtp.max_connections`).
    pub(crate) connections: Arc<ConnectionLimits>,
    /// The queue runner.
    pub(crate) runner: RunnerHandle,
    /// The addresses the listeners are bound to (for loop detection).
    pub(crate) listeners: Vec<SocketAddr>,
}

/// Why a reload was refused (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new certificate or key does not load.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The settings that differ but need a restart, each with the value kept, e.g.
    /// `data_dir (still /var/lib/yizhan)`.
    pub needs_restart: Vec<String>,
}

impl Reloader {
    /// The settings in force.
    pub fn current(&self) -> Arc<Settings> {
        self.live.load().settings.clone()
    }

    /// Makes `new` the configuration in force (what needs a restart keeps its running value).
    /// On error nothing changes.
    pub fn apply(&self, mut new: Settings) -> Result<Reloaded, ReloadError> {
        let old = self.live.load_full();
        let needs_restart = keep_fixed(&old.settings, &mut new);
        // The files are read again even when their names did not change: a reload is also how
        // a renewed certificate is taken at once.
        if let (Some(store), Some(tls)) = (&old.tls, &new.tls) {
            let info = store.replace(tls.clone())?;
            let now = jiff::Timestamp::now().as_second();
            info!(certificate = %info.describe(now), "TLS certificate reloaded");
        }
        let limits = if new.smtp.rate_limits == old.settings.smtp.rate_limits {
            old.limits.clone()
        } else {
            Arc::new(RateLimits::new(&new.smtp.rate_limits))
        };
        let settings = Arc::new(new);
        let mut outbound = outbound_settings(&settings);
        outbound.ourselves.listeners.clone_from(&self.listeners);
        self.runner.reconfigure(
            runner_settings(&settings),
            outbound,
            settings.directory.clone(),
        );
        self.pickup.store(settings.clone());
        self.connections.resize(settings.smtp.max_connections);
        self.live.store(Arc::new(Shared {
            policies: policies(&settings, old.tls.is_some()),
            credentials: Arc::new(settings.credentials.clone()),
            settings,
            spool: old.spool.clone(),
            runner: old.runner.clone(),
            tls: old.tls.clone(),
            password_checks: old.password_checks.clone(),
            limits,
            checker: old.checker.clone(),
            held_budget: old.held_budget.clone(),
        }));
        Ok(Reloaded { needs_restart })
    }
}

/// Puts back into `new` the running values of what cannot change without a restart, and
/// names each that differed.
fn keep_fixed(old: &Settings, new: &mut Settings) -> Vec<String> {
    let mut kept = Vec::new();
    let same_sockets = old.listeners.len() == new.listeners.len()
        && old
            .listeners
            .iter()
            .zip(&new.listeners)
            .all(|(o, n)| o.address == n.address && o.kind == n.kind);
    if !same_sockets {
        let running: Vec<String> = old
            .listeners
            .iter()
            .map(|l| format!("{} ({})", l.address, l.kind))
            .collect();
        kept.push(format!("listener (still {})", running.join(", ")));
        new.listeners.clone_from(&old.listeners);
    }
    if new.data_dir != old.data_dir {
        kept.push(format!("data_dir (still {})", old.data_dir.display()));
        new.data_dir.clone_from(&old.data_dir);
    }
    if new.user != old.user || new.group != old.group {
        kept.push(format!(
            "user/group (still {}/{})",
            old.user,
            old.group.as_deref().unwrap_or("its own")
        ));
        new.user.clone_from(&old.user);
        new.group.clone_from(&old.group);
    }
    if new.tls.is_some() != old.tls.is_some() {
        let state = if old.tls.is_some() { "on" } else { "off" };
        kept.push(format!("tls (still {state})"));
        new.tls.clone_from(&old.tls);
    }
    if new.smtp.max_held_bytes != old.smtp.max_held_bytes {
        kept.push(format!(
            "smtp.max_held_bytes (still {})",
            old.smtp.max_held_bytes
        ));
        new.smtp.max_held_bytes = old.smtp.max_held_bytes;
    }
    if new.queue.maildir_sync != old.queue.maildir_sync {
        kept.push(format!(
            "queue.maildir_sync (still {:?})",
            old.queue.maildir_sync
        ));
        new.queue.maildir_sync = old.queue.maildir_sync;
    }
    let (o, n) = (&old.delivery, &mut new.delivery);
    if n.dns_servers != o.dns_servers || n.dns_timeout != o.dns_timeout {
        kept.push("delivery.dns_servers/dns_timeout (still the running ones)".to_owned());
        n.dns_servers.clone_from(&o.dns_servers);
        n.dns_timeout = o.dns_timeout;
    }
    kept
}

/// Grows `semaphore` from `old` to `new` permits at once, or shrinks it as permits come back
/// (permits in use are never taken away).
pub(crate) fn resize(semaphore: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        semaphore.add_permits(new - old);
    } else if new < old {
        let excess = old - new;
        let taken = semaphore.forget_permits(excess);
        let owed = u32::try_from(excess - taken).unwrap_or(u32::MAX);
        if owed > 0 {
            let semaphore = semaphore.clone();
            tokio::spawn(async move {
                if let Ok(permits) = semaphore.acquire_many_owned(owed).await {
                    permits.forget();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::settings::{ListenerKind, ListenerSettings};

    #[test]
    fn what_needs_a_restart_keeps_its_running_value_and_is_named() {
        let old = Settings {
            data_dir: PathBuf::from("/srv/old"),
            ..Settings::default()
        };
        let mut new = old.clone();
        new.smtp.max_recipients = 200;
        new.listeners[0].overrides.max_recipients = Some(150);
        assert!(keep_fixed(&old, &mut new).is_empty(), "overrides reload");
        assert_eq!(new.listeners[0].overrides.max_recipients, Some(150));

        new.data_dir = PathBuf::from("/srv/new");
        new.user = "other".into();
        new.listeners.push(ListenerSettings::new(
            "127.0.0.1:587".parse().unwrap(),
            ListenerKind::Submission,
        ));
        new.delivery.dns_servers = vec!["192.0.2.53:53".parse().unwrap()];
        let kept = keep_fixed(&old, &mut new);
        assert_eq!(kept.len(), 4, "{kept:?}");
        assert!(kept[0].starts_with("listener (still 127.0.0.1:2525 (smtp))"));
        assert_eq!(kept[1], "data_dir (still /srv/old)");
        assert_eq!(new.data_dir, old.data_dir);
        assert_eq!(new.user, old.user);
        assert_eq!(new.listeners, old.listeners);
        assert!(new.delivery.dns_servers.is_empty());
        assert_eq!(new.smtp.max_recipients, 200, "the rest is taken");
    }

    #[tokio::test]
    async fn semaphores_grow_at_once_and_shrink_as_permits_return() {
        let semaphore = Arc::new(Semaphore::new(4));
        let held = semaphore.clone().acquire_many_owned(3).await.unwrap();
        resize(&semaphore, 4, 8);
        assert_eq!(semaphore.available_permits(), 5);
        resize(&semaphore, 8, 2);
        // Five were free and are gone; one more is owed by the holder.
        assert_eq!(semaphore.available_permits(), 0);
        drop(held);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(semaphore.available_permits(), 2);
    }
}
