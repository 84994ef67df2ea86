//! The HTTP/1.1 fast path: plain requests proxied without hyper's machinery.
//!
//! Most requests a router sees are the plainest kind: HTTP/1.1, origin-form, no body or a
//! small one with `Content-Length`, no upgrade. For those, hyper's server and client each
//! parse the head into a `HeaderMap`, the proxy edits the map, and each encodes it again;
//! requests and responses cross a dispatcher, a channel and a body type per side. The
//! profile of the hyper path showed that machinery as most of the router's user-space
//! time. Here a client connection's task reads the request into a buffer, parses it with
//! `httparse` (what hyper uses underneath), writes the instance's request head straight
//! from the parsed slices into an output buffer (hop-by-hop and forwarding headers out, our
//! own `X-Forwarded-*` in), writes it to a pooled connection of its own, parses the
//! response head the same way and streams the body back by its framing. Like nginx: one
//! task, one buffer per side, about one system call per socket event.
//!
//! What the fast path does not fully understand it does not touch: HTTP/1.0, absolute-form
//! or `*` targets, `Upgrade`, `Expect`, `TE`, request `Transfer-Encoding`, a `Connection`
//! header naming anything but `keep-alive` or `close`, a missing or repeated `Host`, an
//! h2c service, a body larger than [`MAX_INLINE_BODY`], a head that does not parse or is
//! too large. Such a request, and the rest of its connection, is handed to the hyper path
//! ([`End::HandOff`]) with every byte read so far, before anything is consumed or sent;
//! hyper then gives the same answers it always did (400, 431, tunnels, h2c).
//!
//! The rules are the hyper path's (see `crate::proxy`): the same admission (slots, queue,
//! cold-start gate), the same error answers, the same metrics. Response framing follows
//! RFC 9112 §6.3: no body for `HEAD`, 204 and 304; `Transfer-Encoding` wins over
//! `Content-Length`, which is then dropped and the connection not reused; chunked bodies
//! are checked chunk by chunk and passed through as they are; a body delimited by the
//! instance closing is passed on with `Connection: close`. An instance that fails
//! mid-body makes the router reset the client connection, so a truncated body can never
//! look complete. A pooled connection the instance closed just as the request was written
//! is retried once on a new connection when the method is idempotent (nginx's
//! `proxy_next_upstream error` default; the hyper path does the same for bodiless
//! requests, `Pool::send_h1`).

mod chunked;
mod handoff;
mod request;
mod response;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Field};
use crate::buffer::{Buf, SHRINK_ABOVE};
use crate::error::ProxyError;
use crate::host::normalize_host;
use crate::pool::RawConn;
use crate::state::{InFlightGuard, InstanceState};
use crate::table::ServiceEntry;
use crate::Router;

use chunked::*;
pub(crate) use handoff::Prefixed;
use request::*;
use response::*;

/// Most header fields in a request or response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Largest request body the fast path carries; bigger ones go to the hyper path, which
/// streams them.
pub(crate) const MAX_INLINE_BODY: usize = 64 * 1024;
/// Informational (1xx) responses skipped before the final one.
const MAX_INFORMATIONAL: usize = 8;
/// Trailer section of a chunked body, at most.
const MAX_TRAILER: usize = 64 * 1024;
/// Chunk extensions on one chunk-size line, at most.
const MAX_CHUNK_EXT: usize = 4 * 1024;

/// How the fast path left a client connection.
pub(crate) enum End {
    /// Finished: closed by the client, by the router after an error or a
    /// `Connection: close`, by shutdown, or by the header-read timeout.
    Closed,
    /// The hyper path serves the rest of the connection, starting with these bytes, which
    /// were read from the client and not consumed.
    HandOff(Vec<u8>),
}

