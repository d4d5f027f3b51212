//! The HTTP API (hyper): keys on every route, API groups as bulkheads with per-source limits and
//! automatic blocking, and a bound on every resource a client can hold.
//!
//! Routes (see [`routes`]): `POST /v1/functions/{name}/messages`, `POST .../invoke`,
//! `GET .../kv/{key}`, `GET .../dlq`, `GET .../dlq/{id}`, `GET .../dlq/{id}/body`,
//! `POST .../dlq/redrive`, `GET /v1/status`, `GET|POST /v1/keys`, `DELETE /v1/keys/{id}`,
//! `GET /v1/blocks`, `DELETE /v1/blocks/{source}`, `GET /v1/alerts`, `GET /healthz`, and the
//! dashboard (see [`dashboard`]): `GET /` and `GET /dashboard/{file}`, static and served without a key.
//!
//! Bounds, all from `[ingress]` (defaults in [`settings`]): connections at once (capped below
//! the file-descriptor limit) and per peer, answered 503 and closed past them; headers within
//! `header_timeout_ms` (64 KiB, 100 headers at most); a body within `body_timeout_ms`, at most
//! [`MAX_BODY_BYTES`] (a larger `Content-Length` is refused before reading) and within the
//! shared budget of body bytes in flight; an idle connection closed after `idle_timeout_ms`.
//! Responses are at most one message body ([`MAX_BODY_BYTES`]) or a page of at most 100 dead
//! letters with 256-byte previews.

pub mod blocker;
pub mod body;
pub mod dashboard;
pub mod dlq;
pub mod groups;
pub mod keys;
pub mod routes;
pub mod settings;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::platform::Platform;
use crate::{Error, Result};

use blocker::Blocker;
use groups::Group;
use keys::Keys;
use settings::IngressSettings;

/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 100;
/// Descriptors kept free for the store, queue, modules and logs when capping connections.
const RESERVED_FDS: u64 = 256;
/// Connections being admitted or answered 503 at once past the connection bound; beyond, they
/// are closed at once.
const MAX_SHEDDING: usize = 64;
/// How long a new connection waits for the slot of a connection closed to make room.
const EVICT_WAIT: Duration = Duration::from_millis(200);

/// The ingress of one host: its settings and live state.
pub struct Ingress {
    pub platform: Arc<Platform>,
    pub settings: IngressSettings,
    pub keys: Keys,
    pub blocker: Blocker,
    pub groups: BTreeMap<String, Group>,
    /// Request body bytes that may be held at once.
    pub body_budget: Arc<Semaphore>,
    /// Bytes of deployed modules being uploaded: one largest module at a time.
    pub module_budget: Arc<Semaphore>,
    pub invoke_slots: Arc<Semaphore>,
    /// The manifest's alert rules, their alerts and deliveries (`GET /v1/alerts`).
    pub alerts: Arc<crate::alerts::Alerts>,
    allowed_hosts: Option<Vec<String>>,
    max_connections: usize,
    connections: Arc<Semaphore>,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    shedding: Arc<Semaphore>,
    shed_connections: AtomicU64,
    evicted_connections: AtomicU64,
    open: AtomicUsize,
    /// Open connections, so the idlest can be closed when the bound is reached.
    live: Mutex<HashMap<u64, Arc<Activity>>>,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress").finish_non_exhaustive()
    }
}

/// The ingress part of `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct IngressStatus {
    pub protections: bool,
    pub groups: Vec<groups::GroupStatus>,
    pub blocks: Vec<blocker::Block>,
    pub blocked_total: u64,
    pub tracked_sources: usize,
    pub connections: usize,
    pub max_connections: usize,
    /// Connections answered 503 at the connection bound (a running total).
    pub shed_connections: u64,
    /// Connections without a request closed to make room at the bound (a running total).
    pub evicted_connections: u64,
    pub body_bytes_in_flight: usize,
    pub max_inflight_body_bytes: usize,
}

