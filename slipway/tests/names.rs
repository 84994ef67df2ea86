//! Names end to end: Slipway's DNS server asked with `dig` from the host, and custom
//! domains verified through a test upstream zone on loopback.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{CNAME, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use serde_json::json;
use support::*;

const ZONE: &str = "slipway.localhost";

/// `dig` at the platform's DNS server; returns its whole output.
fn dig(p: &Platform, args: &[&str]) -> String {
    let out = std::process::Command::new("dig")
        .arg("@127.0.0.1")
        .args(["-p", &p.dns_port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig (Debian's dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn short(p: &Platform, name: &str, kind: &str) -> Vec<String> {
    dig(p, &["+short", name, kind])
        .lines()
        .map(str::to_string)
        .collect()
}

fn status(out: &str) -> String {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
        .to_string()
}

/// Every record kind the server answers, as `dig` from the host sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_every_record_the_zone_serves() {
    let p = Platform::start_with_env(&[("SLIPWAY_PUBLIC_IPS", "127.0.0.1,::1")]).await;
    p.create(json!({"name": "web", "source": {"type": "image", "image": "busybox:latest"}}))
        .await;
    let apex = dig(&p, &[ZONE, "SOA"]);
    assert_eq!(status(&apex), "NOERROR", "{apex}");
    assert!(apex.contains(" aa"), "authoritative: {apex}");
    assert!(
        apex.contains(&format!("ns.{ZONE}. hostmaster.{ZONE}.")),
        "{apex}"
    );
    assert_eq!(short(&p, ZONE, "NS"), [format!("ns.{ZONE}.")]);
    assert_eq!(short(&p, &format!("ns.{ZONE}"), "A"), ["127.0.0.1"]);
    assert_eq!(short(&p, &format!("web.{ZONE}"), "A"), ["127.0.0.1"]);
    assert_eq!(short(&p, &format!("WEB.{ZONE}."), "A"), ["127.0.0.1"]);
    assert_eq!(short(&p, &format!("a.web.{ZONE}"), "A"), ["127.0.0.1"]);
    assert_eq!(short(&p, &format!("web.{ZONE}"), "AAAA"), ["::1"]);
    assert_eq!(
        status(&dig(&p, &[&format!("a.b.web.{ZONE}"), "A"])),
        "NXDOMAIN",
        "one label below a service, as the router routes"
    );
    assert_eq!(
        status(&dig(&p, &["-c", "CH", &format!("web.{ZONE}"), "A"])),
        "REFUSED"
    );
    assert_eq!(
        status(&dig(&p, &[&format!("_tcp.web.{ZONE}"), "A"])),
        "NOERROR",
        "an empty non-terminal"
    );
    assert_eq!(short(&p, &format!("console.{ZONE}"), "A"), ["127.0.0.1"]);
    assert_eq!(
        short(&p, &format!("_http._tcp.web.{ZONE}"), "SRV"),
        [format!("0 0 {} web.{ZONE}.", p.router_port)]
    );
    assert_eq!(
        short(&p, &format!("_https._tcp.web.{ZONE}"), "SRV"),
        [format!("0 0 {} web.{ZONE}.", p.https_port)]
    );
    let gone = dig(&p, &[&format!("nothing.{ZONE}"), "A"]);
    assert_eq!(status(&gone), "NXDOMAIN", "{gone}");
    assert!(gone.contains("SOA"), "the SOA comes with NXDOMAIN: {gone}");
    let elsewhere = dig(&p, &["example.net", "A"]);
    assert_eq!(status(&elsewhere), "REFUSED", "{elsewhere}");
    // Over TCP too.
    assert_eq!(
        dig(&p, &["+tcp", "+short", &format!("web.{ZONE}"), "A"]).trim(),
        "127.0.0.1"
    );
    // Answers follow the store live: a new service at once, a deleted one no more.
    assert_eq!(
        status(&dig(&p, &[&format!("api2.{ZONE}"), "A"])),
        "NXDOMAIN"
    );
    p.create(json!({"name": "api2", "source": {"type": "image", "image": "busybox:latest"}}))
        .await;
    assert_eq!(short(&p, &format!("api2.{ZONE}"), "A"), ["127.0.0.1"]);
    let (s, _) = p.call("DELETE", "/v1/services/api2", None, None).await;
    assert_eq!(s, 204);
    assert_eq!(
        status(&dig(&p, &[&format!("api2.{ZONE}"), "A"])),
        "NXDOMAIN"
    );
}

/// A query with QR=1 (a response) gets no reply; garbage gets FORMERR or nothing; the
/// server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packets_get_no_answer_or_formerr() {
    let p = Platform::start().await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let server = format!("127.0.0.1:{}", p.dns_port);
    // id 0x1234, flags: QR=1, one question `slipway.localhost. SOA IN`.
    let mut q = vec![0x12, 0x34, 0x80, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ZONE.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 6, 0, 1]);
    sock.send_to(&q, &server).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a QR=1 packet was answered"
    );
    // The same with QR=0 is answered.
    q[2] = 0x01;
    sock.send_to(&q, &server).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("a query is answered");
    assert!(n > 12 && buf[0] == 0x12 && buf[1] == 0x34 && buf[2] & 0x80 != 0);
    // A header that promises a question the packet does not hold.
    let bad = [0x55, 0x66, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'x'];
    sock.send_to(&bad, &server).unwrap();
    if let Ok((n, _)) = sock.recv_from(&mut buf) {
        assert!(
            n >= 12 && buf[3] & 0x0f == 1,
            "malformed: not FORMERR: {:?}",
            &buf[..n]
        );
    }
    sock.send_to(&[0xff; 5], &server).unwrap();
    let _ = sock.recv_from(&mut buf);
    assert_eq!(
        short(&p, ZONE, "NS"),
        [format!("ns.{ZONE}.")],
        "still serving"
    );
}