/// One timer per client connection, moved lazily.
///
/// Each request has deadlines (its head must arrive within `header_read_timeout`, the
/// instance's response head within `request_timeout`), but arming a timer per deadline
/// costs a timer-wheel insert and removal per request. The sleep here is moved earlier
/// only when a deadline comes before it; when it fires before the current deadline, it is
/// moved to that deadline. So a busy connection touches the wheel about once per timeout
/// period, not once per request.
struct Timer {
    sleep: Pin<Box<Sleep>>,
}

impl Timer {
    fn new(first: Instant) -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// True once `deadline` has passed; otherwise registers `cx` to be woken by then.
    fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
        }
        // Bounded: after a reset to a deadline still ahead, the sleep is pending.
        while self.sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            self.sleep.as_mut().reset(deadline);
        }
        false
    }

    /// Run `fut` until `deadline`; `None` if the deadline came first.
    async fn within<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if self.poll_expired(cx, deadline) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

/// What waiting for a request head came to.
enum Wait {
    More,
    Stopped,
    TimedOut,
    Failed,
}

/// A request the fast path will forward, described by what the rest of the path needs
/// once the client's buffer may change again.
struct Forward {
    entry: Arc<ServiceEntry>,
    /// Bytes of the client buffer this request (head and body) takes.
    consumed: usize,
    /// The client asked to close after this response.
    close: bool,
    head: bool,
    idempotent: bool,
}

