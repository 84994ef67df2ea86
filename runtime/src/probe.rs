//! Health probes over TCP to a published port (what [`crate::DockerRuntime`] uses), App Runner's shape: a TCP connect, or an HTTP GET of a path that must
//! answer 2xx or 3xx, each within the check's timeout. A probe says how it failed, because
//! a failed deployment must explain itself.

use std::net::SocketAddr;
use std::time::Duration;

use slipway_core::{HealthCheck, HealthProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a health probe failed. Its text is what a failed deployment shows, so each variant
/// names the check (`TCP`, `HTTP GET /path`) the way [`describe`] does.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the check's timeout.
    #[error("{check} check timed out after {secs} s")]
    TimedOut {
        /// The check, as [`describe`] shows it.
        check: String,
        /// The check's timeout.
        secs: u32,
    },
    /// The connection could not be made.
    #[error("{check}: connect failed: {source}")]
    Connect {
        /// The check, as [`describe`] shows it.
        check: String,
        /// What the connect said.
        source: std::io::Error,
    },
    /// A TCP check whose connection was closed at once.
    #[error("TCP: the connection was closed at once (nothing listens on the app's port)")]
    ClosedAtOnce,
    /// Sending the request or reading the answer failed.
    #[error("{check}: {source}")]
    Io {
        /// The check, as [`describe`] shows it.
        check: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An HTTP answer outside 2xx and 3xx.
    #[error("{check} answered {code}")]
    Status {
        /// The check, as [`describe`] shows it.
        check: String,
        /// The status code.
        code: u16,
    },
    /// The answer was not HTTP.
    #[error("{check}: {reason}")]
    NotHttp {
        /// The check, as [`describe`] shows it.
        check: String,
        /// What was wrong with it.
        reason: NotHttp,
    },
}

/// What was wrong with an answer that is not an HTTP/1.x status line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotHttp {
    /// Nothing came back.
    #[error("the connection closed without an answer")]
    Empty,
    /// Something else came back; at most [`QUOTED_CHARS`] characters of it are kept.
    #[error("not an HTTP answer: {0:?}")]
    Other(String),
}

/// How long a TCP check's connection must stay up to pass, when a userland proxy may
/// accept for an app that does not listen (see [`tcp_probe`]).
pub const PROXY_HOLD: Duration = Duration::from_millis(15);

/// Probes `addr` once over the loopback network. A TCP check passes once connected, and
/// when `hold` is not zero, once the connection then stays up that long: with Docker's
/// userland proxy (an engine started without `--userland-proxy=false`), the published
/// port accepts even when nothing listens inside the container, then closes at once (well
/// under a millisecond here). Without the proxy, such a connect is refused outright, and
/// the hold is only a cost (see [`userland_proxy_off`]).
pub async fn tcp_probe(
    addr: SocketAddr,
    hc: &HealthCheck,
    hold: Duration,
) -> Result<(), ProbeError> {
    let timeout = Duration::from_secs(hc.timeout_s as u64);
    match tokio::time::timeout(timeout, probe_inner(addr, hc, hold)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::TimedOut {
            check: describe(hc),
            secs: hc.timeout_s,
        }),
    }
}

/// Whether the local engine publishes ports without its userland proxy, read from the
/// `dockerd` command line (`--userland-proxy=false`) or `daemon_json`'s
/// `"userland-proxy": false`. `cmdlines` are the command lines of the host's processes,
/// NUL-separated as in `/proc/PID/cmdline`. Unknown (another host's engine, no access)
/// counts as on: the hold is then kept, which is only slower.
pub fn userland_proxy_off<'a>(
    cmdlines: impl IntoIterator<Item = &'a [u8]>,
    daemon_json: Option<&str>,
) -> bool {
    let flag = |args: &[&[u8]]| -> Option<bool> {
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(v) = a.strip_prefix(b"--userland-proxy=") {
                return Some(v == b"false");
            }
            if *a == b"--userland-proxy" {
                return Some(it.next().is_some_and(|v| *v == b"false"));
            }
        }
        None
    };
    for c in cmdlines {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        let is_dockerd = args
            .first()
            .is_some_and(|a| a.rsplit(|b| *b == b'/').next() == Some(&b"dockerd"[..]));
        if !is_dockerd {
            continue;
        }
        if let Some(v) = flag(&args) {
            return v;
        }
        // dockerd without the flag: its daemon.json decides.
        return daemon_json
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|v| v.get("userland-proxy").and_then(|u| u.as_bool()))
            == Some(false);
    }
    false
}

/// How a check is shown to people: `TCP` or `HTTP GET <path>`.
pub fn describe(hc: &HealthCheck) -> String {
    match hc.protocol {
        HealthProtocol::Tcp => "TCP".to_string(),
        HealthProtocol::Http => format!("HTTP GET {}", hc.path),
    }
}

async fn probe_inner(addr: SocketAddr, hc: &HealthCheck, hold: Duration) -> Result<(), ProbeError> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect {
            check: describe(hc),
            source,
        })?;
    if hc.protocol == HealthProtocol::Tcp {
        if hold.is_zero() {
            return Ok(());
        }
        let mut b = [0u8; 1];
        return match tokio::time::timeout(hold, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(ProbeError::ClosedAtOnce),
            _ => Ok(()),
        };
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: slipway-health-check\r\nConnection: close\r\n\r\n",
        hc.path, addr
    );
    let io = |source| ProbeError::Io {
        check: describe(hc),
        source,
    };
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    match status_of(&buf) {
        Ok(c) if (200..400).contains(&c) => Ok(()),
        Ok(code) => Err(ProbeError::Status {
            check: describe(hc),
            code,
        }),
        Err(reason) => Err(ProbeError::NotHttp {
            check: describe(hc),
            reason,
        }),
    }
}