/// An answer larger than 1232 bytes: truncated (TC) within 1232 over UDP with EDNS,
/// within 512 without, and whole over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_are_truncated_over_udp() {
    let ips: Vec<String> = (1..=120).map(|i| format!("127.0.1.{i}")).collect();
    let p = Platform::start_with_env(&[("SLIPWAY_PUBLIC_IPS", &ips.join(","))]).await;
    p.create(json!({"name": "web", "source": {"type": "image", "image": "busybox:latest"}}))
        .await;
    let name = format!("web.{ZONE}");
    let size = |out: &str| -> usize {
        out.split("MSG SIZE  rcvd: ")
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let edns = dig(&p, &["+ignore", "+bufsize=4096", &name, "A"]);
    assert!(edns.contains(" tc"), "TC set: {edns}");
    let n = size(&edns);
    assert!(n > 512 && n <= 1232, "{n} bytes with EDNS: {edns}");
    let plain = dig(&p, &["+ignore", "+noedns", &name, "A"]);
    assert!(plain.contains(" tc"), "{plain}");
    assert!(size(&plain) <= 512, "{plain}");
    let tcp = dig(&p, &["+tcp", "+short", &name, "A"]);
    assert_eq!(tcp.lines().count(), 120, "{tcp}");
}

/// A test upstream: answers from a map that the test edits, authoritative for anything.
type Records = HashMap<(String, RecordType), Vec<Record>>;

#[derive(Clone, Default)]
struct Upstream {
    records: Arc<Mutex<Records>>,
}

