//! The HTTP/1.1 listener: accepts up to `server.max_connections` connections, serves each with
//! hyper and the [`connection`](super::connection) limits, and closes them on shutdown.
//!
//! At the limit, a new connection takes the slot of the connection that has been idle the
//! longest (no request in progress, so nothing is lost), so `/healthz` and real deliveries still
//! get through while thousands of idle or slow-header connections are open. Only when every
//! connection has a request in progress is a new one answered 503 with `Retry-After` at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::Problem;
use super::connection::{Activity, Clock, ConnIo, InFlight, Limits, Verdict, raw_response};

/// How long a new connection waits for the slot of an evicted idle one, in all and before it
/// evicts the next.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
const EVICTION_STEP: Duration = Duration::from_millis(100);
/// How long a refused connection is read from (and discarded) after its 503, so the client
/// reads the response instead of a reset.
const REFUSAL_LINGER: Duration = Duration::from_millis(100);

/// The open connections, for choosing one to evict. Touched on accept and close, never per
/// request.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Registry {
    fn add(&self, activity: Arc<Activity>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .expect("registry poisoned")
            .insert(id, activity);
        id
    }

    fn remove(&self, id: u64) {
        self.open.lock().expect("registry poisoned").remove(&id);
    }

    /// Asks the connection idle the longest to close; false when every connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.open.lock().expect("registry poisoned");
        open.values()
            .filter(|a| a.is_idle() && !a.is_evicted())
            .min_by_key(|a| a.last_active_ms())
            .is_some_and(|a| a.evict())
    }
}

/// The connection slots, and the new connections waiting for one.
struct Admission {
    slots: Arc<Semaphore>,
    registry: Arc<Registry>,
    waiting: AtomicUsize,
}

impl Admission {
    /// A slot for a new connection at the limit: closes the connection idle the longest and
    /// takes the slot it frees. If that one got a request meanwhile (it then finishes before
    /// closing), the next idle one follows. `None` when every connection is busy.
    async fn evict_and_wait(&self) -> Option<OwnedSemaphorePermit> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + EVICTION_WAIT;
        let slot = loop {
            if !self.registry.evict_oldest_idle() {
                break None;
            }
            let wait = tokio::time::timeout(EVICTION_STEP, self.slots.clone().acquire_owned());
            match wait.await {
                Ok(slot) => break slot.ok(),
                Err(_) if tokio::time::Instant::now() >= deadline => break None,
                Err(_) => continue,
            }
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        slot
    }
}

/// Serves `app` on `listener` until `stop` is cancelled; then stops accepting, lets requests
/// in progress finish (idle connections close at once) and returns when every connection is
/// closed. The caller bounds the whole by its shutdown deadline; dropping the future closes
/// whatever is still open.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let clock = Clock::new();
    let registry = Arc::new(Registry::default());
    let admission = Arc::new(Admission {
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        registry: registry.clone(),
        waiting: AtomicUsize::new(0),
    });
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::error!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            limits,
            clock,
            registry: registry.clone(),
            stop: stop.clone(),
        };
        // While earlier connections wait for evicted slots, a freed slot is theirs: a new
        // connection queues behind them instead of taking it.
        let free = match admission.waiting.load(Ordering::Relaxed) {
            0 => admission.slots.clone().try_acquire_owned().ok(),
            _ => None,
        };
        match free {
            Some(slot) => {
                connections.spawn(connection.serve(stream, slot));
            }
            None => {
                let admission = admission.clone();
                connections.spawn(async move {
                    match admission.evict_and_wait().await {
                        Some(slot) => connection.serve(stream, slot).await,
                        None => refuse(stream).await,
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        open = connections.len(),
        "stopped accepting; closing connections"
    );
    while connections.join_next().await.is_some() {}
}

struct Connection {
    app: Router,
    limits: Limits,
    clock: Clock,
    registry: Arc<Registry>,
    stop: CancellationToken,
}

impl Connection {
    async fn serve(self, stream: TcpStream, _slot: OwnedSemaphorePermit) {
        let activity = Arc::new(Activity::new(self.clock));
        let id = self.registry.add(activity.clone());
        metrics::gauge!("xecm_http_connections_open").increment(1.0);
        let reason = self.drive(stream, &activity).await;
        metrics::gauge!("xecm_http_connections_open").decrement(1.0);
        if let Some(reason) = reason {
            metrics::counter!("xecm_http_connections_closed_total", "reason" => reason)
                .increment(1);
        }
        self.registry.remove(id);
    }

    /// Runs the connection; returns why the server closed it, if it did.
    async fn drive(&self, stream: TcpStream, activity: &Arc<Activity>) -> Option<&'static str> {
        let io = TokioIo::new(ConnIo::new(stream, activity.clone()));
        let service = Tracked {
            app: self.app.clone(),
            activity: activity.clone(),
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            // Our own timers (see `connection`) replace hyper's, which cannot tell an idle
            // keep-alive connection from a slow sender.
            .header_read_timeout(None)
            .max_header_size(self.limits.max_header_bytes)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let check = tokio::time::sleep(self.limits.header_read_timeout);
        tokio::pin!(check);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return None;
                }
                () = check.as_mut() => match activity.verdict(&self.limits) {
                    Verdict::CheckAt(at) => check.as_mut().reset(at.into()),
                    Verdict::Idle => return Some("idle"),
                    Verdict::SlowHeader => return Some("header_timeout"),
                },
                () = activity.evicted() => {
                    if activity.is_idle() {
                        return Some("evicted");
                    }
                    // A request arrived meanwhile: let it finish, then close.
                    conn.as_mut().graceful_shutdown();
                }
                () = self.stop.cancelled(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The service hyper calls: the application, with the request marked in progress until its
/// response is ready.
#[derive(Clone)]
struct Tracked {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.activity);
        let response = self.app.clone().oneshot(request.map(Body::new));
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

/// Answers 503 without reading the request, then closes.
async fn refuse(mut stream: TcpStream) {
    metrics::counter!("xecm_http_connections_closed_total", "reason" => "refused").increment(1);
    let problem = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too-many-connections",
        "every connection slot (server.max_connections) has a request in progress; retry shortly",
    );
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(%request_id, "connection refused: every slot has a request in progress");
    let response = raw_response(problem, &request_id, &[("retry-after", "1")]);
    if stream.write_all(&response).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    // Closing with unread request bytes would reset the connection and could discard the
    // response at the client; read them briefly first.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut read = 0;
        while read < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