/// Serve a client connection's plain HTTP/1.1 requests until it ends or a request needs
/// the hyper path.
pub(crate) async fn serve(
    router: &Router,
    client: &mut TcpStream,
    peer_ip: &[u8],
    shutdown: &CancellationToken,
) -> End {
    let head_timeout = router.config.header_read_timeout;
    let mut stop = std::pin::pin!(shutdown.cancelled());
    let mut buf = Buf::new();
    // Both grow to what this connection's heads need (and shrink after a large one).
    let mut out: Vec<u8> = Vec::new();
    let mut resp_out: Vec<u8> = Vec::new();
    let mut timer = Timer::new(Instant::now() + head_timeout);
    // The client ended its stream after pipelining requests that are still buffered.
    let mut client_ended = false;
    // Bounded: each turn serves one request or ends the connection, and the wait for a
    // request is bounded by the header-read timeout.
    loop {
        let head_deadline = Instant::now() + head_timeout;
        // Bytes at the front of `buf` known not to end a head: each byte is scanned for
        // the end of the head once, and httparse runs only when one may be there.
        let mut scanned = 0;
        // Read until the buffer holds a whole request, or something else happens. Each
        // turn reads more bytes (bounded by the head limit) or returns.
        let prepared = loop {
            if head_may_end(buf.filled(), scanned) {
                out.clear();
                match prepare(router, buf.filled(), peer_ip, &mut out) {
                    Prepared::Partial => {}
                    done => break done,
                }
            }
            scanned = buf.len();
            if buf.len() > router.config.head_limit() {
                break Prepared::TooLarge;
            }
            let idle = buf.is_empty();
            let wait = std::future::poll_fn(|cx| {
                if idle && stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wait::Stopped);
                }
                match buf.poll_fill(client, cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(Wait::Failed),
                    Poll::Ready(Ok(_)) => Poll::Ready(Wait::More),
                    Poll::Pending if timer.poll_expired(cx, head_deadline) => {
                        Poll::Ready(Wait::TimedOut)
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match wait {
                Wait::More => {}
                Wait::Stopped | Wait::Failed => return End::Closed,
                Wait::TimedOut => {
                    tracing::debug!("no request head within the header-read timeout; closing");
                    return End::Closed;
                }
            }
        };
        let fwd = match prepared {
            Prepared::Partial => return unreachable_partial(),
            Prepared::HandOff => return End::HandOff(buf.take_vec()),
            Prepared::TooLarge => {
                let e = ProxyError::HeadTooLarge;
                admission::record_unrouted(router, e.status());
                local_response(&mut out, &e, true, false);
                if write_local(client, &out, &mut timer, head_timeout).await {
                    linger(client).await;
                }
                return End::Closed;
            }
            Prepared::Unrouted {
                consumed,
                close,
                head,
            } => {
                buf.consume(consumed);
                let e = ProxyError::UnknownHost;
                admission::record_unrouted(router, e.status());
                let close = close || shutdown.is_cancelled();
                local_response(&mut out, &e, close, head);
                if !write_local(client, &out, &mut timer, head_timeout).await || close {
                    return End::Closed;
                }
                continue;
            }
            Prepared::Forward(fwd) => fwd,
        };
        // `out` now holds the request for the instance (head and body).
        buf.consume(fwd.consumed);
        let mut io = ClientIo {
            stream: client,
            buf: &mut buf,
            limit: router.config.head_limit() + MAX_INLINE_BODY,
            ended: &mut client_ended,
        };
        let after = exchange(
            router,
            &mut io,
            fwd,
            &mut out,
            &mut resp_out,
            &mut timer,
            shutdown,
        )
        .await;
        for v in [&mut out, &mut resp_out] {
            if v.capacity() > SHRINK_ABOVE {
                *v = Vec::new();
            }
        }
        match after {
            After::KeepOpen => {}
            After::Close => {
                let _ = client.shutdown().await;
                return End::Closed;
            }
            // The client left, or (zero linger set) a reset that never looks like a clean end.
            After::Drop => return End::Closed,
        }
        if shutdown.is_cancelled() {
            return End::Closed;
        }
    }
}

/// Whether `data` may hold the end of a request or response head (an empty line, CRLF or
/// bare LF as httparse allows), looking only at what came after `scanned` (and the two
/// bytes before it, for a blank line split across reads).
fn head_may_end(data: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    data.get(from..).is_some_and(|tail| {
        tail.windows(2)
            .enumerate()
            .any(|(i, w)| w == b"\n\n" || (w == b"\r\n" && i > 0 && tail[i - 1] == b'\n'))
    })
}

/// `prepare` never reports `Partial` out of the read loop above.
fn unreachable_partial() -> End {
    tracing::error!("fast path: partial request left the read loop");
    End::Closed
}

/// What becomes of the client connection after a response.
enum After {
    KeepOpen,
    /// Close it cleanly: the response was delimited by the close, the client asked for
    /// it, the router is shutting down, or writing failed.
    Close,
    /// Just drop it: the client has gone, or the instance failed mid-response and the
    /// zero linger set on the socket turns the close into a reset, so the client cannot
    /// take what it got for a whole response.
    Drop,
}

/// The client side during an exchange: its socket and the bytes read from it.
struct ClientIo<'a> {
    stream: &'a mut TcpStream,
    buf: &'a mut Buf,
    /// Stop reading ahead (pipelined requests) once this much is buffered.
    limit: usize,
    /// The client half-closed after sending requests that are still buffered: it is
    /// done sending, not gone, and those requests are answered.
    ended: &'a mut bool,
}

impl ClientIo<'_> {
    /// Run `fut` unless the client goes away first (`None`). While the request waits for
    /// a slot or for the instance, the client's socket is watched like hyper watches it:
    /// an end of stream means nobody will read the answer, so the slot or queue place is
    /// given back at once instead of at the timeout. Bytes that arrive meanwhile (a
    /// pipelined request) are kept.
    async fn unless_gone<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            // Bounded: each turn buffers more bytes, up to `limit`, or stops.
            while !*self.ended && self.buf.len() <= self.limit {
                match self.buf.poll_fill(self.stream, cx) {
                    // A client that half-closes after pipelining still gets the answers
                    // to everything it sent; the end of its stream is seen again once
                    // the buffer is empty and the next head is read.
                    Poll::Ready(Ok(0)) if !self.buf.is_empty() => *self.ended = true,
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => break,
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Route and forward one request, then stream the response to the client.
async fn exchange(
    router: &Router,
    client: &mut ClientIo<'_>,
    fwd: Forward,
    out: &mut Vec<u8>,
    resp_head: &mut Vec<u8>,
    timer: &mut Timer,
    shutdown: &CancellationToken,
) -> After {
    let start = StdInstant::now();
    // The request timeout counts from here, the wait for a slot included, as on the
    // hyper path.
    let started = Instant::now();
    let Forward {
        entry,
        close,
        head,
        idempotent,
        ..
    } = fwd;
    entry.state.requests_total.fetch_add(1, Ordering::Relaxed);
    let state = Arc::clone(&entry.state);
    let reply = Reply {
        state: &state,
        start,
        head,
        limit: router.config.header_read_timeout,
    };
    let admitted = match client.unless_gone(admission::admit(router, entry)).await {
        None => return After::Drop,
        Some(a) => a,
    };
    let close = close || shutdown.is_cancelled();
    let (entry, guard) = match admitted {
        Ok((entry, guard)) if entry.route.http2 => {
            // Switched to h2c while the request was queued: the slot is given back, and
            // the client's retry goes through hyper.
            drop(guard);
            let e = ProxyError::ServiceChanged;
            return reply.error(client.stream, out, timer, &e, close).await;
        }
        Ok(admitted) => admitted,
        Err(e) => return reply.error(client.stream, out, timer, &e, close).await,
    };
    let deadline = started + entry.route.request_timeout;
    let sent = client
        .unless_gone(timer.within(
            deadline,
            send(&guard.instance, out, head, idempotent, close, resp_head),
        ))
        .await;
    let (mut conn, resp) = match sent {
        None => return After::Drop,
        Some(Some(Ok(r))) => r,
        failed => {
            let e = match failed {
                Some(Some(Err(e))) => e,
                _ => ProxyError::UpstreamTimeout,
            };
            // The slot is free before the answer is written, as on the hyper path.
            drop(guard);
            return reply.error(client.stream, out, timer, &e, close).await;
        }
    };
    state.record_status_code(resp.status);
    let idle = entry.route.idle_timeout;
    let streamed = stream_body(
        client.stream,
        &mut conn,
        resp.framing,
        resp_head,
        timer,
        idle,
    )
    .await;
    finish(
        guard,
        conn,
        resp.reusable && streamed == Streamed::Clean,
        start,
    );
    match streamed {
        Streamed::Clean if resp.framing != Framing::Close && !close => After::KeepOpen,
        Streamed::Clean | Streamed::ClientGone => After::Close,
        Streamed::InstanceFailed => {
            let _ = client.stream.set_zero_linger();
            After::Drop
        }
    }
}

fn finish(guard: InFlightGuard, mut conn: RawConn, reuse: bool, start: StdInstant) {
    guard.service.latency.observe(start.elapsed());
    if reuse && conn.buf.is_empty() {
        conn.buf.shrink();
        guard.instance.pool.put_raw(conn);
    }
    drop(guard);
}

/// How the router answers for a service when it cannot forward.
struct Reply<'a> {
    state: &'a crate::state::ServiceState,
    start: StdInstant,
    head: bool,
    /// How long the client may take to take the answer.
    limit: Duration,
}

impl Reply<'_> {
    async fn error(
        &self,
        client: &mut TcpStream,
        out: &mut Vec<u8>,
        timer: &mut Timer,
        e: &ProxyError,
        close: bool,
    ) -> After {
        tracing::debug!(service = %self.state.name, error = %e, fault = ?e.fault(), "answered by the router");
        self.state.latency.observe(self.start.elapsed());
        self.state.record_status(e.status());
        local_response(out, e, close, self.head);
        if write_local(client, out, timer, self.limit).await && !close {
            After::KeepOpen
        } else {
            After::Close
        }
    }
}

/// Write one of the router's own answers; false if the client does not take it within
/// `limit` (a client that pipelines requests and never reads must not hold the task).
async fn write_local(
    client: &mut TcpStream,
    out: &[u8],
    timer: &mut Timer,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    matches!(
        timer.within(deadline, client.write_all(out)).await,
        Some(Ok(()))
    )
}

/// Ends a connection the router refused mid-request: FIN, then read and discard what the
/// client is still sending for a moment (bounded in bytes and time), so that closing with
/// unread bytes does not reset the connection before the client reads the answer.
async fn linger(client: &mut TcpStream) {
    let _ = client.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 16 * 1024];
    let mut left: usize = 4 << 20;
    while left > 0 {
        match tokio::time::timeout_at(deadline, client.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// Send the request in `req` and read the response head, retrying once on a fresh
/// connection when a pooled one turns out to have been closed by the instance and the
/// request may be repeated. On success the connection's buffer holds the bytes after the
/// head and `resp_head` the client's response head.
async fn send(
    instance: &InstanceState,
    req: &[u8],
    head: bool,
    idempotent: bool,
    client_close: bool,
    resp_head: &mut Vec<u8>,
) -> Result<(RawConn, ResponseHead), ProxyError> {
    let mut pooled = instance.pool.take_raw();
    // Two attempts at most: a pooled connection, then a new one.
    for _ in 0..2 {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => instance.pool.connect_raw().await?,
        };
        match send_on(&mut conn, req, head, client_close, resp_head).await {
            Ok(resp) => return Ok((conn, resp)),
            Err(Failure::Stale(_)) if reused && idempotent => {
                tracing::debug!("pooled instance connection was closed; retrying on a new one");
            }
            Err(Failure::Stale(e) | Failure::Io(e)) => return Err(ProxyError::UpstreamIo(e)),
            Err(Failure::Bad(e)) => return Err(e),
        }
    }
    Err(ProxyError::UpstreamIo(io::Error::other(
        "instance closed a new connection before answering",
    )))
}

enum Failure {
    /// Closed or reset before a single response byte: what a pooled connection the
    /// instance had just closed looks like.
    Stale(io::Error),
    Io(io::Error),
    Bad(ProxyError),
}

async fn send_on(
    conn: &mut RawConn,
    req: &[u8],
    head: bool,
    client_close: bool,
    resp_head: &mut Vec<u8>,
) -> Result<ResponseHead, Failure> {
    if let Err(e) = conn.stream.write_all(req).await {
        return Err(Failure::Stale(e));
    }
    let mut informational = 0;
    let mut received = false;
    // As for requests: httparse runs only when the head may have ended, so an instance
    // dripping a large head costs linear time, not quadratic.
    let mut scanned = 0;
    // Bounded: each turn reads more bytes of a head limited to MAX_RESPONSE_HEAD, or
    // skips one of at most MAX_INFORMATIONAL informational responses, or returns.
    loop {
        if head_may_end(conn.buf.filled(), scanned) {
            resp_head.clear();
            match parse_response(conn.buf.filled(), head, client_close, resp_head) {
                Parsed::Partial => {}
                Parsed::Informational(len) => {
                    conn.buf.consume(len);
                    scanned = 0;
                    informational += 1;
                    if informational > MAX_INFORMATIONAL {
                        return Err(Failure::Bad(ProxyError::BadResponse(
                            "too many informational responses",
                        )));
                    }
                    continue;
                }
                Parsed::Invalid(why) => return Err(Failure::Bad(ProxyError::BadResponse(why))),
                Parsed::SwitchingProtocols => return Err(Failure::Bad(ProxyError::BadUpgrade)),
                Parsed::Complete(len, resp) => {
                    conn.buf.consume(len);
                    return Ok(resp);
                }
            }
        }
        scanned = conn.buf.len();
        if scanned > MAX_RESPONSE_HEAD {
            return Err(Failure::Bad(ProxyError::BadResponse("head too large")));
        }
        match conn.buf.fill(&mut conn.stream).await {
            Ok(0) if !received => {
                return Err(Failure::Stale(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "instance closed the connection before answering",
                )))
            }
            Ok(0) => {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "instance closed the connection mid-head",
                )))
            }
            Ok(_) => received = true,
            Err(e) if !received => return Err(Failure::Stale(e)),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}