impl Upstream {
    fn set(&self, name: &str, kind: RecordType, data: Option<RData>) {
        let key = (name.to_ascii_lowercase(), kind);
        let mut m = self.records.lock().unwrap();
        match data {
            Some(d) => {
                let n = Name::from_ascii(format!("{name}.")).unwrap();
                m.insert(key, vec![Record::from_rdata(n, 1, d)]);
            }
            None => {
                m.remove(&key);
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Upstream {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let q = &request.queries.queries()[0];
        let name = Name::from(q.name().clone())
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let answers = self
            .records
            .lock()
            .unwrap()
            .get(&(name, q.query_type()))
            .cloned()
            .unwrap_or_default();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        meta.response_code = ResponseCode::NoError;
        let msg = MessageResponseBuilder::from_message_request(request).build(
            meta,
            answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        response.send_response(msg).await.unwrap_or_else(|_| {
            ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            })
        })
    }
}

async fn upstream() -> (Upstream, SocketAddr, hickory_server::Server<Upstream>) {
    let up = Upstream::default();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mut server = hickory_server::Server::new(up.clone());
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    (up, addr, server)
}

async fn domain_state(p: &Platform, service: &str, domain: &str) -> (String, String) {
    let list = p.get_json(&format!("/v1/services/{service}/domains")).await;
    let d = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain"] == domain)
        .cloned()
        .unwrap_or_default();
    (
        d["state"].as_str().unwrap_or("absent").to_string(),
        d["reason"].as_str().unwrap_or_default().to_string(),
    )
}

async fn wait_state(p: &Platform, service: &str, domain: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = (String::new(), String::new());
    while std::time::Instant::now() < deadline {
        last = domain_state(p, service, domain).await;
        if last.0 == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{domain} never became {want}; last {last:?}");
}

/// A custom domain: pending with only its CNAME, active once the token's TXT record
/// exists upstream (and only then served by the router), failed when the token goes;
/// another service's claim is refused; removal stops serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_goes_active_once_its_records_verify() {
    let (up, addr, _server) = upstream().await;
    let p = Platform::start_with_env(&[
        ("SLIPWAY_DNS_UPSTREAMS", &addr.to_string()),
        ("SLIPWAY_DOMAIN_CHECK_S", "1"),
    ])
    .await;
    let tag = format!("slipway-test-domain:{}", p.platform_id);
    build_site_image(&p, &tag, "served by domain");
    p.create(
        json!({"name": "web", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "image", "image": tag}, "health_check": {"interval_s": 1}}),
    )
    .await;
    p.create(json!({"name": "shop", "source": {"type": "image", "image": "busybox:latest"}}))
        .await;
    p.wait_content("web", "served by domain", Duration::from_secs(60))
        .await;

    let out = p.cli(&["domains", "add", "web", "www.example.test"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("CNAME  www.example.test") && text.contains(&format!("web.{ZONE}")),
        "{text}"
    );
    let listed = p.get_json("/v1/services/web/domains").await;
    let records = listed[0]["records"].as_array().unwrap().clone();
    let txt = records.iter().find(|r| r["type"] == "TXT").unwrap();
    assert_eq!(txt["name"], "_slipway-challenge.www.example.test");
    let token = txt["value"].as_str().unwrap().to_string();
    assert!(
        token.starts_with("slipway-verify=") && token.len() > 30,
        "{token}"
    );

    // Only the CNAME: pending, and not served.
    up.set(
        "www.example.test",
        RecordType::CNAME,
        Some(RData::CNAME(CNAME(
            Name::from_ascii(format!("web.{ZONE}.")).unwrap(),
        ))),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (state, reason) = domain_state(&p, "web", "www.example.test").await;
    assert_eq!(state, "pending", "{reason}");
    assert!(reason.contains("no TXT record"), "{reason}");
    let host = |h: &'static str| get_host_via(&p.http, p.router_port, h, "/");
    assert_eq!(host("www.example.test").await.unwrap().0, 404);

    // The token too: active, and the router serves it.
    up.set(
        "_slipway-challenge.www.example.test",
        RecordType::TXT,
        Some(RData::TXT(TXT::new(vec![token.clone()]))),
    );
    wait_state(&p, "web", "www.example.test", "active").await;
    let (s, body) = host("www.example.test").await.unwrap();
    assert_eq!(
        (s, body.contains("served by domain")),
        (200, true),
        "{body}"
    );
    assert!(p
        .activity("web")
        .await
        .contains("domain www.example.test is active"));

    // Another service cannot take it.
    let (s, v) = p
        .call(
            "POST",
            "/v1/services/shop/domains",
            Some(&json!({"domain": "www.example.test"}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("claimed by service web"), "{v}");
    // Bad names are refused with a reason.
    let (s, v) = p
        .call(
            "POST",
            "/v1/services/web/domains",
            Some(&json!({"domain": "not a domain"}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // Re-verification: the token removed upstream fails the domain, and it stops serving.
    up.set("_slipway-challenge.www.example.test", RecordType::TXT, None);
    wait_state(&p, "web", "www.example.test", "failed").await;
    assert_eq!(host("www.example.test").await.unwrap().0, 404);
    up.set(
        "_slipway-challenge.www.example.test",
        RecordType::TXT,
        Some(RData::TXT(TXT::new(vec![token]))),
    );
    wait_state(&p, "web", "www.example.test", "active").await;
    assert_eq!(host("www.example.test").await.unwrap().0, 200);

    // An apex delegated to Slipway's DNS server: the NS records are the proof, and once
    // active the server answers the domain itself.
    let (s, v) = p
        .call(
            "POST",
            "/v1/services/web/domains",
            Some(&json!({"domain": "delegated.test"}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        v["records"].to_string().contains(&format!("ns.{ZONE}")),
        "{v}"
    );
    // Claimed: this server answers for it (so the delegation can be checked), but gives
    // no address until it is active.
    assert!(
        short(&p, "delegated.test", "A").is_empty(),
        "served before it is active"
    );
    assert_eq!(short(&p, "delegated.test", "NS"), [format!("ns.{ZONE}.")]);
    up.set(
        "delegated.test",
        RecordType::NS,
        Some(RData::NS(hickory_server::proto::rr::rdata::NS(
            Name::from_ascii(format!("ns.{ZONE}.")).unwrap(),
        ))),
    );
    wait_state(&p, "web", "delegated.test", "active").await;
    assert_eq!(short(&p, "delegated.test", "A"), ["127.0.0.1"]);
    assert_eq!(host("delegated.test").await.unwrap().0, 200);

    let out = p.cli(&["domains", "remove", "web", "www.example.test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(host("www.example.test").await.unwrap().0, 404);
    let (state, _) = domain_state(&p, "web", "www.example.test").await;
    assert_eq!(state, "absent");
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
}

/// Debian's `pebble` on loopback: its API on HTTPS with a certificate from a test CA
/// made here, HTTP-01 validated against the router's HTTP port, names resolved through
/// Slipway's own DNS server, short-lived certificates, and nonce rejection on.
struct Pebble {
    child: std::process::Child,
    dir: std::path::PathBuf,
    mgmt: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pebble {
    /// Its root, which issued certificates chain to (fetched from the management API).
    fn root(&self) -> std::path::PathBuf {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(self.dir.join("ca.pem"))
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt))
            .output()
            .unwrap();
        assert!(out.status.success(), "pebble's root");
        let path = self.dir.join("pebble-root.pem");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }
}

fn pebble_dir() -> (std::path::PathBuf, u16) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("slipway-pebble-{port}-{}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    make_test_ca(&dir, "pebble", "DNS:localhost,IP:127.0.0.1");
    (dir, port)
}

fn pebble(
    dir: std::path::PathBuf,
    port: u16,
    http_port: u16,
    dns_port: u16,
    validity_s: u64,
) -> Pebble {
    let mgmt = free_port();
    let config = dir.join("pebble.json");
    std::fs::write(
        &config,
        json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_s,
        }})
        .to_string(),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let child = std::process::Command::new("pebble")
        .arg("-config")
        .arg(&config)
        .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        // Nonce rejection on: a tenth of good nonces are refused as bad.
        .env("PEBBLE_WFE_NONCEREJECT", "10")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("pebble (Debian's pebble package)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Pebble { child, dir, mgmt }
}

/// `curl` over HTTPS to the router with `--resolve`, trusting only `root`; returns the
/// HTTP version and body.
fn curl_https(p: &Platform, host: &str, root: &std::path::Path, version: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", version, "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", p.https_port)])
        .args(["-w", "\n%{http_version}"])
        .arg(format!("https://{host}:{}/", p.https_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {host}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, v) = text.rsplit_once('\n').unwrap_or(("", ""));
    (v.to_string(), body.to_string())
}

async fn certificate(p: &Platform, domain: &str) -> String {
    let list = p.get_json("/v1/services/web/domains").await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain"] == domain)
        .map(|d| d["certificate"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

async fn wait_activity_count(p: &Platform, needle: &str, n: usize, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if p.activity("web").await.matches(needle).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "never {n} x {needle:?}; activity: {}\nlog: {}",
        p.activity("web").await,
        tail(&p.log(), 30)
    );
}

/// Certificates from pebble: HTTP-01 through the router for `www.example.test`, DNS-01
/// through Slipway's own DNS for `*.apps.example.test`; served by SNI over HTTP/2 and
/// HTTP/1.1, self-signed before; renewed as they near expiry; removed with the domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_come_from_an_acme_ca_and_renew() {
    let (up, addr, _server) = upstream().await;
    let (dir, acme_port) = pebble_dir();
    let ca = dir.join("ca.pem");
    let p = Platform::start_with_env(&[
        ("SLIPWAY_DNS_UPSTREAMS", &addr.to_string()),
        ("SLIPWAY_DOMAIN_CHECK_S", "1"),
        (
            "SLIPWAY_ACME_DIRECTORY",
            &format!("https://127.0.0.1:{acme_port}/dir"),
        ),
        ("SLIPWAY_ACME_CA_FILE", ca.to_str().unwrap()),
        ("SLIPWAY_ACME_CHECK_S", "2"),
        ("SLIPWAY_ACME_RETRY_S", "2"),
        ("SLIPWAY_ACME_ZONE", "true"),
    ])
    .await;
    let peb = pebble(dir, acme_port, p.router_port, p.dns_port, 30);
    let tag = format!("slipway-test-acme:{}", p.platform_id);
    build_site_image(&p, &tag, "served over https");
    p.create(
        json!({"name": "web", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "image", "image": tag}, "health_check": {"interval_s": 1},
        "network": {"hsts_max_age_s": 300}}),
    )
    .await;
    p.wait_content("web", "served over https", Duration::from_secs(60))
        .await;

    // HTTPS answers at once with a self-signed certificate, which pebble's root does
    // not vouch for.
    let selfsigned = std::process::Command::new("curl")
        .args([
            "-skS",
            "--resolve",
            &format!("web.{ZONE}:{}:127.0.0.1", p.https_port),
        ])
        .arg(format!("https://web.{ZONE}:{}/", p.https_port))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&selfsigned.stdout).contains("served over https"));

    for (domain, token_at, pointer) in [
        (
            "www.example.test",
            "_slipway-challenge.www.example.test",
            "www.example.test",
        ),
        (
            "*.apps.example.test",
            "_slipway-challenge.apps.example.test",
            "*.apps.example.test",
        ),
    ] {
        let (s, v) = p
            .call(
                "POST",
                "/v1/services/web/domains",
                Some(&json!({"domain": domain}).to_string()),
                None,
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let token = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "TXT")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
        if domain.starts_with('*') {
            let acme = v["records"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "_acme-challenge.apps.example.test");
            assert_eq!(
                acme.map(|r| r["value"].clone()),
                Some(json!(format!("apps.example.test._acme.{ZONE}"))),
                "{v}"
            );
        }
        up.set(
            pointer,
            RecordType::CNAME,
            Some(RData::CNAME(CNAME(
                Name::from_ascii(format!("web.{ZONE}.")).unwrap(),
            ))),
        );
        up.set(
            token_at,
            RecordType::TXT,
            Some(RData::TXT(TXT::new(vec![token]))),
        );
    }

    // DNS-01's answer is a TXT record Slipway's own server publishes while the order is
    // open: watch for it with dig meanwhile (bounded).
    let dns_port = p.dns_port;
    let watcher = std::thread::spawn(move || {
        for _ in 0..1200 {
            let out = std::process::Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &dns_port.to_string(),
                    "+short",
                    "+time=1",
                    "+tries=1",
                ])
                .args([&format!("apps.example.test._acme.{ZONE}"), "TXT"])
                .output()
                .unwrap();
            let txt = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !txt.is_empty() {
                return Some(txt);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    });

    wait_activity_count(
        &p,
        "certificate for www.example.test issued",
        1,
        Duration::from_secs(90),
    )
    .await;
    wait_activity_count(
        &p,
        "certificate for *.apps.example.test issued",
        1,
        Duration::from_secs(90),
    )
    .await;
    let txt = watcher.join().unwrap();
    assert!(
        txt.is_some_and(|t| t.len() > 20),
        "the DNS-01 TXT record was never served"
    );

    let root = peb.root();
    for version in ["--http2", "--http1.1"] {
        let (v, body) = curl_https(&p, "www.example.test", &root, version);
        assert!(body.contains("served over https"), "{body}");
        assert_eq!(v, if version == "--http2" { "2" } else { "1.1" });
        let (_, body) = curl_https(&p, "x.apps.example.test", &root, version);
        assert!(body.contains("served over https"), "{body}");
    }
    assert!(certificate(&p, "www.example.test")
        .await
        .starts_with("issued by ACME; expires"));
    // The zone's own names: `*.<zone>` by DNS-01 at `_acme-challenge.<zone>`, answered by
    // Slipway's DNS server, serves `web.<zone>` with a certificate pebble vouches for.
    wait_for(
        "the zone's certificate",
        Duration::from_secs(90),
        || async {
            p.get_json("/v1/platform").await["zone_certificate"]
                .as_str()
                .is_some_and(|s| s.starts_with("issued by ACME; expires"))
        },
    )
    .await;
    for version in ["--http2", "--http1.1"] {
        let (_, body) = curl_https(&p, &format!("web.{ZONE}"), &root, version);
        assert!(body.contains("served over https"), "{body}");
    }
    // HSTS on HTTPS answers.
    let head = std::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&root)
        .args([
            "--resolve",
            &format!("www.example.test:{}:127.0.0.1", p.https_port),
        ])
        .arg(format!("https://www.example.test:{}/", p.https_port))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(
        head.contains("strict-transport-security: max-age=300"),
        "{head}"
    );

    // 30 s certificates are renewed with a third of their life left.
    wait_activity_count(
        &p,
        "certificate for www.example.test renewed",
        1,
        Duration::from_secs(60),
    )
    .await;
    let files = p.dir.join("data/certs");
    for f in std::fs::read_dir(&files).unwrap() {
        let meta = f.unwrap().metadata().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    // The key is in no API answer or log.
    let key = std::fs::read_to_string(files.join("www.example.test.key")).unwrap();
    let line = key.lines().nth(1).unwrap().to_string();
    let listed = p.get_json("/v1/services/web/domains").await.to_string();
    assert!(
        !listed.contains(&line)
            && !p.log().contains(&line)
            && !p.activity("web").await.contains(&line)
    );

    // Removal deletes the certificate and key and stops serving the name.
    let out = p.cli(&["domains", "remove", "web", "www.example.test"]);
    assert!(out.status.success());
    assert!(!files.join("www.example.test.key").exists());
    assert!(!files.join("www.example.test.crt").exists());
    let (s, _) = get_host_via(&p.http, p.router_port, "www.example.test", "/")
        .await
        .unwrap();
    assert_eq!(s, 404);
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
}

/// A service that asks for it sends plain-HTTP requests to HTTPS with a 308 (the path and
/// query kept); others are served on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirects_when_the_service_asks() {
    let p = Platform::start().await;
    let tag = format!("slipway-test-redirect:{}", p.platform_id);
    build_site_image(&p, &tag, "redirect test");
    p.create(
        json!({"name": "web", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "image", "image": tag}, "health_check": {"interval_s": 1},
        "network": {"https_redirect": true}}),
    )
    .await;
    p.create(
        json!({"name": "plain", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "image", "image": tag}, "health_check": {"interval_s": 1}}),
    )
    .await;
    p.wait_content("plain", "redirect test", Duration::from_secs(60))
        .await;
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
        ])
        .arg(format!("Host: web.{ZONE}:{}", p.router_port))
        .arg(format!("http://127.0.0.1:{}/a/b?c=d", p.router_port))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("308 https://web.{ZONE}:{}/a/b?c=d", p.https_port)
    );
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "--resolve",
            &format!("web.{ZONE}:{}:127.0.0.1", p.https_port),
        ])
        .arg(format!("https://web.{ZONE}:{}/", p.https_port))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(body.contains("redirect test"), "{body}");
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
}

/// An issuance that fails (here: no CA answers) is shown on the domain and retried with
/// a doubling delay, while a self-signed certificate serves the domain over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_issuance_is_retried_with_backoff_and_shown() {
    let (up, addr, _server) = upstream().await;
    let closed = free_port();
    let p = Platform::start_with_env(&[
        ("SLIPWAY_DNS_UPSTREAMS", &addr.to_string()),
        ("SLIPWAY_DOMAIN_CHECK_S", "1"),
        (
            "SLIPWAY_ACME_DIRECTORY",
            &format!("https://127.0.0.1:{closed}/dir"),
        ),
        ("SLIPWAY_ACME_CHECK_S", "1"),
        ("SLIPWAY_ACME_RETRY_S", "1"),
    ])
    .await;
    let tag = format!("slipway-test-acme-fail:{}", p.platform_id);
    build_site_image(&p, &tag, "self-signed meanwhile");
    p.create(
        json!({"name": "web", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "image", "image": tag}, "health_check": {"interval_s": 1}}),
    )
    .await;
    let (s, v) = p
        .call(
            "POST",
            "/v1/services/web/domains",
            Some(&json!({"domain": "www.example.test"}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let token = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    up.set(
        "www.example.test",
        RecordType::CNAME,
        Some(RData::CNAME(CNAME(
            Name::from_ascii(format!("web.{ZONE}.")).unwrap(),
        ))),
    );
    up.set(
        "_slipway-challenge.www.example.test",
        RecordType::TXT,
        Some(RData::TXT(TXT::new(vec![token]))),
    );
    wait_state(&p, "web", "www.example.test", "active").await;
    wait_activity_count(&p, "retrying in 1 s", 1, Duration::from_secs(30)).await;
    wait_activity_count(&p, "retrying in 2 s", 1, Duration::from_secs(30)).await;
    let cert = certificate(&p, "www.example.test").await;
    assert!(
        cert.starts_with("failed: ") && cert.contains("retrying in"),
        "{cert}"
    );
    p.wait_content("web", "self-signed meanwhile", Duration::from_secs(60))
        .await;
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "--resolve",
            &format!("www.example.test:{}:127.0.0.1", p.https_port),
        ])
        .arg(format!("https://www.example.test:{}/", p.https_port))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(body.contains("self-signed meanwhile"), "{body}");
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
}

/// Without HTTPS the router does not serve the console at `console.<zone>`: the admin
/// token would cross its plain-HTTP address. The console stays on the API address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_https_the_console_is_not_routed() {
    let p = Platform::start_with_env(&[("SLIPWAY_HTTPS_ADDR", "off")]).await;
    let (status, body) = get_host_via(&p.http, p.router_port, &format!("console.{ZONE}"), "/")
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("<title>Slipway</title>"), "{body}");
    let req = hyper::Request::get(format!("{}/", p.api))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = p.http.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let page = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&page).contains("<title>Slipway</title>"));
}
