//! HTTP/1.1 framing and connection handling as a client sees it through the router.
//!
//! These tests pin the behaviour of the plain HTTP/1.1 request path (the hand-written
//! fast path, and the hyper path it hands unusual requests to) from the outside: exact
//! bytes written by a raw client, exact bytes received by raw backends that record every
//! request. Pipelining, every response framing (Content-Length, chunked with extensions
//! and trailers, close-delimited, no body for HEAD/204/304/1xx), request bodies that arrive
//! late or are large, `Connection: close` and HTTP/1.0, stale pooled instance connections,
//! hop-by-hop headers both ways, and the request timeout.
//!
//! Every read has a deadline, every loop is bounded, and only 127.0.0.1 is used.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use slipway_router::{RouterConfig, ServiceRoute};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, timeout_at, Instant};

const HOST: &str = "web.slipway.localhost";
/// Bound on one whole response read by the client, and on each backend read or write.
const LIMIT: Duration = Duration::from_secs(10);
/// How long the client waits for the router to close a connection it should close.
const CLOSE_LIMIT: Duration = Duration::from_secs(3);
/// Most bytes the client buffers (the largest response here is 1 MiB).
const MAX_BUF: usize = 8 << 20;

// ---------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------

/// A router with one service, `web`, on one instance at `backend`; `tune` adjusts its route.
async fn router_with(backend: SocketAddr, tune: impl FnOnce(&mut ServiceRoute)) -> TestRouter {
    let t = start_router(RouterConfig::default()).await;
    let mut r = route("web", vec![instance("a", backend)]);
    tune(&mut r);
    t.router.upsert_service(r);
    t
}

async fn router_to(backend: SocketAddr) -> TestRouter {
    router_with(backend, |_| {}).await
}

/// A plain HTTP/1.1 GET for `path` on the test host.
fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
}

// ---------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------

/// A client on one TCP connection that writes exact bytes and parses responses itself.
struct Client {
    s: TcpStream,
    /// Bytes read but not yet consumed by a parsed response.
    buf: Vec<u8>,
}

