//! The request path: route, admit, forward, stream back.
//!
//! Order matters and is the whole design: find the service from the host (one hash
//! lookup), take a slot on an instance (or wait for one, boundedly), rewrite the head
//! (hop-by-hop headers out, `X-Forwarded-*` set by us, never trusted from the client),
//! send it with a deadline on the response head, then hand the response body to hyper
//! wrapped in [`RouterBody`], which holds the slot until the body ends or is dropped. A
//! body error from the instance is passed through as an error, so hyper aborts the client
//! connection instead of ending a truncated body cleanly. Upgrades (WebSocket) are
//! tunnelled only after the instance has said 101, by joining both hyper upgrade futures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::admission::{admit, Field};
use crate::conn::{Active, ConnClock};
use crate::error::ProxyError;
use crate::host::normalize_host;
use crate::pool::{H1Conn, Outgoing};
use crate::state::InFlightGuard;
use crate::table::ServiceEntry;
use crate::Router;

/// The hop-by-hop headers of RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and
/// `Proxy-Connection`.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Response body type of the router: its own short answers, or an instance's body that
/// holds the instance slot until it ends.
pub struct RouterBody {
    kind: Kind,
    /// Marks the request in progress on its client connection until the body is done.
    _active: Option<Active>,
}

enum Kind {
    Local(Option<Bytes>),
    Proxied {
        inner: Incoming,
        done: Option<Finish>,
        /// An error from the instance, held back for one poll (see `poll_frame`).
        failed: Option<hyper::Error>,
    },
}

/// What happens when a proxied body ends: the slot is freed, the latency recorded, and the
/// connection pooled again if the response ended cleanly and may be reused.
struct Finish {
    guard: InFlightGuard,
    /// The HTTP/1.1 connection the body arrives on, driven from `poll_frame` (it has no
    /// task of its own); `None` for h2c.
    conn: Option<H1Conn>,
    /// False when the response's framing was suspicious: the connection is then closed
    /// after the body instead of pooled.
    reusable: bool,
    start: Instant,
}

impl Finish {
    fn complete(self, clean: bool) {
        let Finish {
            guard,
            conn,
            reusable,
            start,
        } = self;
        guard.service.latency.observe(start.elapsed());
        if clean && reusable {
            if let Some(conn) = conn {
                guard.instance.pool.put(conn);
            }
        }
        drop(guard);
    }
}

impl RouterBody {
    fn local(text: &'static str) -> Self {
        RouterBody::bytes(Bytes::from_static(text.as_bytes()))
    }

    fn bytes(b: Bytes) -> Self {
        RouterBody {
            kind: Kind::Local(Some(b)),
            _active: None,
        }
    }