/// Largest response head from an instance (hyper's client limit is about this too).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Streamed {
    Clean,
    ClientGone,
    InstanceFailed,
}

/// Write the head and the body to the client. Bytes of the body already read are in the
/// connection's buffer; what belongs to the body is consumed from it, so anything left
/// there afterwards is bytes the instance sent beyond its response. Every read from the
/// instance and every write to the client must make progress within `idle` (the
/// service's idle timeout), so a stalled instance or a client that stops reading cannot
/// hold the slot for ever.
async fn stream_body(
    client: &mut TcpStream,
    conn: &mut RawConn,
    framing: Framing,
    out: &mut Vec<u8>,
    timer: &mut Timer,
    idle: Duration,
) -> Streamed {
    let mut body = Body {
        client,
        conn,
        timer,
        idle,
        eof: false,
    };
    match framing {
        Framing::None => body.write_out(out).await,
        Framing::Length(total) => {
            let mut left = total;
            // The common case: the whole (small) body came with the head: one write.
            let first = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(body.conn.buf.len());
            out.extend_from_slice(&body.conn.buf.filled()[..first]);
            body.conn.buf.consume(first);
            left -= first as u64;
            if body.write_out(out).await != Streamed::Clean {
                return Streamed::ClientGone;
            }
            // Bounded by the body length: each turn moves at least one byte or returns.
            while left > 0 {
                if !body.fill().await {
                    return Streamed::InstanceFailed;
                }
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(body.conn.buf.len());
                if body.write_buffered(n).await != Streamed::Clean {
                    return Streamed::ClientGone;
                }
                left -= n as u64;
            }
            Streamed::Clean
        }
        Framing::Chunked => {
            let mut chunks = Chunks::default();
            let mut first = true;
            // Bounded by the body: each turn moves at least one byte or returns.
            loop {
                let Ok(n) = chunks.feed(body.conn.buf.filled()) else {
                    // The head goes out if it has not yet, then the reset.
                    if first {
                        let _ = body.write_out(out).await;
                    }
                    return Streamed::InstanceFailed;
                };
                let sent = if first {
                    // The head and the first bytes of the body in one write.
                    first = false;
                    out.extend_from_slice(&body.conn.buf.filled()[..n]);
                    body.conn.buf.consume(n);
                    body.write_out(out).await
                } else {
                    body.write_buffered(n).await
                };
                if sent != Streamed::Clean {
                    return Streamed::ClientGone;
                }
                if chunks.done() {
                    return Streamed::Clean;
                }
                if !body.fill().await {
                    return Streamed::InstanceFailed;
                }
            }
        }
        Framing::Close => {
            let n = body.conn.buf.len();
            out.extend_from_slice(body.conn.buf.filled());
            body.conn.buf.consume(n);
            if body.write_out(out).await != Streamed::Clean {
                return Streamed::ClientGone;
            }
            // Bounded by the instance: each turn moves at least one byte or returns.
            loop {
                if !body.fill().await {
                    // End of stream is the end of this body; an error or a stall is not.
                    return if body.eof {
                        Streamed::Clean
                    } else {
                        Streamed::InstanceFailed
                    };
                }
                let n = body.conn.buf.len();
                if body.write_buffered(n).await != Streamed::Clean {
                    return Streamed::ClientGone;
                }
            }
        }
    }
}
/// The two sockets of a response body in flight, and the bound on each step.
struct Body<'a> {
    client: &'a mut TcpStream,
    conn: &'a mut RawConn,
    timer: &'a mut Timer,
    idle: Duration,
    /// The instance ended its stream (the last `fill` read nothing).
    eof: bool,
}