/// One parsed response.
struct Resp {
    /// `HTTP/1.1` or `HTTP/1.0`.
    version: String,
    status: u16,
    /// Names as sent (case kept), values trimmed, in order.
    headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    body: Vec<u8>,
    /// Status codes of the 1xx responses that came before this one.
    informational: Vec<u16>,
    /// The body was delimited by the router closing the connection.
    close_delimited: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Debug for Resp {
    /// The body as a preview: some are a mebibyte.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resp")
            .field("version", &self.version)
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &preview(&self.body))
            .field("informational", &self.informational)
            .field("close_delimited", &self.close_delimited)
            .finish()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The start of `b`, for assertion messages.
fn preview(b: &[u8]) -> String {
    let n = b.len().min(400);
    let more = if b.len() > n { "..." } else { "" };
    format!(
        "{:?}{more} ({} bytes)",
        String::from_utf8_lossy(&b[..n]),
        b.len()
    )
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let s = timeout(LIMIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        s.set_nodelay(true).expect("set_nodelay");
        Client { s, buf: Vec::new() }
    }

    /// Write exactly these bytes, in one `write_all`.
    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        timeout(LIMIT, self.s.write_all(bytes.as_ref()))
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// One read into the buffer; 0 at EOF. Panics on timeout, error or an overfull buffer.
    async fn fill(&mut self, deadline: Instant, what: &str) -> usize {
        assert!(
            self.buf.len() < MAX_BUF,
            "over {MAX_BUF} bytes buffered waiting for {what}"
        );
        let mut chunk = [0u8; 16 * 1024];
        let n = match timeout_at(deadline, self.s.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!(
                "read failed waiting for {what}: {e}; buffered {}",
                preview(&self.buf)
            ),
            Err(_) => panic!(
                "timed out waiting for {what}; buffered {}",
                preview(&self.buf)
            ),
        };
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// One read that must bring bytes.
    async fn need(&mut self, deadline: Instant, what: &str) {
        let n = self.fill(deadline, what).await;
        assert!(
            n > 0,
            "connection closed while waiting for {what}; buffered {}",
            preview(&self.buf)
        );
    }

    /// The next CRLF-terminated line, without its CRLF.
    async fn line(&mut self, deadline: Instant, what: &str) -> Vec<u8> {
        // Bounded: each turn finds the line, or reads more bytes (capped by MAX_BUF), or
        // panics at the deadline or EOF.
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..i + 2).collect();
                line.truncate(i);
                return line;
            }
            self.need(deadline, what).await;
        }
    }

    /// Exactly `n` bytes.
    async fn exact(&mut self, n: usize, deadline: Instant, what: &str) -> Vec<u8> {
        // Bounded like `line`.
        while self.buf.len() < n {
            self.need(deadline, what).await;
        }
        self.buf.drain(..n).collect()
    }

    /// A chunked body, decoded: extensions ignored, trailers read and dropped.
    async fn chunked(&mut self, deadline: Instant) -> Vec<u8> {
        let mut body = Vec::new();
        for _ in 0..100_000 {
            let line = self.line(deadline, "a chunk-size line").await;
            let line = String::from_utf8_lossy(&line).into_owned();
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .unwrap_or_else(|_| panic!("bad chunk-size line {line:?}"));
            if size == 0 {
                for _ in 0..100 {
                    if self.line(deadline, "a trailer line").await.is_empty() {
                        return body;
                    }
                }
                panic!("more than 100 trailer lines");
            }
            let data = self.exact(size, deadline, "chunk data").await;
            body.extend_from_slice(&data);
            let end = self.line(deadline, "the CRLF after chunk data").await;
            assert!(
                end.is_empty(),
                "chunk data not followed by CRLF: {}",
                preview(&end)
            );
        }
        panic!("more than 100000 chunks");
    }

    /// Read the next final response, skipping (and noting) 1xx ones. `head_request`: the
    /// request was HEAD, so the response has no body whatever its headers say.
    async fn response(&mut self, head_request: bool) -> Resp {
        let deadline = Instant::now() + LIMIT;
        let mut informational = Vec::new();
        for _ in 0..8 {
            let status_line = self.line(deadline, "a status line").await;
            let status_line = String::from_utf8_lossy(&status_line).into_owned();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default().to_owned();
            assert!(
                version.starts_with("HTTP/1."),
                "not a status line: {status_line:?} (buffered after it: {})",
                preview(&self.buf)
            );
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
            let mut headers = Vec::new();
            let mut ended = false;
            for _ in 0..200 {
                let line = self.line(deadline, "a header line").await;
                if line.is_empty() {
                    ended = true;
                    break;
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                let (k, v) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {line:?}"));
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            assert!(ended, "more than 200 header lines");
            if (100..200).contains(&status) && status != 101 {
                informational.push(status);
                continue;
            }
            let mut resp = Resp {
                version,
                status,
                headers,
                body: Vec::new(),
                informational,
                close_delimited: false,
            };
            if head_request || matches!(status, 101 | 204 | 304) {
                return resp;
            }
            let chunked = resp
                .header("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
            let length = resp.header("content-length").map(|v| {
                v.parse::<usize>()
                    .unwrap_or_else(|_| panic!("bad Content-Length {v:?}"))
            });
            if chunked {
                resp.body = self.chunked(deadline).await;
            } else if let Some(n) = length {
                resp.body = self.exact(n, deadline, "a Content-Length body").await;
            } else {
                // Close-delimited: everything up to EOF (bounded by the deadline and MAX_BUF).
                while self
                    .fill(deadline, "the end of a close-delimited body")
                    .await
                    > 0
                {}
                resp.body = std::mem::take(&mut self.buf);
                resp.close_delimited = true;
            }
            return resp;
        }
        panic!("more than 8 informational responses in a row");
    }

    /// Nothing more arrives and the router closes the connection (FIN or reset) soon.
    async fn expect_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes after the response: {}",
            preview(&self.buf)
        );
        let mut chunk = [0u8; 1024];
        match timeout(CLOSE_LIMIT, self.s.read(&mut chunk)).await {
            Err(_) => panic!("the router kept the connection open for {CLOSE_LIMIT:?}"),
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(n)) => panic!(
                "unexpected bytes instead of a close: {}",
                preview(&chunk[..n])
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Recording raw backend
// ---------------------------------------------------------------------------------------

/// One request exactly as a backend received it.
#[derive(Debug, Clone)]
struct Seen {
    /// Order of the request among all the backend received, from 0.
    index: usize,
    /// Accept order of its connection, from 0.
    conn: usize,
    /// Order of the request on its connection, from 0.
    nth: usize,
    /// Request line and headers, up to and including the blank line.
    head: String,
    /// The body, decoded if it came chunked.
    body: Vec<u8>,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or_default()
    }

    fn path(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or_default()
    }

    /// Every value of the header `name` (compared case-insensitively), trimmed.
    fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// What a recording backend does after reading a request.
enum Act {
    /// Write these bytes and wait for the next request on the connection.
    Reply(Vec<u8>),
    /// Write each part with a short pause in between, then wait for the next request.
    ReplyInParts(Vec<Vec<u8>>),
    /// Write these bytes, then close the connection.
    ReplyAndClose(Vec<u8>),
    /// Close the connection without answering.
    Close,
    /// Never answer: hold the connection open (up to 30 s) until the peer closes it.
    Hang,
}

#[derive(Default)]
struct Recorder {
    accepted: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A raw backend that reads every request exactly (head, then a Content-Length or chunked
/// body), records it, then does what `act` says. It serves up to 64 requests per connection.
async fn recording_backend<F>(act: F) -> (SocketAddr, Arc<Recorder>)
where
    F: Fn(&Seen) -> Act + Send + Sync + 'static,
{
    let rec = Arc::new(Recorder::default());
    let act = Arc::new(act);
    let r = Arc::clone(&rec);
    let addr = raw_backend(move |s: TcpStream| {
        // Runs at accept time, so `conn` is the accept order.
        let conn = r.accepted.fetch_add(1, Ordering::SeqCst);
        let (rec, act) = (Arc::clone(&r), Arc::clone(&act));
        async move { serve_recorded(s, conn, rec, act).await }
    })
    .await;
    (addr, rec)
}

async fn serve_recorded<F>(mut s: TcpStream, conn: usize, rec: Arc<Recorder>, act: Arc<F>)
where
    F: Fn(&Seen) -> Act + Send + Sync + 'static,
{
    for nth in 0..64 {
        let Ok(head) = timeout(LIMIT, read_head(&mut s)).await else {
            return;
        };
        if !head.ends_with("\r\n\r\n") {
            // Closed (or gave up) before a whole head.
            return;
        }
        let mut seen = Seen {
            index: 0,
            conn,
            nth,
            head,
            body: Vec::new(),
        };
        let Some(body) = read_request_body(&mut s, &seen).await else {
            return;
        };
        seen.body = body;
        {
            let mut list = rec.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.index = list.len();
            list.push(seen.clone());
        }
        match (*act)(&seen) {
            Act::Reply(bytes) => {
                if !write_within(&mut s, &bytes).await {
                    return;
                }
            }
            Act::ReplyInParts(parts) => {
                for part in parts {
                    if !write_within(&mut s, &part).await {
                        return;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
            }
            Act::ReplyAndClose(bytes) => {
                write_within(&mut s, &bytes).await;
                let _ = timeout(LIMIT, s.shutdown()).await;
                return;
            }
            Act::Close => return,
            Act::Hang => {
                let mut sink = Vec::new();
                let _ = timeout(Duration::from_secs(30), s.read_to_end(&mut sink)).await;
                return;
            }
        }
    }
}

async fn write_within(s: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(timeout(LIMIT, s.write_all(bytes)).await, Ok(Ok(())))
}

/// One CRLF-terminated line, read byte by byte (so nothing after it is consumed).
async fn read_line(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > 64 * 1024 {
            return None;
        }
        match timeout(LIMIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => line.push(byte[0]),
            _ => return None,
        }
    }
    line.truncate(line.len() - 2);
    Some(line)
}

/// The request body framed as the head says; `None` if the connection ends first.
async fn read_request_body(s: &mut TcpStream, seen: &Seen) -> Option<Vec<u8>> {
    let chunked = seen
        .headers("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        for _ in 0..100_000 {
            let line = read_line(s).await?;
            let text = String::from_utf8_lossy(&line).into_owned();
            let size = usize::from_str_radix(text.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                for _ in 0..100 {
                    if read_line(s).await?.is_empty() {
                        return Some(body);
                    }
                }
                return None;
            }
            let start = body.len();
            body.resize(start + size, 0);
            timeout(LIMIT, s.read_exact(&mut body[start..]))
                .await
                .ok()?
                .ok()?;
            if !read_line(s).await?.is_empty() {
                return None;
            }
        }
        return None;
    }
    let len = match seen.headers("content-length").first() {
        Some(v) => v.parse::<usize>().ok()?,
        None => 0,
    };
    let mut body = vec![0u8; len];
    timeout(LIMIT, s.read_exact(&mut body)).await.ok()?.ok()?;
    Some(body)
}

/// `HTTP/1.1 200 OK` with a Content-Length body.
fn ok_reply(body: &[u8]) -> Vec<u8> {
    let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    v
}

/// FNV-1a, 64 bit: a checksum the backend can echo for large bodies.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The answer of the echo-length backends: the body's length and checksum.
fn len_and_hash(body: &[u8]) -> String {
    format!("len={} fnv={:016x}", body.len(), fnv1a(body))
}

/// `n` deterministic bytes that are not all the same.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The tokens of `Connection` header values, lowercased.
fn connection_tokens(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. Pipelining
// ---------------------------------------------------------------------------------------

/// Two, then three GET requests written in a single write each on one connection are all
/// answered, in order, each response complete, on that same connection; the instance sees
/// them in the order sent.
#[tokio::test]
async fn pipelined_gets_are_answered_in_order_on_one_connection() {
    let (b, rec) =
        recording_backend(|seen| Act::Reply(ok_reply(format!("path={}", seen.path()).as_bytes())))
            .await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;

    c.send(format!("{}{}", get_req("/one"), get_req("/two")))
        .await;
    for path in ["/one", "/two"] {
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.text(), format!("path={path}"));
    }

    c.send(format!(
        "{}{}{}",
        get_req("/three"),
        get_req("/four"),
        get_req("/five")
    ))
    .await;
    for path in ["/three", "/four", "/five"] {
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.text(), format!("path={path}"));
    }
    assert!(c.buf.is_empty(), "stray bytes: {}", preview(&c.buf));

    let paths: Vec<String> = rec.seen().iter().map(|s| s.path().to_owned()).collect();
    assert_eq!(paths, ["/one", "/two", "/three", "/four", "/five"]);
}

/// A pipelined POST whose body looks exactly like another request is forwarded as a body:
/// the instance gets the POST with those bytes and then the real next GET, never `/evil`.
#[tokio::test]
async fn pipelined_post_body_is_not_read_as_a_request() {
    let (b, rec) = recording_backend(|seen| {
        Act::Reply(ok_reply(
            format!("{} {} {}", seen.method(), seen.path(), seen.body.len()).as_bytes(),
        ))
    })
    .await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    let body = format!("GET /evil HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut bytes = format!(
        "POST /p HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes.extend_from_slice(get_req("/after").as_bytes());
    c.send(&bytes).await;

    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("POST /p {}", body.len()));
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "GET /after 0");

    let seen = rec.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].body, body.as_bytes());
    assert!(seen.iter().all(|s| s.path() != "/evil"), "{seen:?}");
}

// ---------------------------------------------------------------------------------------
// 2. Chunked responses
// ---------------------------------------------------------------------------------------

/// A chunked response (several chunks, an upper-case hex size, a chunk extension and a
/// trailer) reaches the client with exactly the same content; a second request on the same
/// client connection then works, so the router found the end of the chunked body. The
/// instance connection is reused for it, which it could not be had the end been missed.
#[tokio::test]
async fn chunked_response_with_extension_and_trailer_is_complete() {
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\
        Content-Type: text/plain\r\n\
        Transfer-Encoding: chunked\r\n\
        Trailer: X-Checksum\r\n\
        \r\n\
        5;name=value\r\nhello\r\n\
        2\r\n, \r\n\
        5\r\nworld\r\n\
        A\r\n0123456789\r\n\
        0\r\nX-Checksum: 42\r\n\r\n";
    const EXPECTED: &str = "hello, world0123456789";
    let (b, rec) = recording_backend(|_| Act::Reply(REPLY.to_vec())).await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;

    for path in ["/first", "/second"] {
        c.send(get_req(path)).await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.text(), EXPECTED, "{path}");
        assert!(!r.close_delimited, "{path}: {r:?}");
        assert!(
            !(r.has("content-length") && r.has("transfer-encoding")),
            "both framings: {r:?}"
        );
    }
    assert_eq!(rec.seen().len(), 2);
    assert_eq!(
        rec.accepted(),
        1,
        "the instance connection should be reused after a complete chunked body"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Close-delimited responses
// ---------------------------------------------------------------------------------------

/// A response with neither Content-Length nor Transfer-Encoding (the instance writes the
/// head and the body, then closes) reaches the client complete, and the router closes the
/// client connection after it. A new client connection afterwards is served (on a new
/// instance connection).
#[tokio::test]
async fn close_delimited_response_is_complete_and_closes_the_client() {
    let mut body = b"close-delimited body start|".to_vec();
    body.extend_from_slice(&pattern(100 * 1024));
    body.extend_from_slice(b"|end");
    let expected = body.clone();
    let (b, rec) = recording_backend(move |_| {
        let mut reply =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        reply.extend_from_slice(&body);
        Act::ReplyAndClose(reply)
    })
    .await;
    let t = router_to(b).await;

    for round in 0..2 {
        let mut c = Client::connect(t.addr).await;
        c.send(get_req("/stream")).await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        assert_eq!(r.body.len(), expected.len(), "round {round}");
        assert!(r.body == expected, "round {round}: body differs");
        c.expect_closed().await;
    }
    assert_eq!(rec.seen().len(), 2);
    assert_eq!(rec.accepted(), 2);
}

// ---------------------------------------------------------------------------------------
// 4. HEAD
// ---------------------------------------------------------------------------------------

/// A HEAD response with `Content-Length: 5` and no body: the client gets the headers
/// (Content-Length included) and no body bytes, and a following GET on the same connection
/// parses cleanly; also when HEAD and GET are pipelined in one write.
#[tokio::test]
async fn head_response_has_headers_and_no_body() {
    let (b, rec) = recording_backend(|seen| {
        let mut reply =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n".to_vec();
        if seen.method() != "HEAD" {
            reply.extend_from_slice(b"hello");
        }
        Act::Reply(reply)
    })
    .await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;

    c.send(format!("HEAD /h HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("5"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");

    c.send(get_req("/h")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello");

    // Pipelined: any body bytes after the HEAD response would break the GET's status line.
    c.send(format!(
        "HEAD /h HTTP/1.1\r\nHost: {HOST}\r\n\r\n{}",
        get_req("/h")
    ))
    .await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200);
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello");
    assert!(c.buf.is_empty(), "stray bytes: {}", preview(&c.buf));

    let methods: Vec<String> = rec.seen().iter().map(|s| s.method().to_owned()).collect();
    assert_eq!(methods, ["HEAD", "GET", "HEAD", "GET"]);
}

// ---------------------------------------------------------------------------------------
// 5. 204 and 304
// ---------------------------------------------------------------------------------------

/// 204 and 304 responses carry no body and the client connection stays usable: each is
/// followed on the same connection by a request whose response parses cleanly.
#[tokio::test]
async fn no_content_and_not_modified_have_no_body() {
    let (b, _rec) = recording_backend(|seen| match seen.path() {
        "/204" => Act::Reply(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec()),
        "/304" => Act::Reply(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec()),
        _ => Act::Reply(ok_reply(b"after")),
    })
    .await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;

    c.send(get_req("/204")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("x-a"), Some("1"));
    c.send(get_req("/after")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "after");

    c.send(format!(
        "GET /304 HTTP/1.1\r\nHost: {HOST}\r\nIf-None-Match: \"v1\"\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    c.send(get_req("/after")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "after");

    // Pipelined, so a stray body byte would show.
    c.send(format!(
        "{}{}{}",
        get_req("/204"),
        get_req("/304"),
        get_req("/after")
    ))
    .await;
    assert_eq!(c.response(false).await.status, 204);
    assert_eq!(c.response(false).await.status, 304);
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "after");
    assert!(c.buf.is_empty(), "stray bytes: {}", preview(&c.buf));
}

// ---------------------------------------------------------------------------------------
// 6. Request bodies
// ---------------------------------------------------------------------------------------

/// The echo-length backend: answers every request with its body's length and checksum.
async fn echo_len_backend() -> (SocketAddr, Arc<Recorder>) {
    recording_backend(|seen| Act::Reply(ok_reply(len_and_hash(&seen.body).as_bytes()))).await
}

/// A small POST body written in the same write as the head reaches the instance
/// byte-exact, including bytes that look like HTTP framing (CRLFs, NUL, 0xFF).
#[tokio::test]
async fn post_body_in_the_same_write_arrives_byte_exact() {
    let (b, rec) = echo_len_backend().await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    let body: &[u8] = b"a=1&b=\x00\xff\r\n\r\n0\r\n\r\nend";
    let mut bytes = format!(
        "POST /small HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    c.send(&bytes).await;

    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), len_and_hash(body));
    let seen = rec.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method(), "POST");
    assert_eq!(seen[0].body, body);

    // The connection is still in step: a GET after it works.
    c.send(get_req("/next")).await;
    let r = c.response(false).await;
    assert_eq!(r.text(), len_and_hash(b""));
}

/// A POST whose body arrives in a second write 100 ms after the head still reaches the
/// instance whole.
#[tokio::test]
async fn post_body_sent_after_the_head_arrives_whole() {
    let (b, rec) = echo_len_backend().await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    let body: &[u8] = b"late body, sent on its own";
    c.send(format!(
        "POST /late HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ))
    .await;
    sleep(Duration::from_millis(100)).await;
    c.send(body).await;

    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), len_and_hash(body));
    let seen = rec.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body);
}

/// Large POST bodies reach the instance intact on one client connection: 48 KiB (under the
/// fast path's inline limit, over its first buffer size) and 200 KiB (bigger than any
/// inline buffer). The instance echoes length and checksum, and the recorded bytes match.
#[tokio::test]
async fn large_post_body_arrives_intact() {
    let (b, rec) = echo_len_backend().await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    let sizes = [48 * 1024, 200 * 1024];
    for (i, size) in sizes.into_iter().enumerate() {
        let body = pattern(size);
        let mut bytes = format!(
            "POST /big HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        c.send(&bytes).await;

        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{size}: {r:?}");
        assert_eq!(r.text(), len_and_hash(&body), "{size}");
        let seen = rec.seen();
        assert_eq!(seen.len(), i + 1);
        assert_eq!(seen[i].body.len(), body.len(), "{size}");
        assert!(seen[i].body == body, "{size}: recorded body differs");
    }
}

// ---------------------------------------------------------------------------------------
// 7. Connection: close from the client
// ---------------------------------------------------------------------------------------

/// A client `Connection: close` gets its response and then the router closes the
/// connection; the client's hop-by-hop headers never reach the instance, and any
/// `Connection` header the instance sees names only what the proxy itself may set
/// (`keep-alive` or `close`). Two shapes: a plain `Connection: close` with `Keep-Alive`,
/// `Proxy-Connection` and `Proxy-Authorization` beside it (a request the fast path keeps),
/// and one whose `Connection` also names a header and that carries `TE` (one it hands to
/// the hyper path). The instance answers with keep-alive each time.
#[tokio::test]
async fn client_connection_close_closes_after_the_response() {
    let (b, rec) = recording_backend(|_| Act::Reply(ok_reply(b"bye"))).await;
    let t = router_to(b).await;
    let requests = [
        format!(
            "GET /plain HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Kept: yes\r\n\r\n"
        ),
        format!(
            "GET /named HTTP/1.1\r\nHost: {HOST}\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\
             Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n"
        ),
    ];
    for req in &requests {
        let mut c = Client::connect(t.addr).await;
        c.send(req).await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{req:?}: {r:?}");
        assert_eq!(r.text(), "bye");
        c.expect_closed().await;
    }

    let seen = rec.seen();
    let paths: Vec<&str> = seen.iter().map(Seen::path).collect();
    assert_eq!(paths, ["/plain", "/named"]);
    for s in &seen {
        for name in [
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "te",
        ] {
            assert!(
                s.headers(name).is_empty(),
                "{name} reached the instance: {}",
                s.head
            );
        }
        assert_eq!(s.headers("x-kept"), ["yes"], "{}", s.head);
        for token in connection_tokens(&s.headers("connection")) {
            assert!(
                token == "keep-alive" || token == "close",
                "the instance saw Connection naming {token:?}: {}",
                s.head
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 8. HTTP/1.0
// ---------------------------------------------------------------------------------------

/// An HTTP/1.0 request without keep-alive gets a complete response and the connection is
/// closed after it. The instance is spoken to in HTTP/1.1.
#[tokio::test]
async fn http10_without_keep_alive_is_answered_then_closed() {
    let (b, rec) = recording_backend(|_| Act::Reply(ok_reply(b"old client"))).await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    c.send(format!("GET /old HTTP/1.0\r\nHost: {HOST}\r\n\r\n"))
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.version.starts_with("HTTP/1."), "{r:?}");
    assert_eq!(r.text(), "old client");
    c.expect_closed().await;

    let seen = rec.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path(), "/old");
    assert!(
        seen[0].request_line().ends_with("HTTP/1.1"),
        "{}",
        seen[0].head
    );
}

// ---------------------------------------------------------------------------------------
// 9. Stale pooled instance connections
// ---------------------------------------------------------------------------------------

/// The instance answers one request with keep-alive, then reads the next request on that
/// connection and closes it without answering. An idempotent GET sent on that pooled
/// connection is retried on a fresh one: the client gets 200, the stale connection did get
/// the request, and the instance accepted exactly two connections.
/// An instance that answers the first request on its first connection, then closes that
/// connection on reading the second; a client that made the first request and waited for
/// the router to pool the connection. The next request on the client meets the stale
/// connection.
async fn stale_connection_setup() -> (TestRouter, Arc<Recorder>, Client) {
    let (b, rec) = recording_backend(|seen| {
        if seen.conn == 0 && seen.nth == 1 {
            Act::Close
        } else {
            Act::Reply(ok_reply(b"ok"))
        }
    })
    .await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    c.send(get_req("/first")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    // Let the router pool the instance connection.
    sleep(Duration::from_millis(100)).await;
    (t, rec, c)
}

/// The instance answers one request with keep-alive, then reads the next request on that
/// connection and closes it without answering. An idempotent GET sent on that pooled
/// connection is retried on a fresh one: the client gets 200, the stale connection did get
/// the request, and the instance accepted exactly two connections.
#[tokio::test]
async fn stale_pooled_connection_is_retried_for_get() {
    let (_t, rec, mut c) = stale_connection_setup().await;
    c.send(get_req("/second")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "ok");

    assert_eq!(rec.accepted(), 2);
    let seen = rec.seen();
    assert!(
        seen.iter()
            .any(|s| s.conn == 0 && s.nth == 1 && s.path() == "/second"),
        "the pooled connection was never tried: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.conn == 1 && s.path() == "/second"),
        "no retry on a fresh connection: {seen:?}"
    );
}

/// The same stale connection with a POST: a non-idempotent request is not retried
/// silently; the client gets 502, and the instance saw the POST once.
#[tokio::test]
async fn stale_pooled_connection_is_not_retried_for_post() {
    let (_t, rec, mut c) = stale_connection_setup().await;
    c.send(format!(
        "POST /submit HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\n\r\ndata=1"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 502, "{r:?}");

    let posts = rec.seen().iter().filter(|s| s.method() == "POST").count();
    assert_eq!(posts, 1, "the POST was sent again");
}

// ---------------------------------------------------------------------------------------
// 10. 1xx informational responses
// ---------------------------------------------------------------------------------------

/// A `103 Early Hints` before the real response: the client ends up with the 200 and its
/// body (whether or not the 103 is passed on), and the connection stays in step for a
/// second request.
#[tokio::test]
async fn informational_response_is_followed_by_the_final_one() {
    let (b, _rec) = recording_backend(|_| {
        Act::ReplyInParts(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n".to_vec(),
            ok_reply(b"final body"),
        ])
    })
    .await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    for path in ["/first", "/second"] {
        c.send(get_req(path)).await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.text(), "final body", "{path}");
        assert!(
            r.informational.iter().all(|s| *s == 103),
            "{path}: {:?}",
            r.informational
        );
    }
}

// ---------------------------------------------------------------------------------------
// 11. Hop-by-hop response headers
// ---------------------------------------------------------------------------------------

/// Response headers named by the instance's `Connection` header (`X-Internal`, `X-Other`)
/// and its `Keep-Alive` never reach the client; other headers do, and the connection keeps
/// working.
#[tokio::test]
async fn connection_named_response_headers_are_stripped() {
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\
        Connection: x-internal, X-Other\r\n\
        X-Internal: secret\r\n\
        X-Other: also-secret\r\n\
        Keep-Alive: timeout=5, max=100\r\n\
        X-Public: yes\r\n\
        Content-Length: 2\r\n\
        \r\n\
        ok";
    let (b, _rec) = recording_backend(|_| Act::Reply(REPLY.to_vec())).await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    for path in ["/first", "/second"] {
        c.send(get_req(path)).await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "ok");
        for name in ["x-internal", "x-other", "keep-alive"] {
            assert!(!r.has(name), "{name} reached the client: {r:?}");
        }
        assert!(
            r.headers.iter().all(|(_, v)| !v.contains("secret")),
            "{r:?}"
        );
        assert_eq!(r.header("x-public"), Some("yes"));
        let conn: Vec<String> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .map(|(_, v)| v.clone())
            .collect();
        for token in connection_tokens(&conn) {
            assert!(
                token == "keep-alive" || token == "close",
                "the client saw Connection naming {token:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 12. Header case and duplicate Host
// ---------------------------------------------------------------------------------------

/// Header names the client sends in mixed case (`hOsT` too) arrive at the instance with
/// their values unchanged (names compared case-insensitively).
#[tokio::test]
async fn mixed_case_request_headers_arrive() {
    let (b, rec) = recording_backend(|_| Act::Reply(ok_reply(b"ok"))).await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    c.send(format!(
        "GET /case HTTP/1.1\r\nhOsT: {HOST}\r\nX-MiXeD-CaSe: SomeValue\r\naccept-LANGUAGE: en\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");

    let seen = rec.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.headers("x-mixed-case"), ["SomeValue"], "{}", s.head);
    assert_eq!(s.headers("accept-language"), ["en"], "{}", s.head);
    assert_eq!(s.headers("host"), [HOST], "{}", s.head);
}

/// A request with two `Host` headers (same value, different case of the name) is 400 and
/// never reaches the instance.
#[tokio::test]
async fn duplicate_host_is_400() {
    let (b, rec) = recording_backend(|_| Act::Reply(ok_reply(b"ok"))).await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    c.send(format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nhost: {HOST}\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(rec.seen().is_empty(), "{:?}", rec.seen());
}

// ---------------------------------------------------------------------------------------
// 13. Large response
// ---------------------------------------------------------------------------------------

/// A 1 MiB response with Content-Length, far larger than any head buffer, streams through
/// complete and byte-exact, and the connection is usable afterwards.
#[tokio::test]
async fn one_mebibyte_response_streams_through() {
    let b = backend(|req| async move {
        if req.uri().path() == "/big" {
            Response::new(full(pattern(1 << 20)))
        } else {
            Response::new(full("small"))
        }
    })
    .await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;

    c.send(get_req("/big")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert!(!r.close_delimited, "a sized body must stay sized");
    assert_eq!(r.body.len(), 1 << 20);
    assert!(r.body == pattern(1 << 20), "body differs");

    c.send(get_req("/small")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "small");
}

// ---------------------------------------------------------------------------------------
// 14. Request timeout
// ---------------------------------------------------------------------------------------

/// With `request_timeout` at 500 ms, an instance that answers the first request at once and
/// never answers the second: the second request on the same kept-alive client connection
/// gets 504, not before the timeout and well within 5 s.
#[tokio::test]
async fn second_request_on_kept_alive_connection_times_out_with_504() {
    let (b, rec) = recording_backend(|seen| {
        if seen.index == 0 {
            Act::Reply(ok_reply(b"fast"))
        } else {
            Act::Hang
        }
    })
    .await;
    let t = router_with(b, |r| r.request_timeout = Duration::from_millis(500)).await;
    let mut c = Client::connect(t.addr).await;

    c.send(get_req("/fast")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "fast");

    let started = Instant::now();
    c.send(get_req("/slow")).await;
    let r = c.response(false).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(400),
        "504 too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "504 too late: {took:?}");
    assert_eq!(
        rec.seen().len(),
        2,
        "the instance never got the second request"
    );
}

/// The router's own answer to `HEAD` (here a 404 for an unknown host) has a length and
/// no body, so the next response on the same kept-alive connection is read correctly.
#[tokio::test]
async fn router_answer_to_head_has_no_body_and_the_connection_stays_in_step() {
    let b = ok_backend().await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    c.send("HEAD / HTTP/1.1\r\nHost: nosuch.example\r\n\r\n")
        .await;
    let r = c.response(true).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    c.send(get_req("/")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// An instance that answers each request with `reply`, but only once `release` is
/// notified: requests to it hold their slot until then.
async fn held_backend(reply: &'static [u8]) -> (SocketAddr, Arc<tokio::sync::Notify>) {
    let release = Arc::new(tokio::sync::Notify::new());
    let held = Arc::clone(&release);
    let b = raw_backend(move |mut s| {
        let held = Arc::clone(&held);
        async move {
            read_head(&mut s).await;
            held.notified().await;
            let _ = s.write_all(reply).await;
        }
    })
    .await;
    (b, release)
}

/// The test service's (in flight, queued) requests.
fn web_load(t: &TestRouter) -> (usize, usize) {
    let s = t
        .router
        .stats()
        .into_iter()
        .find(|s| s.name == "web")
        .unwrap();
    (s.in_flight, s.queued)
}

/// A client that gives up while its request waits (in the queue, or for the instance's
/// answer) gives its queue place and its instance slot back at once, not at a timeout.
#[tokio::test]
async fn a_client_that_leaves_frees_its_slot_and_queue_place() {
    let (b, release) = held_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let t = router_with(b, |r| {
        r.max_concurrency = 1;
        r.request_timeout = Duration::from_secs(60);
        r.queue_timeout = Duration::from_secs(60);
    })
    .await;
    let mut first = Client::connect(t.addr).await;
    first.send(get_req("/slow")).await;
    assert!(wait_for(Duration::from_secs(5), || web_load(&t) == (1, 0)).await);
    let mut second = Client::connect(t.addr).await;
    second.send(get_req("/queued")).await;
    assert!(wait_for(Duration::from_secs(5), || web_load(&t) == (1, 1)).await);
    drop(second);
    assert!(
        wait_for(Duration::from_secs(5), || web_load(&t) == (1, 0)).await,
        "queue place not given back: {:?}",
        web_load(&t)
    );
    drop(first);
    assert!(
        wait_for(Duration::from_secs(5), || web_load(&t) == (0, 0)).await,
        "slot not given back: {:?}",
        web_load(&t)
    );
    release.notify_waiters();
}

/// A client that pipelines two requests and then half-closes its side (`shutdown(WR)`,
/// as `nc -N` does) still gets both answers, as hyper gives them.
#[tokio::test]
async fn pipelined_requests_before_a_half_close_are_all_answered() {
    let b = ok_backend().await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    c.send(format!("{}{}", get_req("/a"), get_req("/b"))).await;
    c.s.shutdown().await.unwrap();
    for _ in 0..2 {
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// Broken chunked framing that arrives after the head and a good chunk were passed on:
/// the client gets the head once (never a second copy inside the body), and the
/// connection is cut without the last chunk, so the body cannot look complete.
#[tokio::test]
async fn chunked_framing_broken_later_is_cut_with_one_head() {
    let b = raw_backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await;
        sleep(Duration::from_millis(100)).await;
        let _ = s.write_all(b"zz\r\nnot a chunk\r\n").await;
        sleep(Duration::from_millis(500)).await;
    })
    .await;
    let t = router_to(b).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(get_req("/").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded by the deadline: read until the router ends the connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => panic!("the router kept the connection open: {}", preview(&got)),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text:?}");
    assert!(text.contains("hello"), "{text:?}");
    assert!(!text.contains("0\r\n\r\n"), "looks complete: {text:?}");
    assert!(!text.contains("not a chunk"), "{text:?}");
}

/// An instance that sends its response head one byte at a time (every possible split of
/// the blank line that ends it) is still understood, and the body follows.
#[tokio::test]
async fn response_head_dripped_byte_by_byte() {
    let b = raw_backend(|mut s| async move {
        read_head(&mut s).await;
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok";
        for byte in reply {
            if s.write_all(&[*byte]).await.is_err() {
                return;
            }
            sleep(Duration::from_millis(2)).await;
        }
        sleep(Duration::from_millis(200)).await;
    })
    .await;
    let t = router_to(b).await;
    let mut c = Client::connect(t.addr).await;
    c.send(get_req("/")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("x-a"), Some("b"));
}

/// A request queued on the fast path while its service switches to h2c is not sent to
/// the instance over HTTP/1.1: it gets 503 with Retry-After, and the slot it was given is
/// free again.
#[tokio::test]
async fn service_switched_to_h2c_while_queued_gets_503() {
    let (b, release) =
        held_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    let tune = |r: &mut ServiceRoute| {
        r.max_concurrency = 1;
        r.queue_timeout = Duration::from_secs(30);
    };
    let t = router_with(b, tune).await;
    let mut first = Client::connect(t.addr).await;
    first.send(get_req("/slow")).await;
    assert!(wait_for(Duration::from_secs(5), || web_load(&t) == (1, 0)).await);
    let mut second = Client::connect(t.addr).await;
    second.send(get_req("/queued")).await;
    assert!(wait_for(Duration::from_secs(5), || web_load(&t) == (1, 1)).await);

    let mut h2 = route("web", vec![instance("a", b)]);
    tune(&mut h2);
    h2.http2 = true;
    t.router.upsert_service(h2);
    release.notify_waiters();
    assert_eq!(first.response(false).await.status, 200);
    let r = second.response(false).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(wait_for(Duration::from_secs(5), || web_load(&t) == (0, 0)).await);
}