impl Ingress {
    /// The ingress for `platform`, listening on `local` (for the Host allowlist).
    pub fn new(platform: Arc<Platform>, local: SocketAddr) -> Arc<Self> {
        let settings = platform.manifest().ingress.clone();
        let max_connections = settings.max_connections.min(fd_cap());
        if max_connections < settings.max_connections {
            tracing::warn!(
                "ingress.max_connections {} lowered to {max_connections}, below the file-descriptor limit",
                settings.max_connections
            );
        }
        let allowed_hosts = allowed_hosts(&settings, local);
        if allowed_hosts.is_none() {
            tracing::warn!(
                "listening on {local} with no [ingress] hosts allowlist: any Host header is accepted"
            );
        }
        let groups = settings
            .all_groups()
            .iter()
            .map(|(n, g)| (n.clone(), Group::new(n, g)))
            .collect();
        let ingress = Arc::new(Ingress {
            keys: Keys::new(platform.raw_store().clone()),
            blocker: Blocker::new(settings.blocking.clone()),
            groups,
            body_budget: Arc::new(Semaphore::new(settings.max_inflight_body_bytes)),
            module_budget: Arc::new(Semaphore::new(crate::releases::MAX_MODULE_BYTES)),
            invoke_slots: Arc::new(Semaphore::new(settings.invoke_concurrency)),
            alerts: crate::alerts::Alerts::new(platform.manifest()),
            allowed_hosts,
            max_connections,
            connections: Arc::new(Semaphore::new(max_connections)),
            per_peer: Mutex::new(HashMap::new()),
            shedding: Arc::new(Semaphore::new(MAX_SHEDDING)),
            shed_connections: AtomicU64::new(0),
            evicted_connections: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            settings,
            platform,
        });
        crate::alerts::start(&ingress);
        // Drop full token buckets now and then so idle sources cost nothing.
        let weak = Arc::downgrade(&ingress);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let Some(i) = weak.upgrade() else { break };
                i.groups.values().for_each(Group::tidy);
            }
        });
        ingress
    }

    /// Whether a request's Host header names this API.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(allowed) = &self.allowed_hosts else {
            return true;
        };
        let name = host_name(host);
        allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    pub fn status(&self) -> IngressStatus {
        IngressStatus {
            protections: self.settings.protections,
            groups: self.groups.values().map(Group::status).collect(),
            blocks: self.blocker.list(),
            blocked_total: self.blocker.blocked_total(),
            tracked_sources: self.blocker.tracked(),
            connections: self.open.load(Ordering::Relaxed),
            max_connections: self.max_connections,
            shed_connections: self.shed_connections.load(Ordering::Relaxed),
            evicted_connections: self.evicted_connections.load(Ordering::Relaxed),
            body_bytes_in_flight: self.settings.max_inflight_body_bytes
                - self.body_budget.available_permits(),
            max_inflight_body_bytes: self.settings.max_inflight_body_bytes,
        }
    }

    /// Takes a connection slot for `peer`. At the bound, the connection that has gone longest
    /// without a request is closed to make room (a client holding a half-sent header, or an
    /// idle keep-alive one, never one being answered), and the new one waits a moment for its
    /// slot. `None`: the peer is over its share, or nothing could be freed.
    async fn admit_connection(self: &Arc<Self>, peer: IpAddr) -> Option<ConnGuard> {
        if self.peer_full(peer) || !self.evict_idlest() {
            return None;
        }
        let permit = tokio::time::timeout(EVICT_WAIT, self.connections.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        self.guard(peer, permit)
    }

    /// Whether `peer` holds its share of connections.
    fn peer_full(&self, peer: IpAddr) -> bool {
        let per = self.per_peer.lock().expect("per-peer lock");
        per.get(&peer).copied().unwrap_or(0) >= self.settings.max_connections_per_peer
    }

    /// A slot at once, without waiting: the common case, decided in the accept loop.
    fn try_admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnGuard> {
        if self.peer_full(peer) {
            return None;
        }
        let permit = self.connections.clone().try_acquire_owned().ok()?;
        self.guard(peer, permit)
    }

    fn guard(
        self: &Arc<Self>,
        peer: IpAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<ConnGuard> {
        let mut per = self.per_peer.lock().expect("per-peer lock");
        let n = per.entry(peer).or_default();
        if *n >= self.settings.max_connections_per_peer {
            return None;
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(ConnGuard {
            ingress: self.clone(),
            peer,
            _permit: permit,
        })
    }

    /// Tells the connection without a request in flight that has been quiet longest to close;
    /// false when every connection is being answered.
    fn evict_idlest(&self) -> bool {
        let live = self.live.lock().expect("live lock");
        let victim = live
            .values()
            .filter(|a| {
                a.in_flight.load(Ordering::Acquire) == 0 && !a.evicted.load(Ordering::Acquire)
            })
            .min_by_key(|a| a.since + Duration::from_millis(a.last_ms.load(Ordering::Acquire)));
        match victim {
            Some(a) => {
                a.evicted.store(true, Ordering::Release);
                a.evict.notify_one();
                self.evicted_connections.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

struct ConnGuard {
    ingress: Arc<Ingress>,
    peer: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.ingress.open.fetch_sub(1, Ordering::Relaxed);
        let mut per = self.ingress.per_peer.lock().expect("per-peer lock");
        if let Some(n) = per.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.peer);
            }
        }
    }
}

/// The connection bound the descriptor limit allows (after raising the soft limit to the hard).
fn fd_cap() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    limit.saturating_sub(RESERVED_FDS).max(16) as usize
}

/// `None`: any Host (a public listen address with no allowlist).
fn allowed_hosts(s: &IngressSettings, local: SocketAddr) -> Option<Vec<String>> {
    let ip = local.ip();
    if s.hosts.is_empty() && ip.is_unspecified() {
        return None;
    }
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    hosts.push(ip.to_string());
    hosts.extend(s.hosts.iter().cloned());
    Some(hosts)
}

/// The host part of a Host header (`name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// Serves the API on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, platform: Arc<Platform>, stop: watch::Receiver<bool>) {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    serve_ingress(listener, Ingress::new(platform, local), stop).await
}