impl Body<'_> {
    /// Read more from the instance: false at end of stream, on an error, or when nothing
    /// came within the idle timeout.
    async fn fill(&mut self) -> bool {
        let deadline = Instant::now() + self.idle;
        let conn = &mut *self.conn;
        match self
            .timer
            .within(deadline, conn.buf.fill(&mut conn.stream))
            .await
        {
            Some(Ok(0)) => {
                self.eof = true;
                false
            }
            Some(Ok(_)) => true,
            Some(Err(_)) | None => false,
        }
    }

    async fn write_out(&mut self, bytes: &[u8]) -> Streamed {
        if bytes.is_empty() {
            return Streamed::Clean;
        }
        let deadline = Instant::now() + self.idle;
        match self
            .timer
            .within(deadline, self.client.write_all(bytes))
            .await
        {
            Some(Ok(())) => Streamed::Clean,
            Some(Err(_)) | None => Streamed::ClientGone,
        }
    }

    /// Write the first `n` bytes the instance sent to the client, and consume them.
    async fn write_buffered(&mut self, n: usize) -> Streamed {
        let deadline = Instant::now() + self.idle;
        let bytes = &self.conn.buf.filled()[..n];
        let written = if bytes.is_empty() {
            Some(Ok(()))
        } else {
            self.timer
                .within(deadline, self.client.write_all(bytes))
                .await
        };
        self.conn.buf.consume(n);
        match written {
            Some(Ok(())) => Streamed::Clean,
            Some(Err(_)) | None => Streamed::ClientGone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunked_end_is_found_and_nothing_after_it_is_taken() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 200";
        let mut c = Chunks::default();
        let n = c.feed(body).unwrap();
        assert!(c.done());
        assert_eq!(&body[n..], b"HTTP/1.1 200");
    }

    #[test]
    fn chunked_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello",
            b"ffffffffffffffffff\r\n",
            b"5 garbage\r\nhello\r\n",
            b"5;a\x01b\r\nhello\r\n",
            b"0\r\nX-T: 1\n",
        ] {
            assert!(Chunks::default().feed(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Any split of a valid chunked body into pieces finds the same end.
        #[test]
        fn chunked_split_anywhere(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            cut in proptest::collection::vec(0usize..400, 0..5),
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let total = body.len();
            body.extend_from_slice(b"tail");
            let mut cuts: Vec<usize> = cut.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            let mut c = Chunks::default();
            let mut pos = 0;
            for end in cuts {
                if end <= pos || c.done() { continue; }
                pos += c.feed(&body[pos..end]).unwrap();
            }
            prop_assert!(c.done());
            prop_assert_eq!(pos, total);
        }

        /// The request parser never panics and never forwards a request it did not fully
        /// understand: whatever it takes has one Host and a head that httparse accepts.
        #[test]
        fn prepare_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let router = Router::new(crate::RouterConfig::default());
            let mut out = Vec::new();
            let _ = prepare(&router, &bytes, b"127.0.0.1", &mut out);
        }

        #[test]
        fn parse_response_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            let _ = parse_response(&bytes, false, false, &mut out);
        }
    }

    fn response(raw: &str) -> (String, ResponseHead) {
        let mut out = Vec::new();
        match parse_response(raw.as_bytes(), false, false, &mut out) {
            Parsed::Complete(_, h) => (String::from_utf8(out).unwrap(), h),
            _ => panic!("not complete: {raw:?}"),
        }
    }

    #[test]
    fn response_framing() {
        let (head, r) = response("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(r.framing, Framing::Length(2));
        assert!(r.reusable);
        assert!(head.contains("content-length: 2\r\n"), "{head}");

        let (head, r) =
            response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.framing, Framing::Chunked);
        assert!(!r.reusable);
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{head}"
        );

        let (head, r) = response("HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n");
        assert_eq!(r.framing, Framing::Close);
        assert!(head.contains("connection: close\r\n"), "{head}");

        let (_, r) = response("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(r.framing, Framing::None);

        let (head, r) = response(
            "HTTP/1.1 200 OK\r\nConnection: x-secret, close\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(!r.reusable);
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("x-secret") && !lower.contains("keep-alive"),
            "{head}"
        );
    }

    #[test]
    fn framing_fields_survive_connection_naming_them() {
        let (head, r) = response(
            "HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 05\r\n\r\n",
        );
        assert_eq!(r.framing, Framing::Length(5));
        assert!(head.contains("content-length: 5\r\n"), "{head}");
    }

    #[test]
    fn bodiless_answers_keep_or_drop_their_length() {
        let mut out = Vec::new();
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n";
        let Parsed::Complete(_, r) = parse_response(raw, true, false, &mut out) else {
            panic!("not complete");
        };
        assert_eq!(r.framing, Framing::None);
        assert!(String::from_utf8_lossy(&out).contains("content-length: 7\r\n"));
        let (head, _) = response("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
        assert!(!head.contains("content-length"), "{head}");
        let mut out = Vec::new();
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n";
        let Parsed::Complete(_, r) = parse_response(raw, true, false, &mut out) else {
            panic!("not complete");
        };
        assert!(!r.reusable, "CL beside TE is never trusted, body or not");
    }

    #[test]
    fn odd_status_lines_are_refused() {
        for raw in [
            &b"HTTP/1.1 099 Odd\r\n\r\n"[..],
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let mut out = Vec::new();
            assert!(matches!(
                parse_response(raw, false, false, &mut out),
                Parsed::Invalid(_)
            ));
        }
    }

    #[test]
    fn local_answers_to_head_have_no_body() {
        let mut out = Vec::new();
        local_response(&mut out, &ProxyError::UnknownHost, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        assert!(text.contains("content-length: 33\r\n"), "{text:?}");
    }

    #[test]
    fn end_of_head_is_spotted_across_reads() {
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0));
        // The blank line straddles what was scanned and what is new.
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 26));
        assert!(head_may_end(b"GET / HTTP/1.1\nHost: a\n\n", 24));
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 29));
    }

    #[test]
    fn conflicting_lengths_are_refused() {
        let mut out = Vec::new();
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(
            parse_response(raw, false, false, &mut out),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn requests_the_fast_path_leaves_to_hyper() {
        let router = Router::new(crate::RouterConfig::default());
        for raw in [
            "GET / HTTP/1.0\r\nHost: a.slipway.localhost\r\n\r\n",
            "GET http://a.slipway.localhost/ HTTP/1.1\r\nHost: a.slipway.localhost\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n",
            "GET\x01 / HTTP/1.1\r\n\r\n",
            "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a{b} HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab",
        ] {
            let mut out = Vec::new();
            assert!(
                matches!(
                    prepare(&router, raw.as_bytes(), b"1.2.3.4", &mut out),
                    Prepared::HandOff
                ),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn request_head_is_rewritten() {
        let router = Router::new(crate::RouterConfig::default());
        router.upsert_service(crate::ServiceRoute::new(
            "web",
            vec![crate::InstanceRoute {
                id: "a".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
            }],
        ));
        let raw = "POST /p?q=1 HTTP/1.1\r\nHost: Web.Slipway.Localhost:8080\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=x\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Keep: yes\r\nContent-Length: 3\r\n\r\nabcGET";
        let mut out = Vec::new();
        let Prepared::Forward(f) = prepare(&router, raw.as_bytes(), b"10.0.0.9", &mut out) else {
            panic!("not forwarded");
        };
        assert_eq!(&raw.as_bytes()[f.consumed..], b"GET");
        assert!(!f.close && !f.head && !f.idempotent);
        let sent = String::from_utf8(out).unwrap();
        assert_eq!(
            sent,
            "POST /p?q=1 HTTP/1.1\r\nHost: Web.Slipway.Localhost:8080\r\nX-Keep: yes\r\nContent-Length: 3\r\nx-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: Web.Slipway.Localhost:8080\r\n\r\nabc"
        );
        let mut out = Vec::new();
        assert!(matches!(
            prepare(
                &router,
                b"GET / HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
                b"1",
                &mut out
            ),
            Prepared::Unrouted { close: true, .. }
        ));
        assert!(matches!(
            prepare(
                &router,
                b"GET / HTTP/1.1\r\nHost: web.slipway.localhost\r\n",
                b"1",
                &mut out
            ),
            Prepared::Partial
        ));
    }
}