    fn empty() -> Self {
        RouterBody {
            kind: Kind::Local(None),
            _active: None,
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Proxied {
                inner,
                done,
                failed,
            } => {
                if let Some(e) = failed.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                let mut polled = Pin::new(&mut *inner).poll_frame(cx);
                if polled.is_pending() {
                    // The body arrives on a connection nobody else drives: read from it
                    // (the poll above asked hyper for more), then look again.
                    if let Some(conn) = done.as_mut().and_then(|f| f.conn.as_mut()) {
                        conn.drive(cx);
                        polled = Pin::new(&mut *inner).poll_frame(cx);
                    }
                }
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(f) = done.take() {
                            f.complete(true);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(f) = done.take() {
                            f.complete(false);
                        }
                        // hyper drops the connection at a body error without flushing what
                        // it has buffered: the head, maybe some data. The instance's bytes
                        // often arrive in one read with its failure, so answer Pending once
                        // (and wake at once): hyper flushes, and the client sees the status
                        // and a truncated body rather than no response at all.
                        if let Poll::Ready(Some(Err(e))) = polled {
                            *failed = Some(e);
                        }
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                        if let Some(f) = done.take() {
                            f.complete(true);
                        }
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(data) => data.is_none(),
            Kind::Proxied { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Proxied { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for RouterBody {
    fn drop(&mut self) {
        if let Kind::Proxied { inner, done, .. } = &mut self.kind {
            if let Some(f) = done.take() {
                // Dropped without reaching the end: the client went away, or hyper never
                // polled an empty body. Only the latter leaves the connection reusable.
                f.complete(inner.is_end_stream());
            }
        }
    }
}

/// Serve one request. Never fails: every error becomes a response.
///
/// `peer_ip` is the client's address as a header value, made once per connection;
/// `active` is the request's mark on its HTTP/1.1 connection's clock (`None` on the
/// h2c/sniffed path, which uses a timer per request).
pub(crate) async fn handle(
    router: Arc<Router>,
    req: Request<Incoming>,
    peer_ip: HeaderValue,
    active: Option<Active>,
    https: bool,
) -> Result<Response<RouterBody>, Infallible> {
    let start = Instant::now();
    if !https && req.method() == Method::GET {
        if let Some(answer) = router.acme_answer(req.uri().path()) {
            let mut resp = Response::new(RouterBody::bytes(Bytes::from(answer)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            resp.body_mut()._active = active;
            return Ok(resp);
        }
    }
    let (entry, fwd_host) = match check_head(&router, &req).and_then(|()| route(&router, &req)) {
        Ok(found) => found,
        Err(e) => {
            let mut resp = router.unrouted_response(&e);
            if e.closes() && req.version() <= Version::HTTP_11 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp.body_mut()._active = active;
            return Ok(resp);
        }
    };
    if entry.route.paused {
        let mut resp = paused_page(&entry.route.name);
        entry.state.record_status(resp.status());
        resp.body_mut()._active = active;
        return Ok(resp);
    }
    if !https && entry.route.https_redirect {
        if let Some(port) = router.https_port() {
            let mut resp = https_redirect(&fwd_host, req.uri(), port);
            resp.body_mut()._active = active;
            return Ok(resp);
        }
    }
    let hsts = (https && entry.route.hsts_max_age_s > 0).then(|| entry.route.hsts_max_age_s);
    entry.state.requests_total.fetch_add(1, Ordering::Relaxed);
    let state = Arc::clone(&entry.state);
    let clock = active.as_ref().map(Active::clock);
    let client = Client {
        peer_ip,
        host: fwd_host,
        https,
    };
    let mut resp = match proxy(&router, entry, req, client, start, clock).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(service = %state.name, error = %e, fault = ?e.fault(), "answered by the router");
            state.latency.observe(start.elapsed());
            error_response(&e)
        }
    };
    state.record_status(resp.status());
    if let Some(age) = hsts {
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={age}")) {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
    resp.body_mut()._active = active;
    Ok(resp)
}

/// The page a paused service answers with: 503, saying so, without waking anything.
fn paused_page(service: &str) -> Response<RouterBody> {
    let name: String = service
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} is paused</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em\">\
         <h1>{name} is paused</h1><p>This service has been paused by its owner and is not \
         serving requests. It answers again once it is resumed.</p></body></html>\n"
    );
    let mut resp = Response::new(RouterBody::bytes(Bytes::from(html)));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut().insert(
        HeaderName::from_static("x-slipway-paused"),
        HeaderValue::from_static("1"),
    );
    resp
}

/// A 308 to the same host and target over HTTPS (`:port` unless 443).
fn https_redirect(host: &HeaderValue, uri: &http::Uri, port: u16) -> Response<RouterBody> {
    let host = host.to_str().unwrap_or_default();
    // The host without its port (an IPv6 literal keeps its brackets).
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    let mut resp = Response::new(RouterBody::local(""));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// What the router refuses before it routes, the same on both request paths (the fast
/// path hands every request with `Transfer-Encoding` to this one):
/// - a head larger than the limit (431), measured as parsed: the request line and each
///   field's name, value and separators;
/// - on HTTP/1, a `Transfer-Encoding` that is not exactly one `chunked` coding (400), or
///   one naming a coding other than `chunked` before it (501), RFC 9112 §6.1 (hyper
///   itself answers 400 when `chunked` is not the last coding). A proxy that re-frames such a request lets the client and
///   the app disagree about where it ends.
pub(crate) fn check_head(router: &Router, req: &Request<Incoming>) -> Result<(), ProxyError> {
    let uri = req.uri();
    let mut size = req.method().as_str().len()
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    for (name, value) in req.headers() {
        size += name.as_str().len() + value.len() + 4;
    }
    if size + 2 > router.config.head_limit() {
        return Err(ProxyError::HeadTooLarge);
    }
    if req.version() > Version::HTTP_11 {
        return Ok(());
    }
    let mut codings = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    let Some(te) = codings.next() else {
        return Ok(());
    };
    if codings.next().is_some() {
        return Err(ProxyError::BadFraming("several Transfer-Encoding fields"));
    }
    let value = te.as_bytes().trim_ascii();
    if value.eq_ignore_ascii_case(b"chunked") {
        // Beside a `Content-Length`, hyper has already dropped the length, framed the
        // body by the coding and marked the connection to close (RFC 9112 §6.3).
        return Ok(());
    }
    let all_chunked = value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .all(|t| t.is_empty() || t.eq_ignore_ascii_case(b"chunked"));
    if all_chunked {
        // `chunked, chunked`, or empty list members: malformed, not unknown.
        Err(ProxyError::BadFraming(
            "Transfer-Encoding is not one chunked coding",
        ))
    } else {
        Err(ProxyError::UnknownCoding)
    }
}

/// Removes request fields whose names hold `_` (see `ServiceRoute::underscores_in_headers`).
fn drop_underscored(headers: &mut HeaderMap) {
    // Empty (no allocation) for the usual request, which has no such field.
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// The authority (absolute-form or HTTP/2 URI first, then `Host`) and its service.
fn route(
    router: &Router,
    req: &Request<Incoming>,
) -> Result<(Arc<ServiceEntry>, HeaderValue), ProxyError> {
    let (raw, value) = if let Some(auth) = req.uri().authority() {
        let value =
            HeaderValue::from_str(auth.as_str()).map_err(|_| ProxyError::BadHost("authority"))?;
        (auth.as_str(), value)
    } else {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let value = hosts.next().ok_or(ProxyError::BadHost("missing"))?;
        if hosts.next().is_some() {
            return Err(ProxyError::BadHost("several Host headers"));
        }
        let raw = value
            .to_str()
            .map_err(|_| ProxyError::BadHost("not ASCII"))?;
        (raw, value.clone())
    };
    let host = normalize_host(raw).map_err(|_| ProxyError::BadHost("malformed"))?;
    let table = router.table.load();
    let entry = table
        .lookup(host.as_ref())
        .cloned()
        .ok_or(ProxyError::UnknownHost)?;
    Ok((entry, value))
}

/// What the router tells the instance about the client: its address, the host it asked
/// for, and whether it came over HTTPS.
struct Client {
    peer_ip: HeaderValue,
    host: HeaderValue,
    https: bool,
}

async fn proxy(
    router: &Router,
    entry: Arc<ServiceEntry>,
    mut req: Request<Incoming>,
    client: Client,
    start: Instant,
    clock: Option<&ConnClock>,
) -> Result<Response<RouterBody>, ProxyError> {
    let Client {
        peer_ip,
        host: fwd_host,
        https,
    } = client;
    let (entry, guard) = admit(router, entry).await?;
    let http2 = entry.route.http2;
    // One pass over the names; most requests carry no hop-by-hop header at all, and then
    // the lookups below (upgrade, TE, the removals) are skipped.
    let hop = has_hop_by_hop(req.headers());
    let upgrade = if hop && !http2 && req.version() == Version::HTTP_11 {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    // The request (and below, the response) is changed in place: taking it apart and
    // putting it back together moves its head, a few hundred bytes, twice more.
    let wants_trailers = http2
        && hop
        && req.headers().get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    if hop {
        strip_hop_by_hop(req.headers_mut());
    }
    if !entry.route.underscores_in_headers {
        drop_underscored(req.headers_mut());
    }
    if let Some(up) = &upgrade {
        let headers = req.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up.clone());
    }
    set_forwarded(req.headers_mut(), peer_ip, &fwd_host, https);

    let instance = Arc::clone(&guard.instance);
    let timeout = entry.route.request_timeout;
    let (mut resp, conn) = if http2 {
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().remove(header::HOST);
        if wants_trailers {
            req.headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let authority = fwd_host.to_str().unwrap_or_default();
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .or_else(|_| {
                Uri::builder()
                    .scheme("http")
                    .authority(instance.addr.to_string())
                    .path_and_query(path)
                    .build()
            })
            .map_err(|_| ProxyError::BadHost("authority"))?;
        *req.uri_mut() = uri;
        let resp = tokio::time::timeout(timeout, instance.pool.send_h2(req))
            .await
            .map_err(|_| ProxyError::UpstreamTimeout)??;
        (resp, None)
    } else {
        *req.version_mut() = Version::HTTP_11;
        // The app sees the name the request was routed by: an absolute-form target's
        // authority replaces whatever `Host` the client sent beside it (RFC 9112 §3.2.2).
        if req.uri().authority().is_some() || !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, fwd_host);
        }
        // Origin-form (`/path?query`, what HTTP/1.1 clients send) is forwarded as it is;
        // an absolute-form or HTTP/2 URI is cut down to its path and query.
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let uri = Uri::try_from(path).map_err(|_| ProxyError::BadHost("path"))?;
            *req.uri_mut() = uri;
        }
        let send = instance.pool.send_h1(req.map(Outgoing::Client));
        let (resp, conn) = match clock {
            // The connection's clock: no timer of its own for this request.
            Some(clock) => clock.within(start, timeout, send).await,
            None => tokio::time::timeout(timeout, send).await.map_err(|_| ()),
        }
        .map_err(|()| ProxyError::UpstreamTimeout)??;
        (resp, Some(conn))
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return tunnel_response(router, &entry, resp, client_upgrade, conn, guard, start);
    }

    let mut reusable = true;
    let headers = resp.headers_mut();
    if has_hop_by_hop(headers) {
        if headers.contains_key(header::TRANSFER_ENCODING)
            && headers.contains_key(header::CONTENT_LENGTH)
        {
            // hyper framed the body by Transfer-Encoding (RFC 9112 §6.3); the length is a
            // lie or an attack, so it must not reach the client, and the connection's
            // framing can no longer be trusted.
            headers.remove(header::CONTENT_LENGTH);
            reusable = false;
        }
        strip_hop_by_hop(headers);
    }
    *resp.version_mut() = Version::HTTP_11;
    Ok(resp.map(|body| RouterBody {
        kind: Kind::Proxied {
            failed: None,
            inner: body,
            done: Some(Finish {
                guard,
                conn,
                reusable,
                start,
            }),
        },
        _active: None,
    }))
}

/// The instance agreed to switch protocols: answer 101 and splice the two upgraded
/// connections once hyper hands them over.
fn tunnel_response(
    router: &Router,
    entry: &ServiceEntry,
    mut resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    conn: Option<H1Conn>,
    guard: InFlightGuard,
    start: Instant,
) -> Result<Response<RouterBody>, ProxyError> {
    let Some(client_upgrade) = client_upgrade else {
        return Err(ProxyError::BadUpgrade);
    };
    let Some(proto) = resp.headers().get(header::UPGRADE).cloned() else {
        return Err(ProxyError::BadUpgrade);
    };
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    // hyper hands the instance's socket over only at the end of its connection future,
    // which from now on needs a task of its own.
    if let Some(conn) = conn {
        conn.detach();
    }
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, proto);
    parts.version = Version::HTTP_11;
    guard.service.latency.observe(start.elapsed());
    let idle = entry.route.idle_timeout;
    router.tunnels.spawn(async move {
        // The slot stays taken for the life of the tunnel: a WebSocket is load, and
        // draining must wait for it.
        let _guard = guard;
        let joined = tokio::time::timeout(idle, async {
            tokio::try_join!(client_upgrade, backend_upgrade)
        })
        .await;
        match joined {
            Ok(Ok((client, backend))) => {
                splice(TokioIo::new(client), TokioIo::new(backend), idle).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "upgrade failed"),
            Err(_) => tracing::debug!("upgrade did not complete within the idle timeout"),
        }
    });
    Ok(Response::from_parts(parts, RouterBody::empty()))
}

/// Copy both ways until both sides have closed, either side errs, or no byte has moved in
/// either direction for `idle`.
async fn splice<A, B>(mut a: A, mut b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    while a_open || b_open {
        tokio::select! {
            r = a.read(&mut buf_a), if a_open => match r {
                Ok(0) => { a_open = false; let _ = b.shutdown().await; }
                Ok(n) => {
                    if !matches!(tokio::time::timeout(idle, b.write_all(&buf_a[..n])).await, Ok(Ok(()))) { return; }
                    if b.flush().await.is_err() { return; }
                }
                Err(_) => return,
            },
            r = b.read(&mut buf_b), if b_open => match r {
                Ok(0) => { b_open = false; let _ = a.shutdown().await; }
                Ok(n) => {
                    if !matches!(tokio::time::timeout(idle, a.write_all(&buf_b[..n])).await, Ok(Ok(()))) { return; }
                    if a.flush().await.is_err() { return; }
                }
                Err(_) => return,
            },
            () = &mut sleep => return,
        }
        sleep.as_mut().reset(tokio::time::Instant::now() + idle);
    }
}

/// Whether any header is hop-by-hop. A header that `Connection` names can only be there
/// if `Connection` is, so this is exact for deciding whether [`strip_hop_by_hop`] has work.
fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    // By `Field::of` instead of `HOP_BY_HOP.contains`: one dispatch on the length per
    // header instead of nine comparisons (this runs twice per request).
    headers
        .keys()
        .any(|k| Field::of(k.as_str()).is_hop_by_hop())
}

/// Remove hop-by-hop headers, including every header the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // Collected first, removed after the borrow ends. Rare and short.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or_default().split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The client address as an `X-Forwarded-For` value; made once per connection.
pub(crate) fn peer_ip_value(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Replace whatever the client claimed with what the router knows.
fn set_forwarded(headers: &mut HeaderMap, peer_ip: HeaderValue, host: &HeaderValue, https: bool) {
    headers.remove(FORWARDED);
    headers.insert(X_FORWARDED_FOR, peer_ip);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    headers.insert(X_FORWARDED_HOST, host.clone());
}

/// The router's own answer for an error.
pub(crate) fn error_response(e: &ProxyError) -> Response<RouterBody> {
    let mut resp = Response::new(RouterBody::local(e.body()));
    *resp.status_mut() = e.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(secs) = e.retry_after() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, Keep-Alive"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("7.7.7.7"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        set_forwarded(
            &mut h,
            peer_ip_value("10.0.0.1:5".parse().unwrap()),
            &HeaderValue::from_static("a.b"),
            false,
        );
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "a.b");
        assert!(!h.contains_key(FORWARDED));
    }
}
