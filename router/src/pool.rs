//! Keep-alive connections to one instance.
//!
//! A small pool of our own instead of hyper-util's legacy `Client`, for three reasons:
//! the pool belongs to the instance (it survives table swaps and is dropped when the
//! instance is pruned), a connection goes back to the pool only when the proxy has seen
//! the response body end cleanly, and a connection whose response was suspicious (both
//! `Content-Length` and `Transfer-Encoding`, a classic smuggling shape) is simply not given
//! back. HTTP/1.1 connections are used one request at a time; for h2c instances one
//! multiplexed connection is shared. The idle list is bounded; an idle connection the
//! instance has closed is noticed at checkout (its I/O is polled once) and discarded.
//!
//! An HTTP/1.1 connection has no task of its own: its I/O (hyper's client dispatcher) is
//! driven by whoever holds it, that is the client connection's task, while the request is
//! sent and while the response body streams back ([`H1Conn::drive`]). Like nginx's single
//! event loop, one request then costs one task wakeup per socket event instead of a
//! ping-pong between the client's task and a per-instance-connection task (request in a
//! channel, response head in a oneshot, body `want` signal, body chunk in a channel).
//! Only an upgraded (WebSocket) connection gets a task, in the tunnel.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::buffer::Buf;
use crate::error::ProxyError;
use crate::state::Background;

/// Most idle HTTP/1.1 connections kept per instance unless the router is told otherwise
/// ([`crate::RouterConfig::pool_max_idle`]).
pub(crate) const DEFAULT_MAX_IDLE: usize = 256;
/// Idle connections older than this are closed rather than reused.
const IDLE_EXPIRY: Duration = Duration::from_secs(60);
/// How long a pooled connection may take to report ready before we open a fresh one.
const READY_GRACE: Duration = Duration::from_millis(50);

/// hyper's connection future (with upgrades), boxed because its type cannot be named.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An HTTP/1.1 connection handed out for one request; give it back with [`Pool::put`].
pub(crate) struct H1Conn {
    tx: http1::SendRequest<Outgoing>,
    /// Where the driver goes when the connection is detached.
    background: Background,
    /// `None` once the connection has finished (closed, failed or upgraded).
    driver: Option<Driver>,
}

