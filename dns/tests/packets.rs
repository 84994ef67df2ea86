//! The request path as a client meets it: arbitrary bytes at the UDP socket never stop
//! the server, a response is never answered, and every answer fits the size rules.

use std::net::UdpSocket;
use std::time::Duration;

use proptest::prelude::*;
use slipway_dns::{Handler, Zone};

fn zone() -> Zone {
    Zone {
        origin: "slipway.test".into(),
        serial: 1,
        addrs: (1..=200)
            .map(|i| format!("127.0.2.{}", i % 250).parse().unwrap())
            .collect(),
        http_port: 8080,
        https_port: None,
        services: ["web".to_string()].into(),
        ..Zone::default()
    }
}

/// A query for `name` A with the given flags and an optional EDNS size.
fn query(id: u16, flags: u16, name: &str, edns: Option<u16>) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&flags.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if let Some(size) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    q
}

struct Rig {
    _rt: tokio::runtime::Runtime,
    sock: UdpSocket,
    server: std::net::SocketAddr,
}

fn rig() -> Rig {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handler = Handler::new();
    handler.publish(zone());
    let running = rt
        .block_on(slipway_dns::serve(handler, "127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let server = running.addr;
    std::mem::forget(running);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    Rig {
        _rt: rt,
        sock,
        server,
    }
}

fn ask(r: &Rig, packet: &[u8]) -> Option<Vec<u8>> {
    r.sock.send_to(packet, r.server).unwrap();
    let mut buf = [0u8; 65535];
    r.sock
        .recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

#[test]
fn answers_respect_the_size_rules() {
    let r = rig();
    let plain = ask(&r, &query(1, 0x0100, "web.slipway.test", None)).unwrap();
    assert!(
        plain.len() <= 512 && plain[2] & 0x02 != 0,
        "TC without EDNS: {}",
        plain.len()
    );
    let small = ask(&r, &query(2, 0x0100, "web.slipway.test", Some(700))).unwrap();
    assert!(
        small.len() <= 700 && small[2] & 0x02 != 0,
        "{}",
        small.len()
    );
    let big = ask(&r, &query(3, 0x0100, "web.slipway.test", Some(65000))).unwrap();
    assert!(
        big.len() <= 1232 && big.len() > 700 && big[2] & 0x02 != 0,
        "{}",
        big.len()
    );
    assert!(
        ask(&r, &query(4, 0x8100, "web.slipway.test", None)).is_none(),
        "QR=1 answered"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes get nothing or a well-formed reply (a header, the same id, QR=1),
    /// and the server answers a real query afterwards.
    #[test]
    fn arbitrary_packets(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        thread_local! { static RIG: Rig = rig(); }
        RIG.with(|r| {
            // The arbitrary packet, then a real query (with an id `bytes` does not have).
            let id: u16 = if bytes.len() >= 2 && bytes[..2] == [0xbe, 0xef] { 0xbeee } else { 0xbeef };
            // A socket of its own: a late reply to an earlier case cannot be read here.
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
            sock.send_to(&bytes, r.server).unwrap();
            sock.send_to(&query(id, 0x0100, "slipway.test", None), r.server).unwrap();
            let mut buf = [0u8; 65535];
            let mut replies = Vec::new();
            loop {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    prop_assert!(false, "the server stopped answering");
                    unreachable!();
                };
                let reply = buf[..n].to_vec();
                if reply[..2] == id.to_be_bytes() {
                    break;
                }
                replies.push(reply);
                if replies.len() > 1 {
                    break;
                }
            }
            prop_assert!(replies.len() <= 1);
            if let Some(reply) = replies.first() {
                prop_assert!(reply.len() >= 12 && reply.len() <= 1232);
                prop_assert_eq!(&reply[..2], &bytes[..2]);
                prop_assert!(reply[2] & 0x80 != 0);
                prop_assert!(bytes.len() >= 12 && bytes[2] & 0x80 == 0, "a response was answered");
            }
            Ok(())
        })?;
    }
}