/// Characters of a reply that is not HTTP quoted in the reason.
pub const QUOTED_CHARS: usize = 80;

/// The status code of an HTTP/1.x status line at the front of `reply`: what an app
/// answered a health check. `reply` is whatever the app sent (any bytes at all); the
/// error says what was wrong with it, quoting at most [`QUOTED_CHARS`] characters.
pub fn status_of(reply: &[u8]) -> Result<u16, NotHttp> {
    if reply.is_empty() {
        return Err(NotHttp::Empty);
    }
    let line = reply.split(|b| *b == b'\n').next().unwrap_or_default();
    let code = line
        .strip_prefix(b"HTTP/1.")
        .and_then(|r| r.get(2..5))
        .filter(|c| c.iter().all(u8::is_ascii_digit))
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok());
    code.ok_or_else(|| {
        let text = String::from_utf8_lossy(line);
        let quoted: String = text
            .trim_end_matches('\r')
            .chars()
            .take(QUOTED_CHARS)
            .collect();
        NotHttp::Other(quoted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..10 {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_checks_status() {
        let mut hc = HealthCheck {
            protocol: HealthProtocol::Http,
            ..Default::default()
        };
        hc.path = "/healthz".into();
        let ok = server(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        assert!(tcp_probe(ok, &hc, PROXY_HOLD).await.is_ok());
        let bad = server(b"HTTP/1.1 500 Internal Server Error\r\n\r\n").await;
        let e = tcp_probe(bad, &hc, PROXY_HOLD)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP GET /healthz answered 500"), "{e}");
    }

    /// An app whose reply is not HTTP and has a multi-byte character across byte 80 (the
    /// reason quotes a prefix of it) must fail its check, not panic the worker.
    #[tokio::test]
    async fn a_reply_that_is_not_http_fails_the_check_without_panicking() {
        let hc = HealthCheck {
            protocol: HealthProtocol::Http,
            ..Default::default()
        };
        let mut reply = "x".repeat(79);
        reply.push_str("ééé garbage\n");
        let addr = server(Box::leak(reply.into_bytes().into_boxed_slice())).await;
        let e = tcp_probe(addr, &hc, PROXY_HOLD)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an HTTP answer"), "{e}");
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 204 No Content\r\n"), Ok(204));
        assert_eq!(status_of(b"HTTP/1.0 302 Found\n"), Ok(302));
        assert!(status_of(b"")
            .unwrap_err()
            .to_string()
            .contains("without an answer"));
        assert!(status_of(b"HTTP/1.1 2x4 Nope\r\n").is_err());
        assert!(status_of(b"HTTP/1.1 +20 Nope\r\n").is_err());
        assert!(status_of(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    proptest::proptest! {
        /// Any bytes at all: an answer or a reason, never a panic, and the reason quotes
        /// a bounded prefix.
        #[test]
        fn status_of_any_bytes(reply in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            match status_of(&reply) {
                Ok(c) => proptest::prop_assert!(c < 1000),
                Err(e) => proptest::prop_assert!(e.to_string().chars().count() < QUOTED_CHARS * 10 + 40),
            }
        }
    }

    #[tokio::test]
    async fn tcp_and_refused() {
        let hc = HealthCheck::default();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(s);
        });
        assert!(tcp_probe(addr, &hc, PROXY_HOLD).await.is_ok());
        hold.await.unwrap();
        let e = tcp_probe(addr, &hc, PROXY_HOLD)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("connect failed"), "{e}");
    }

    /// With a hold, a port that accepts and closes at once (what the userland proxy does
    /// when nothing listens) fails; without one it passes at connect, which is right only
    /// when no proxy stands in front of the app.
    #[tokio::test]
    async fn the_hold_catches_an_accept_and_close() {
        let hc = HealthCheck::default();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let closer = tokio::spawn(async move {
            for _ in 0..2 {
                let (s, _) = l.accept().await.unwrap();
                drop(s);
            }
        });
        let e = tcp_probe(addr, &hc, PROXY_HOLD).await.unwrap_err();
        assert!(matches!(e, ProbeError::ClosedAtOnce), "{e}");
        let started = std::time::Instant::now();
        assert!(tcp_probe(addr, &hc, Duration::ZERO).await.is_ok());
        assert!(started.elapsed() < PROXY_HOLD, "no hold without a proxy");
        closer.await.unwrap();
    }

    #[test]
    fn the_engines_userland_proxy_setting() {
        let on = |c: &[&str], j: Option<&str>| {
            let cmd: Vec<Vec<u8>> = c
                .iter()
                .map(|s| s.replace(' ', "\0").into_bytes())
                .collect();
            userland_proxy_off(cmd.iter().map(Vec::as_slice), j)
        };
        assert!(on(
            &["/usr/sbin/dockerd --userland-proxy=false -H unix://"],
            None
        ));
        assert!(on(&["bash", "dockerd --userland-proxy false"], None));
        assert!(!on(&["/usr/sbin/dockerd --userland-proxy=true"], None));
        assert!(!on(&["/usr/sbin/dockerd -H fd://"], None));
        assert!(on(
            &["/usr/sbin/dockerd -H fd://"],
            Some(r#"{"userland-proxy": false}"#)
        ));
        assert!(!on(&["/usr/sbin/dockerd -H fd://"], Some("not json")));
        // The flag wins over daemon.json; no dockerd here means unknown: on.
        assert!(!on(
            &["/usr/sbin/dockerd --userland-proxy=true"],
            Some(r#"{"userland-proxy": false}"#)
        ));
        assert!(!on(
            &["/usr/bin/containerd"],
            Some(r#"{"userland-proxy": false}"#)
        ));
        assert!(!on(&["/usr/bin/notdockerd --userland-proxy=false"], None));
    }
}
