//! Keep-alive connections to one instance.
//!
//! A small pool of our own instead of hyper-util's legacy `Client`, for three reasons:
//! the pool belongs to the instance (it survives table swaps and is dropped when the
//! instance is pruned), a connection goes back to the pool only when the proxy has seen
//! the response body end cleanly, and a connection whose response was suspicious (both
//! `Content-Length` and `Transfer-Encoding`, a classic smuggling shape) is simply not given
//! back. HTTP/1.1 connections are used one request at a time; for h2c instances one
//! multiplexed connection is shared. The idle list is bounded; an idle connection the
//! instance has closed is noticed (`is_closed`) and discarded at checkout.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::error::ProxyError;

/// Most idle HTTP/1.1 connections kept per instance.
const MAX_IDLE: usize = 256;
/// Idle connections older than this are closed rather than reused.
const IDLE_EXPIRY: Duration = Duration::from_secs(60);
/// How long a pooled connection may take to report ready before we open a fresh one.
const READY_GRACE: Duration = Duration::from_millis(50);

/// An HTTP/1.1 connection handed out for one request; give it back with [`Pool::put`].
pub(crate) type H1Conn = http1::SendRequest<Incoming>;

pub(crate) struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<(H1Conn, Instant)>>,
    h2: Mutex<Option<http2::SendRequest<Incoming>>>,
}

impl Pool {
    pub fn new(addr: SocketAddr) -> Self {
        Pool {
            addr,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
        }
    }

    /// Return a connection whose last response ended cleanly.
    pub fn put(&self, conn: H1Conn) {
        if conn.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
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
    /// connection with the response so that the caller can give it back after the body.
    pub async fn send_h1(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, H1Conn), ProxyError> {
        // Bounded: every iteration consumes one idle connection.
        for _ in 0..=MAX_IDLE {
            let Some(mut conn) = self.pop_idle() else {
                break;
            };
            match tokio::time::timeout(READY_GRACE, conn.ready()).await {
                Ok(Ok(())) => {}
                _ => continue,
            }
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok((resp, conn)),
                Err(mut e) => match e.take_message() {
                    // Never written to the connection: safe to try another one.
                    Some(r) => req = r,
                    None => return Err(ProxyError::Upstream(e.into_error())),
                },
            }
        }
        let mut conn = self.connect_h1().await?;
        conn.ready().await.map_err(ProxyError::Upstream)?;
        let resp = conn.send_request(req).await.map_err(ProxyError::Upstream)?;
        Ok((resp, conn))
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
            .handshake(io)
            .await
            .map_err(ProxyError::Upstream)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "instance connection ended with an error");
            }
        });
        Ok(tx)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Incoming>, ProxyError> {
        let io = self.connect().await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(io)
            .await
            .map_err(ProxyError::Upstream)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "h2c instance connection ended with an error");
            }
        });
        Ok(tx)
    }
}