impl H1Conn {
    /// Move the connection's I/O forward as far as it goes now, registering `cx` for
    /// more. Returns false once the connection has finished.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(d) = &mut self.driver {
            if let Poll::Ready(r) = d.as_mut().poll(cx) {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "instance connection ended with an error");
                }
                // Dropping the dispatcher fails whatever waits on it (a pending response,
                // `poll_ready`), so nobody waits forever on a dead connection.
                self.driver = None;
            }
        }
        self.driver.is_some()
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.drive(cx);
        self.tx.poll_ready(cx)
    }

    /// Keep the connection's I/O going without us: for an upgrade, whose tunnel gets the
    /// socket only once hyper's connection future has run to the end.
    pub fn detach(mut self) {
        if let Some(d) = self.driver.take() {
            self.background.spawn(async move {
                if let Err(e) = d.await {
                    tracing::debug!(error = %e, "instance connection ended with an error");
                }
            });
        }
    }

    fn is_closed(&self) -> bool {
        self.driver.is_none() || self.tx.is_closed()
    }

    /// Send `req` and wait for the response head, driving the connection meanwhile.
    async fn send(
        &mut self,
        req: Request<Outgoing>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Outgoing>>> {
        // The future does not borrow `tx`, so the connection can be driven beside it.
        let fut = self.tx.try_send_request(req);
        tokio::pin!(fut);
        std::future::poll_fn(|cx| {
            // Poll the response first: that registers it before the I/O that completes it.
            if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            // If the dispatcher finishes here it is dropped, which resolves the response
            // (with an error) rather than leaving it pending.
            self.drive(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }
}

/// The body of a request to an instance over HTTP/1.1: the client's, or none (a bodiless
/// request sent again on a new connection, see [`Pool::send_h1`]).
pub(crate) enum Outgoing {
    Client(Incoming),
    Empty,
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Outgoing::Client(b) => Pin::new(b).poll_frame(cx),
            Outgoing::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Client(b) => b.is_end_stream(),
            Outgoing::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Client(b) => b.size_hint(),
            Outgoing::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Methods a proxy may send twice (RFC 9110 §9.2.2), by name as they appear on the wire.
pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// A bodiless copy of a request's head.
fn head_copy<B>(req: &Request<B>) -> Request<Outgoing> {
    let mut copy = Request::new(Outgoing::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// A plain keep-alive connection for the HTTP/1.1 fast path (`crate::fast`), with the
/// bytes read from it and not yet consumed.
pub(crate) struct RawConn {
    pub stream: TcpStream,
    pub buf: Buf,
}

pub(crate) struct Pool {
    addr: SocketAddr,
    background: Background,
    /// Most idle connections kept, per kind (hyper's and the fast path's).
    max_idle: usize,
    idle: Mutex<Vec<(H1Conn, Instant)>>,
    raw: Mutex<Vec<(RawConn, Instant)>>,
    h2: Mutex<Option<http2::SendRequest<Incoming>>>,
}

impl Pool {
    pub fn new(addr: SocketAddr, background: Background, max_idle: usize) -> Self {
        Pool {
            addr,
            background,
            max_idle,
            idle: Mutex::new(Vec::new()),
            raw: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
        }
    }

    /// An idle fast-path connection that still looks open, newest first.
    ///
    /// "Looks open" costs no system call: the socket's readiness is polled with a no-op
    /// waker. An idle connection becomes readable only when the instance closes it (or
    /// sends bytes nobody asked for); either way it is dropped. The event loop learns of a
    /// close between requests, so the race left is a close that arrives while the request
    /// is being written, which `crate::fast` answers by retrying idempotent requests once.
    pub fn take_raw(&self) -> Option<RawConn> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut idle = self.raw.lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_EXPIRY && conn.stream.poll_read_ready(&mut cx).is_pending() {
                return Some(conn);
            }
        }
        None
    }

    /// Return a fast-path connection whose last response ended cleanly and exactly.
    pub fn put_raw(&self, conn: RawConn) {
        if let Ok(mut idle) = self.raw.lock() {
            if idle.len() < self.max_idle {
                idle.push((conn, Instant::now()));
            }
        }
    }

    /// A new fast-path connection.
    pub async fn connect_raw(&self) -> Result<RawConn, ProxyError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(ProxyError::Connect)?;
        stream.set_nodelay(true).map_err(ProxyError::Connect)?;
        Ok(RawConn {
            stream,
            buf: Buf::new(),
        })
    }

    /// Return a connection whose last response ended cleanly.
    pub fn put(&self, conn: H1Conn) {
        if conn.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push((conn, Instant::now()));
            }
        }
    }

    fn pop_idle(&self) -> Option<H1Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if !conn.is_closed() && since.elapsed() < IDLE_EXPIRY {
                return Some(conn);
            }
        }
        None
    }

    /// Send over HTTP/1.1, reusing an idle connection when one works. Returns the
    /// connection with the response so that the caller can drive the response body and
    /// give the connection back after it.
    ///
    /// A pooled connection the instance closed just as the request went out fails with an
    /// incomplete message. A request that can be sent again (idempotent method, no body,
    /// no upgrade) is then resent once on a new connection, as on the fast path; any other
    /// gets 502.
    pub async fn send_h1(
        &self,
        mut req: Request<Outgoing>,
    ) -> Result<(Response<Incoming>, H1Conn), ProxyError> {
        let resendable = is_idempotent(req.method().as_str())
            && req.body().is_end_stream()
            && !req.headers().contains_key(http::header::UPGRADE);
        // Copied only when a pooled connection is about to be tried.
        let mut head: Option<Request<Outgoing>> = None;
        // Bounded: every iteration consumes one idle connection.
        for _ in 0..=self.max_idle {
            let Some(mut conn) = self.pop_idle() else {
                break;
            };
            // Usually ready at the first poll; no timer unless it is not.
            let first = std::future::poll_fn(|cx| Poll::Ready(conn.poll_ready(cx))).await;
            let ready = match first {
                Poll::Ready(r) => r.is_ok(),
                Poll::Pending => matches!(
                    tokio::time::timeout(
                        READY_GRACE,
                        std::future::poll_fn(|cx| conn.poll_ready(cx))
                    )
                    .await,
                    Ok(Ok(()))
                ),
            };
            if !ready {
                continue;
            }
            if resendable && head.is_none() {
                head = Some(head_copy(&req));
            }
            match conn.send(req).await {
                Ok(resp) => return Ok((resp, conn)),
                Err(mut e) => {
                    match e.take_message() {
                        // Never written to the connection: safe to try another one.
                        Some(r) => req = r,
                        None => {
                            let err = e.into_error();
                            match &head {
                                Some(head) if err.is_incomplete_message() => {
                                    tracing::debug!("pooled instance connection was closed; resending on a new one");
                                    req = head_copy(head);
                                    break;
                                }
                                _ => return Err(ProxyError::Upstream(err)),
                            }
                        }
                    }
                }
            }
        }
        let mut conn = self.connect_h1().await?;
        std::future::poll_fn(|cx| conn.poll_ready(cx))
            .await
            .map_err(ProxyError::Upstream)?;
        match conn.send(req).await {
            Ok(resp) => Ok((resp, conn)),
            Err(e) => Err(ProxyError::Upstream(e.into_error())),
        }
    }

    /// Send over the shared h2c connection, opening it if needed.
    pub async fn send_h2(&self, req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        let cached = self
            .h2
            .lock()
            .ok()
            .and_then(|g| g.as_ref().filter(|c| !c.is_closed()).cloned());
        let mut conn = match cached {
            Some(c) => c,
            None => {
                let c = self.connect_h2().await?;
                if let Ok(mut g) = self.h2.lock() {
                    *g = Some(c.clone());
                }
                c
            }
        };
        conn.ready().await.map_err(ProxyError::Upstream)?;
        conn.send_request(req).await.map_err(ProxyError::Upstream)
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, ProxyError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(ProxyError::Connect)?;
        stream.set_nodelay(true).map_err(ProxyError::Connect)?;
        Ok(TokioIo::new(stream))
    }

    async fn connect_h1(&self) -> Result<H1Conn, ProxyError> {
        let io = self.connect().await?;
        let (tx, conn) = http1::Builder::new()
            .writev(false)
            .handshake(io)
            .await
            .map_err(ProxyError::Upstream)?;
        Ok(H1Conn {
            tx,
            background: self.background.clone(),
            driver: Some(Box::pin(conn.with_upgrades())),
        })
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Incoming>, ProxyError> {
        let io = self.connect().await?;
        let (tx, conn) = http2::Builder::new(self.background.clone())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(io)
            .await
            .map_err(ProxyError::Upstream)?;
        self.background.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "h2c instance connection ended with an error");
            }
        });
        Ok(tx)
    }
}
