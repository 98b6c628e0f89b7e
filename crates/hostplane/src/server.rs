//! The HTTP server loop: hyper with limits that `axum::serve` does not expose, and a
//! graceful shutdown that lets accepted requests finish.
//!
//! Every phase of a connection is bounded: a connection with no request in flight is
//! closed once `header_read_timeout` passes before its first request (this covers a
//! client that sends nothing, part of the HTTP/2 preface, or an unfinished HTTP/2
//! handshake) or `idle_timeout` after its last one (HTTP/1 keep-alive and HTTP/2 alike);
//! HTTP/1 request headers must arrive within `header_read_timeout`. Connections are
//! capped in all and per client address, and accept errors back off.

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

pub struct Limits {
    /// Time a client has to send its first request, and each request's headers.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight after a request.
    pub idle_timeout: Duration,
    /// Open connections in all; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections from one client address; more are closed at once.
    pub max_connections_per_address: usize,
    /// Time in-flight requests get to finish once shutdown starts.
    pub drain_timeout: Duration,
}

pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::new(limits.max_connections_per_address);
    let (closing, _) = watch::channel(false);
    let timeouts = (limits.header_read_timeout, limits.idle_timeout);
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                backoff.reset();
                conn
            }
            Err(e) => {
                // Out of file descriptors and the like: wait longer each time, keep serving.
                let pause = backoff.next();
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "accept failed");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let Some(address_slot) = per_address.take(peer.ip()) else {
            tracing::debug!(%peer, "refused: too many connections from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let service = TowerToHyperService::new(tracked(app.clone(), activity.clone()));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let mut closing = closing.subscribe();
        tokio::spawn(async move {
            let _slots = (permit, address_slot);
            tokio::pin!(conn);
            let idle = tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.wait_for(|c| *c) => false,
                () = activity.idle(timeouts.0, timeouts.1) => true,
            };
            // An idle connection has nothing to finish: HTTP/2 gets its GOAWAY, and a
            // client that does not read it is dropped after one more header deadline.
            // At shutdown, requests in flight finish within the server's drain time.
            conn.as_mut().graceful_shutdown();
            if idle {
                let _ = tokio::time::timeout(timeouts.0, conn).await;
            } else {
                let _ = conn.await;
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!("all connections finished"),
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("shutdown: some connections did not finish in time")
        }
    }
    Ok(())
}

/// The router, counting the connection's requests from their start until their
/// response body is done (or dropped).
fn tracked(
    app: Router,
    activity: Arc<Activity>,
) -> impl tower::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let in_flight = activity.start();
        let app = app.clone();
        async move {
            let res = app.oneshot(req.map(Body::new)).await?;
            Ok(res.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    })
}

/// A connection's requests, read by its idle timer: how many are in flight, whether one
/// was ever made, and when one last started or ended (milliseconds after `opened`).
/// Atomics only: a request costs no wake-up of the timer, which looks when it is due.
struct Activity {
    opened: std::time::Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    last: AtomicU64,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            opened: std::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let at = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(at, Ordering::Release);
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.touch();
        self.served.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Returns once the connection had no request in flight for `first` before its
    /// first request, or for `then` after a later one.
    async fn idle(&self, first: Duration, then: Duration) {
        loop {
            let bound = if self.served.load(Ordering::Relaxed) {
                then
            } else {
                first
            };
            let due = if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy (a long-poll, an upload): look again later.
                std::time::Instant::now() + bound
            } else {
                let last = self.opened + Duration::from_millis(self.last.load(Ordering::Acquire));
                if last.elapsed() >= bound {
                    return;
                }
                last + bound
            };
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// Open connections per client address.
#[derive(Clone)]
struct PerAddress {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

struct AddressSlot(PerAddress, IpAddr);

impl PerAddress {
    fn new(max: usize) -> Self {
        PerAddress {
            max,
            open: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.lock();
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.0.lock();
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Pauses after failed accepts: 10 ms, doubling up to one second.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = Duration::from_millis(10 << self.0.min(7)).min(Duration::from_secs(1));
        self.0 += 1;
        pause
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }

    #[test]
    fn addresses_are_capped_one_by_one() {
        let caps = PerAddress::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = caps.take(a).unwrap();
        let _second = caps.take(a).unwrap();
        assert!(caps.take(a).is_none());
        assert!(caps.take(b).is_some());
        drop(first);
        assert!(caps.take(a).is_some());
    }
}