/// Serves `ingress` on `listener` until `stop` turns true.
pub async fn serve_ingress(
    listener: TcpListener,
    ingress: Arc<Ingress>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the bound keeps it rare.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        if let Some(guard) = ingress.try_admit(peer.ip()) {
            tokio::spawn(serve_connection(
                ingress.clone(),
                stream,
                peer,
                guard,
                stop.clone(),
            ));
            continue;
        }
        // At a bound: making room waits a moment (see `admit_connection`), off the accept loop
        // and bounded.
        let Ok(admitting) = ingress.shedding.clone().try_acquire_owned() else {
            ingress.shed_connections.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (ingress, stop) = (ingress.clone(), stop.clone());
        tokio::spawn(async move {
            match ingress.admit_connection(peer.ip()).await {
                Some(guard) => {
                    drop(admitting);
                    serve_connection(ingress, stream, peer, guard, stop).await
                }
                None => shed(&ingress, stream, admitting).await,
            }
        });
    }
}

/// Answers a connection over the bound with 503 and closes it: the answer, then our end shut,
/// then what the client sent drained briefly so the close is not a reset that loses the answer.
async fn shed(
    ingress: &Arc<Ingress>,
    mut stream: TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    use tokio::io::AsyncReadExt as _;
    ingress.shed_connections.fetch_add(1, Ordering::Relaxed);
    let body = r#"{"error":"too many connections; retry later"}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(resp.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 << 10;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left -= n.min(left);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Activity of one connection, for the idle timeout.
struct Activity {
    in_flight: AtomicUsize,
    since: Instant,
    /// ms after `since` of the last request's end (or the connection's start).
    last_ms: AtomicU64,
    /// Set and notified when the connection must close to make room.
    evicted: std::sync::atomic::AtomicBool,
    evict: tokio::sync::Notify,
}

async fn serve_connection(
    ingress: Arc<Ingress>,
    stream: TcpStream,
    peer: SocketAddr,
    guard: ConnGuard,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        since: Instant::now(),
        last_ms: AtomicU64::new(0),
        evicted: std::sync::atomic::AtomicBool::new(false),
        evict: tokio::sync::Notify::new(),
    });
    let id = ingress.next_conn.fetch_add(1, Ordering::Relaxed);
    ingress
        .live
        .lock()
        .expect("live lock")
        .insert(id, activity.clone());
    let svc = {
        let (ingress, activity) = (ingress.clone(), activity.clone());
        service_fn(move |req| {
            let (ingress, activity) = (ingress.clone(), activity.clone());
            activity.in_flight.fetch_add(1, Ordering::AcqRel);
            async move {
                let resp = routes::handle(&ingress, req, peer).await;
                activity.last_ms.store(
                    activity.since.elapsed().as_millis() as u64,
                    Ordering::Release,
                );
                activity.in_flight.fetch_sub(1, Ordering::AcqRel);
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let s = &ingress.settings;
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_timeout())
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let idle = s.idle_timeout();
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
                break;
            }
            _ = tokio::time::sleep(idle / 4) => {
                let last = Duration::from_millis(activity.last_ms.load(Ordering::Acquire));
                let quiet = activity.since.elapsed().saturating_sub(last);
                // No request being handled and none for `idle`: a keep-alive connection left
                // open, or a client that never finished its headers. Nothing is lost closing it.
                if activity.in_flight.load(Ordering::Acquire) == 0 && quiet >= idle {
                    tracing::debug!("closing idle connection from {peer}");
                    break;
                }
            }
            _ = activity.evict.notified() => {
                if activity.in_flight.load(Ordering::Acquire) == 0 {
                    tracing::debug!("closing the idlest connection ({peer}) to make room");
                    break;
                }
                // A request started meanwhile: let it finish, then close.
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    ingress.live.lock().expect("live lock").remove(&id);
    drop(guard);
}

/// Binds the listen address with a clear error.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::io(
            format!("cannot listen on {addr} (pass --listen or set LEVEE_LISTEN to pick another address)"),
            e,
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listen address", e))?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }
}
