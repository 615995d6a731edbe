//! Taking connections: the accept loop of one listener, the PROXY protocol header where the
//! listener expects one ([`crate::proxy`]), and admission (the connection rate and the
//! connections per address, counted on the real client's address).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};
use yizhan_proto::reply::Reply;

use crate::conn;
use crate::limits::ConnectionLimits;
use crate::listener::Connector;
use crate::proxy::{self, HEADER_TIMEOUT};

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    connector: Connector,
    limits: Arc<ConnectionLimits>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted: std::io::Result<(TcpStream, SocketAddr)> = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = connector.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning (mini-redis does the same).
                warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy_networks = connector.live.load().settings.listeners[connector.index]
            .proxy_networks
            .clone();
        match proxy_networks {
            Some(networks) => proxied(&connector, &limits, stream, peer, &networks),
            None => admit(&connector, &limits, stream, peer, connector.local),
        }
    }
}

/// A connection to a PROXY protocol listener: from a balancer in `networks`, its header is
/// read (in a task of its own: a slow balancer holds up no one) and the session admitted under
/// the client it names; from anywhere else, closed at once.
fn proxied(
    connector: &Connector,
    limits: &Arc<ConnectionLimits>,
    mut stream: TcpStream,
    balancer: SocketAddr,
    networks: &[IpNet],
) {
    if !networks.iter().any(|n| n.contains(&balancer.ip())) {
        warn!(
            peer = %balancer,
            "connection closed: this listener takes the PROXY protocol, and only from proxy_networks"
        );
        crate::metrics::connection_refused("proxy");
        return;
    }
    let connector = connector.clone();
    let limits = limits.clone();
    connector.tracker.clone().spawn(async move {
        let header = tokio::select! {
            header = proxy::read_header(&mut stream, HEADER_TIMEOUT) => header,
            _ = connector.shutdown.cancelled() => return,
        };
        match header {
            Ok(Some(ends)) => {
                debug!(%balancer, client = %ends.client, "PROXY protocol header");
                admit(&connector, &limits, stream, ends.client, ends.server);
            }
            // A health check (LOCAL, UNKNOWN): the balancer speaks for itself.
            Ok(None) => admit(&connector, &limits, stream, balancer, connector.local),
            Err(e) => {
                warn!(peer = %balancer, error = %e, "connection closed: PROXY protocol header refused");
                crate::metrics::connection_refused("proxy");
            }
        }
    });
}

/// Admits a connection from `peer` (the rate of connections and the connections per
/// address, unless the address is exempt) and serves it, or answers 421 and closes it.
fn admit(
    connector: &Connector,
    limits: &Arc<ConnectionLimits>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let shared = connector.live.load();
    let smtp = &shared.policies[connector.index].smtp;
    let exempt = crate::policy::is_limit_exempt(smtp, peer.ip());
    if !exempt
        && !shared
            .limits
            .allow(crate::limits::Event::Connection, peer.ip())
    {
        warn!(%peer, "connection refused: connection rate limit of the address");
        crate::metrics::connection_refused("rate");
        let reply = Reply::rate_limited(&shared.settings.hostname, "connections");
        connector.tracker.spawn(conn::refuse(stream, reply));
        return;
    }
    let max_per_ip = if exempt {
        usize::MAX
    } else {
        smtp.max_connections_per_ip
    };
    let Some(slot) = limits.acquire(peer.ip(), max_per_ip) else {
        warn!(%peer, "connection refused: too many connections");
        crate::metrics::connection_refused("too_many");
        let reply = Reply::too_many_connections(&shared.settings.hostname);
        connector.tracker.spawn(conn::refuse(stream, reply));
        return;
    };
    connector.spawn(stream, peer, local, Some(slot));
}
