//! What the router refuses from hostile clients before any app sees it, on both request
//! paths (`scripts/test.sh` runs this suite again with `SLIPWAY_ROUTER_PATH=hyper`):
//! ambiguous `Transfer-Encoding`, lookalike framing fields, heads over the limit, `Host`
//! with userinfo, and an absolute-form target beside another `Host`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use slipway_router::RouterConfig;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "web.slipway.localhost";

/// Each request head the app received: its fields as (lower-case name, value).
type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

async fn recording(underscores: bool) -> (TestRouter, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let b = backend(move |req| {
        let s = s.clone();
        async move {
            let fields = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            s.lock().unwrap().push(fields);
            Response::new(full("ok"))
        }
    })
    .await;
    let t = start_router(RouterConfig::default()).await;
    let mut r = route("web", vec![instance("a", b)]);
    r.underscores_in_headers = underscores;
    t.router.upsert_service(r);
    t.router
        .upsert_service(route("other", vec![instance("b", b)]));
    (t, seen)
}

/// Writes `bytes`, reads until the router closes (or 5 s pass). Returns what came back
/// and whether the connection was closed by the router.
async fn exchange(router: std::net::SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(router).await.unwrap();
    // The router may answer and close before all of a large request is written.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await,
        Ok(Ok(_)) | Ok(Err(_))
    );
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn statuses(reply: &str) -> Vec<&str> {
    reply
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &reply[i + 9..(i + 12).min(reply.len())])
        .collect()
}

/// A follow-up request pipelined after the bad one: it must never be answered, since
/// the connection closes after a request whose framing cannot be trusted.
const NEXT: &str = "GET /second HTTP/1.1\r\nHost: web.slipway.localhost\r\n\r\n";

#[tokio::test]
async fn transfer_encoding_other_than_one_chunked_is_refused_and_closes() {
    let (t, seen) = recording(false).await;
    let cases: [(&str, &str); 5] = [
        ("Transfer-Encoding: cow, chunked\r\n", "501"),
        // chunked not last: the length cannot be known (RFC 9112 §6.3), 400 from hyper.
        ("Transfer-Encoding: gzip\r\n", "400"),
        ("Transfer-Encoding: chunked, chunked\r\n", "400"),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "400",
        ),
        ("Transfer-Encoding: ,chunked\r\n", "400"),
    ];
    for (fields, want) in cases {
        let req = format!(
            "POST /first HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n5\r\nhello\r\n0\r\n\r\n{NEXT}"
        );
        let (reply, closed) = exchange(t.addr, req.as_bytes()).await;
        let got = statuses(&reply);
        assert!(
            got.first().is_some_and(|s| s.starts_with(&want[..1])),
            "{fields:?}: want {want}, got {reply:?}"
        );
        assert_eq!(got.len(), 1, "{fields:?}: a second answer: {reply:?}");
        assert!(closed, "{fields:?}: the connection stayed open");
    }
    assert!(seen.lock().unwrap().is_empty(), "the app saw a request");
    // One chunked coding is fine and is forwarded.
    let req = format!("POST /ok HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let (reply, _) = exchange(t.addr, req.as_bytes()).await;
    assert_eq!(statuses(&reply), vec!["200"], "{reply}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Transfer-Encoding beside Content-Length: the body is framed by the coding, the app
    // never sees the length, and the connection closes after the answer (RFC 9112 §6.3).
    let req = format!("POST /both HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n{NEXT}");
    let (reply, closed) = exchange(t.addr, req.as_bytes()).await;
    assert_eq!(statuses(&reply), vec!["200"], "{reply}");
    assert!(closed);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "the pipelined request after it was served");
    assert!(
        !seen[1].iter().any(|(k, _)| k == "content-length"),
        "{:?}",
        seen[1]
    );
}

#[tokio::test]
async fn header_fields_with_underscores_are_dropped_unless_allowed() {
    let (t, seen) = recording(false).await;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nTransfer_Encoding: chunked\r\nContent_Length: 5\r\nX_Secret: a\r\nX-Fine: b\r\nConnection: close\r\n\r\n"
    );
    let (reply, _) = exchange(t.addr, req.as_bytes()).await;
    assert_eq!(statuses(&reply), vec!["200"], "{reply}");
    {
        let seen = seen.lock().unwrap();
        let names: Vec<&str> = seen[0].iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"x-fine"), "{names:?}");
        assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
    }
    // A service that allows them gets them.
    let (t, seen) = recording(true).await;
    let (reply, _) = exchange(t.addr, req.as_bytes()).await;
    assert_eq!(statuses(&reply), vec!["200"], "{reply}");
    let seen = seen.lock().unwrap();
    let names: Vec<&str> = seen[0].iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"x_secret"), "{names:?}");
}

#[tokio::test]
async fn heads_over_the_limit_get_431_whatever_their_shape() {
    let (t, seen) = recording(false).await;
    let limit = RouterConfig::default().max_header_bytes;
    // One field of 100 KiB, one of 70 KiB (just over), and many small ones over the limit.
    let one = |n: usize| format!("X-Big: {}\r\n", "a".repeat(n));
    let many = (0..90)
        .map(|i| format!("X-F{i}: {}\r\n", "b".repeat(800)))
        .collect::<String>();
    for (what, fields) in [
        ("100 KiB field", one(100 * 1024)),
        ("70 KiB field", one(70 * 1024)),
        ("90 fields of 800 bytes", many),
    ] {
        assert!(fields.len() > limit);
        let req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n");
        let (reply, closed) = exchange(t.addr, req.as_bytes()).await;
        assert_eq!(statuses(&reply), vec!["431"], "{what}: {reply:.200}");
        assert!(closed, "{what}: the connection stayed open");
    }
    assert!(seen.lock().unwrap().is_empty(), "the app saw a request");
    // Just under the limit passes.
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n{}\r\n",
        one(limit - 200)
    );
    let (reply, _) = exchange(t.addr, req.as_bytes()).await;
    assert_eq!(statuses(&reply), vec!["200"], "{reply:.200}");
}

#[tokio::test]
async fn host_with_userinfo_is_400() {
    let (t, seen) = recording(false).await;
    for host in [
        "evil@web.slipway.localhost",
        "user:pw@web.slipway.localhost:8080",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (reply, _) = exchange(t.addr, req.as_bytes()).await;
        assert_eq!(statuses(&reply), vec!["400"], "{host}: {reply}");
    }
    assert!(seen.lock().unwrap().is_empty(), "the app saw a request");
}

#[tokio::test]
async fn absolute_form_target_replaces_host() {
    let (t, seen) = recording(false).await;
    let req = "GET http://web.slipway.localhost/x HTTP/1.1\r\nHost: other.slipway.localhost\r\nConnection: close\r\n\r\n";
    let (reply, _) = exchange(t.addr, req.as_bytes()).await;
    assert_eq!(statuses(&reply), vec!["200"], "{reply}");
    let seen = seen.lock().unwrap();
    let hosts: Vec<&str> = seen[0]
        .iter()
        .filter(|(k, _)| k == "host")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(hosts, vec![HOST]);
    let fwd: Vec<&str> = seen[0]
        .iter()
        .filter(|(k, _)| k == "x-forwarded-host")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(fwd, vec![HOST]);
}
