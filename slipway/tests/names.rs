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
    let p = Platform::start().await;
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
    assert_eq!(short(&p, &format!("a.b.web.{ZONE}"), "A"), ["127.0.0.1"]);
    assert_eq!(short(&p, &format!("console.{ZONE}"), "A"), ["127.0.0.1"]);
    assert_eq!(
        short(&p, &format!("_http._tcp.web.{ZONE}"), "SRV"),
        [format!("0 0 {} web.{ZONE}.", p.router_port)]
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
