//! Slipway's authoritative DNS server for the platform zone, on hickory-server.
//!
//! It answers from a [`Zone`]: a whole snapshot of what exists (services, active custom
//! domains, the TXT records Slipway publishes), swapped in at once when the store
//! changes, as the router's route table is. What it serves:
//!
//! - SOA and NS at the zone's apex, and `ns.<zone>`;
//! - `<service>.<zone>` and `*.<service>.<zone>` (any depth) of existing services, and
//!   `console.<zone>`, answered with the router's addresses (A and AAAA);
//! - `_http._tcp.<service>.<zone>` and `_https._tcp.<service>.<zone>` SRV records giving
//!   the router's port, with the addresses as additional records;
//! - TXT records Slipway publishes (ACME DNS-01 answers), at names in the zone or at an
//!   active custom domain;
//! - active custom domains (and their subdomains, for wildcard domains) when their zone is
//!   delegated here;
//! - NXDOMAIN (with the SOA) for other names in the zone, REFUSED outside it.
//!
//! Packets shorter than a header and responses (QR=1, even malformed ones) get nothing;
//! other malformed packets get FORMERR. hickory-server parses the requests and encodes
//! the answers; the socket loops are Slipway's, so that no response is ever answered
//! (hickory's own would answer a malformed one with FORMERR, a reflection). UDP answers fit 512 bytes
//! without EDNS and otherwise the smaller of the client's size and 1232 (the DNS flag
//! day's figure), with TC set beyond.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

/// The largest UDP answer sent to an EDNS client, whatever it advertises.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The TTL of every answer: short, since services come and go.
pub const TTL: u32 = 30;

/// The SOA minimum, which resolvers use to cache NXDOMAIN: a new service resolves within
/// this through a caching resolver, and at once asked directly.
pub const NEGATIVE_TTL: u32 = 5;

/// The DNS name a service answers at in `zone`.
pub fn service_fqdn(service: &slipway_core::ServiceName, zone: &str) -> String {
    slipway_core::service_host(service.as_str(), zone)
}

/// The name, in the platform zone, whose TXT record answers ACME DNS-01 for `domain`
/// (`www.example.com` or `*.example.com`): the user points `_acme-challenge.<domain>`
/// there by CNAME. `_acme` cannot be a service's name, so it never collides with one.
pub fn acme_delegate(domain: &str, zone: &str) -> String {
    let base = domain.trim_start_matches("*.").trim_end_matches('.');
    format!(
        "{}._acme.{}",
        base.to_ascii_lowercase(),
        zone.trim_end_matches('.')
    )
}

/// Everything the server answers from, as one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// The platform zone, lower case, without the final dot (`slipway.example.com`).
    pub origin: String,
    /// Changes with every snapshot (the SOA serial).
    pub serial: u32,
    /// The router's addresses, answered for every service name.
    pub addrs: Vec<IpAddr>,
    /// The router's HTTP port (SRV `_http._tcp`).
    pub http_port: u16,
    /// The router's HTTPS port (SRV `_https._tcp`), when it serves HTTPS.
    pub https_port: Option<u16>,
    /// The services that exist.
    pub services: BTreeSet<String>,
    /// Active custom domains (lower case; `*.example.com` for a wildcard) and their
    /// service: answered with the router's addresses when delegated here.
    pub domains: BTreeMap<String, String>,
    /// Every claimed domain's base (`example.com` for `*.example.com`), active or not:
    /// this server is authoritative for them (SOA and NS), so that a delegation can be
    /// verified before the domain is served.
    pub claimed: BTreeSet<String>,
    /// TXT records Slipway publishes, by lower-case name without the final dot.
    pub txt: BTreeMap<String, Vec<String>>,
}

/// What the server answers for one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The response code: NoError, NXDomain or Refused.
    pub code: ResponseCode,
    /// Authoritative (false only for REFUSED).
    pub authoritative: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA for NXDOMAIN and no-data answers).
    pub authority: Vec<Record>,
    /// The additional section (addresses of SRV targets).
    pub additional: Vec<Record>,
}

impl Answer {
    fn refused() -> Answer {
        Answer {
            code: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }
}

/// A label Slipway can have made: letters, digits, `-`, `_` (service records), `*`.
fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{s}.")).ok()
}

impl Zone {
    /// The SOA of a zone this server answers for: the platform zone or a claimed domain.
    fn soa_of(&self, apex: &str) -> Option<Record> {
        let rdata = SOA::new(
            name(&format!("ns.{}", self.origin))?,
            name(&format!("hostmaster.{apex}"))?,
            self.serial,
            3600,
            600,
            86400,
            NEGATIVE_TTL,
        );
        Some(Record::from_rdata(
            name(apex)?,
            NEGATIVE_TTL,
            RData::SOA(rdata),
        ))
    }

    /// SOA and NS answers at a zone's apex.
    fn apex(&self, apex: &str, owner: &Name, qtype: RecordType, a: &mut Answer) {
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            a.answers.extend(self.soa_of(apex));
        }
        if matches!(qtype, RecordType::NS | RecordType::ANY) {
            if let Some(ns) = name(&format!("ns.{}", self.origin)) {
                a.answers.push(Record::from_rdata(
                    owner.clone(),
                    TTL,
                    RData::NS(NS(ns.clone())),
                ));
                a.additional.extend(self.addresses(&ns, RecordType::ANY));
            }
        }
    }

    fn addresses(&self, owner: &Name, qtype: RecordType) -> Vec<Record> {
        self.addrs
            .iter()
            .filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|r| Record::from_rdata(owner.clone(), TTL, r))
            .collect()
    }

    /// The zone this server answers `qname` in: the platform zone, or a claimed custom
    /// domain (the longest match); None when it is neither.
    fn authority_for(&self, qname: &str) -> Option<Authority<'_>> {
        if under(qname, &self.origin) {
            return Some(Authority::Platform);
        }
        self.claimed
            .iter()
            .filter(|d| under(qname, d))
            .max_by_key(|d| d.len())
            .map(|d| Authority::Domain(d))
    }

    /// The answer to one question. `qname` may be in any case and have a final dot.
    pub fn answer(&self, qname: &str, qtype: RecordType) -> Answer {
        let q = qname.trim_end_matches('.').to_ascii_lowercase();
        let Some(auth) = self.authority_for(&q) else {
            return Answer::refused();
        };
        let apex = match auth {
            Authority::Platform => self.origin.as_str(),
            Authority::Domain(d) => d,
        };
        let Some(owner) = name(&q) else {
            return self.nxdomain(apex);
        };
        if !q.split('.').all(valid_label) {
            return self.nxdomain(apex);
        }
        let mut a = Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        };
        let mut exists = match auth {
            Authority::Platform => self.platform(&q, &owner, qtype, &mut a),
            Authority::Domain(base) => self.delegated(base, &q, &owner, qtype, &mut a),
        };
        if let Some(values) = self.txt.get(&q) {
            exists = true;
            if matches!(qtype, RecordType::TXT | RecordType::ANY) {
                for v in values {
                    a.answers.push(Record::from_rdata(
                        owner.clone(),
                        TTL,
                        RData::TXT(TXT::new(vec![v.clone()])),
                    ));
                }
            }
        }
        // A name with something below it exists (an empty non-terminal: RFC 8020 says
        // nothing exists below an NXDOMAIN).
        exists = exists || self.txt.keys().any(|t| t.ends_with(&format!(".{q}")));
        if !exists {
            return self.nxdomain(apex);
        }
        if a.answers.is_empty() {
            a.authority.extend(self.soa_of(apex));
        }
        a
    }

    /// Fills the answer for a name in a claimed domain; false if it does not exist. Its
    /// apex has SOA and NS; an active domain's name (or one label under an active
    /// wildcard) has the router's addresses.
    fn delegated(
        &self,
        base: &str,
        q: &str,
        owner: &Name,
        qtype: RecordType,
        a: &mut Answer,
    ) -> bool {
        if q == base {
            self.apex(base, owner, qtype, a);
        }
        let one_up = q.split_once('.').map(|(_, p)| format!("*.{p}"));
        let served =
            self.domains.contains_key(q) || one_up.is_some_and(|w| self.domains.contains_key(&w));
        if served && matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            a.answers.extend(self.addresses(owner, qtype));
        }
        served
            || q == base
            || self
                .domains
                .keys()
                .any(|d| d.trim_start_matches("*.").ends_with(&format!(".{q}")))
    }

    /// Fills the answer for a name in the platform zone; false if the name does not
    /// exist.
    fn platform(&self, q: &str, owner: &Name, qtype: RecordType, a: &mut Answer) -> bool {
        let rel = q
            .strip_suffix(&self.origin)
            .unwrap_or(q)
            .trim_end_matches('.');
        if rel.is_empty() {
            self.apex(&self.origin, owner, qtype, a);
            return true;
        }
        if rel == "ns" || rel == "console" {
            a.answers.extend(self.addresses(owner, qtype));
            return true;
        }
        let labels: Vec<&str> = rel.split('.').collect();
        let service = labels[labels.len() - 1];
        if !self.services.contains(service) {
            // `_acme` names exist when they hold TXT (the caller adds them).
            return false;
        }
        let target = format!("{service}.{}", self.origin);
        if labels == ["_tcp", service] {
            // The parent of the service records: it exists, with no data.
            return true;
        }
        if labels.len() == 3 && labels[1] == "_tcp" && labels[0].starts_with('_') {
            let port = match labels[0] {
                "_http" => Some(self.http_port),
                "_https" => self.https_port,
                _ => return false,
            };
            let Some(port) = port else {
                return false;
            };
            if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                if let Some(t) = name(&target) {
                    a.answers.push(Record::from_rdata(
                        owner.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, 0, port, t.clone())),
                    ));
                    a.additional.extend(self.addresses(&t, RecordType::ANY));
                }
            }
            return true;
        }
        if labels.iter().any(|l| l.starts_with('_')) || labels.len() > 2 {
            // `_acme-challenge.<service>` and the like exist only with a TXT record;
            // below a service, one label (as the router and wildcard certificates
            // match).
            return false;
        }
        a.answers.extend(self.addresses(owner, qtype));
        true
    }

    fn nxdomain(&self, apex: &str) -> Answer {
        Answer {
            code: ResponseCode::NXDomain,
            authoritative: true,
            answers: Vec::new(),
            authority: self.soa_of(apex).into_iter().collect(),
            additional: Vec::new(),
        }
    }
}

/// Whether `n` is `z` or under it.
fn under(n: &str, z: &str) -> bool {
    n == z || n.ends_with(&format!(".{z}"))
}

enum Authority<'a> {
    Platform,
    Domain(&'a str),
}

/// The request handler: answers each query from the current [`Zone`].
#[derive(Clone, Default)]
pub struct Handler {
    zone: Arc<ArcSwap<Zone>>,
}

impl Handler {
    /// A handler answering from an empty zone until [`Handler::publish`].
    pub fn new() -> Handler {
        Handler::default()
    }

    /// Replaces the zone at once.
    pub fn publish(&self, zone: Zone) {
        self.zone.store(Arc::new(zone));
    }

    /// The zone now served.
    pub fn zone(&self) -> Arc<Zone> {
        self.zone.load_full()
    }
}

/// The UDP payload an answer may fill: 512 without EDNS, else the client's (at least
/// 512) up to [`MAX_UDP_PAYLOAD`].
pub fn udp_payload(client: Option<u16>) -> u16 {
    match client {
        None => 512,
        Some(n) => n.clamp(512, MAX_UDP_PAYLOAD),
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let builder = MessageResponseBuilder::from_message_request(request);
        let fail = |meta: Metadata| {
            ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            })
        };
        // Our own EDNS in the answer, advertising (and so limiting the answer to) the size
        // this server keeps to.
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(udp_payload(Some(e.max_payload())));
            ours
        });
        if request.metadata.op_code != OpCode::Query {
            meta.response_code = ResponseCode::NotImp;
            let msg = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| fail(meta));
        }
        let queries = request.queries.queries();
        if queries.len() != 1 {
            meta.response_code = ResponseCode::FormErr;
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| fail(meta));
        }
        let q = &queries[0];
        if q.query_class() != hickory_server::proto::rr::DNSClass::IN {
            meta.response_code = ResponseCode::Refused;
            let msg = builder.error_msg(&request.metadata, ResponseCode::Refused);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| fail(meta));
        }
        if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
            meta.response_code = ResponseCode::NotImp;
            let msg = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| fail(meta));
        }
        let name = Name::from(q.name().clone()).to_ascii();
        let ans = self.zone.load().answer(&name, q.query_type());
        meta.response_code = ans.code;
        meta.authoritative = ans.authoritative;
        let mut builder = builder;
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let msg = builder.build(
            meta,
            ans.answers.iter(),
            ans.authority.iter(),
            std::iter::empty(),
            ans.additional.iter(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!("dns: sending an answer: {e}");
                fail(meta)
            }
        }
    }
}

/// Sends one answer on the socket it came from, encoded within the size the protocol
/// and the client allow (hickory's own encoder, with TC set when records are left out).
#[derive(Clone)]
struct Reply {
    udp: Option<(Arc<tokio::net::UdpSocket>, SocketAddr)>,
    tcp: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    max: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let meta = *response.metadata();
        let mut bytes = Vec::with_capacity(512);
        let info = {
            let mut enc = BinEncoder::new(&mut bytes);
            enc.set_max_size(self.max);
            response.destructive_emit(&mut enc)
        };
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("dns: encoding an answer: {e}");
                bytes.clear();
                let mut m = meta;
                m.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata: m,
                    counts: HeaderCounts::default(),
                };
                let mut enc = BinEncoder::new(&mut bytes);
                header.emit(&mut enc)?;
                ResponseInfo::from(header)
            }
        };
        if let Some((sock, peer)) = &self.udp {
            sock.send_to(&bytes, peer).await?;
        }
        if let Some(tx) = &self.tcp {
            // The connection may be gone; nothing to do then.
            let _ = tx.send(bytes).await;
        }
        Ok(info)
    }
}

/// FORMERR for a packet whose header parsed but whose body did not.
fn formerr(raw: &[u8]) -> Option<Vec<u8>> {
    let mut dec = BinDecoder::new(raw);
    let header = Header::read(&mut dec).ok()?;
    let mut m = Metadata::response_from_request(&header.metadata);
    m.response_code = ResponseCode::FormErr;
    let mut out = Vec::with_capacity(12);
    let mut enc = BinEncoder::new(&mut out);
    Header {
        metadata: m,
        counts: HeaderCounts::default(),
    }
    .emit(&mut enc)
    .ok()?;
    Some(out)
}

/// What to do with one packet: nothing (shorter than a header, or QR=1: a response is
/// never answered, so the server cannot reflect one), FORMERR, or a parsed request.
enum Incoming {
    Drop,
    Reply(Vec<u8>),
    Ask(Box<Request>),
}

fn classify(raw: Vec<u8>, src: SocketAddr, protocol: Protocol) -> Incoming {
    if raw.len() < 12 || raw[2] & 0x80 != 0 {
        return Incoming::Drop;
    }
    match Request::from_bytes(raw.clone(), src, protocol) {
        Ok(r) => Incoming::Ask(Box::new(r)),
        Err(_) => match formerr(&raw) {
            Some(f) => Incoming::Reply(f),
            None => Incoming::Drop,
        },
    }
}

/// A running server; [`Running::stop`] ends it.
pub struct Running {
    tasks: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
    /// The address it listens on (UDP and TCP alike).
    pub addr: SocketAddr,
}

impl Running {
    /// Stops accepting and waits, at most `deadline`, for the server's tasks.
    pub async fn stop(self, deadline: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("dns: not stopped within {deadline:?}");
        }
    }
}

/// How long a TCP client may take to send its next query.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// TCP connections served at once; more are closed at once.
const TCP_MAX: usize = 256;

/// Serves `handler` on `addr`, over UDP and TCP (the same port).
pub async fn serve(handler: Handler, addr: SocketAddr) -> std::io::Result<Running> {
    let udp = Arc::new(tokio::net::UdpSocket::bind(addr).await?);
    let addr = udp.local_addr()?;
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let tasks = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let (handler, stop, inner) = (handler.clone(), stop.clone(), tasks.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    r = udp.recv_from(&mut buf) => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::debug!("dns: udp receive: {e}");
                            continue;
                        }
                    },
                };
                match classify(buf[..n].to_vec(), peer, Protocol::Udp) {
                    Incoming::Drop => {}
                    Incoming::Reply(bytes) => {
                        let _ = udp.send_to(&bytes, peer).await;
                    }
                    Incoming::Ask(req) => {
                        let reply = Reply {
                            udp: Some((udp.clone(), peer)),
                            tcp: None,
                            max: udp_payload(req.edns.as_ref().map(|e| e.max_payload())),
                        };
                        let handler = handler.clone();
                        inner.spawn(async move {
                            handler.handle_request::<_, TokioTime>(&req, reply).await;
                        });
                    }
                }
            }
        });
    }
    {
        let (stop, inner) = (stop.clone(), tasks.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(TCP_MAX));
        tasks.spawn(async move {
            loop {
                let (conn, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::debug!("dns: tcp accept: {e}");
                            continue;
                        }
                    },
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(conn);
                    continue;
                };
                let (handler, stop) = (handler.clone(), stop.clone());
                inner.spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tcp_conn(handler, conn, peer) => {}
                    }
                    drop(slot);
                });
            }
        });
    }
    Ok(Running { tasks, stop, addr })
}

/// One TCP connection: length-prefixed queries, answered in order.
async fn tcp_conn(handler: Handler, conn: tokio::net::TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = conn.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let writer = async move {
        while let Some(bytes) = rx.recv().await {
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            if wr.write_all(&len.to_be_bytes()).await.is_err()
                || wr.write_all(&bytes).await.is_err()
            {
                return;
            }
        }
    };
    let reader = async move {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, rd.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let mut raw = vec![0u8; usize::from(u16::from_be_bytes(len))];
            match tokio::time::timeout(TCP_IDLE, rd.read_exact(&mut raw)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            match classify(raw, peer, Protocol::Tcp) {
                Incoming::Drop => {}
                Incoming::Reply(bytes) => {
                    if tx.send(bytes).await.is_err() {
                        return;
                    }
                }
                Incoming::Ask(req) => {
                    let reply = Reply {
                        udp: None,
                        tcp: Some(tx.clone()),
                        max: u16::MAX,
                    };
                    handler.handle_request::<_, TokioTime>(&req, reply).await;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn zone() -> Zone {
        Zone {
            origin: "slipway.test".into(),
            serial: 7,
            addrs: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            http_port: 8080,
            https_port: Some(8443),
            services: ["web".to_string(), "feature-x--web".to_string()].into(),
            domains: [
                ("www.example.com".to_string(), "web".to_string()),
                ("*.apps.example.org".to_string(), "web".to_string()),
            ]
            .into(),
            claimed: [
                "www.example.com".to_string(),
                "apps.example.org".to_string(),
                "pending.example.net".to_string(),
            ]
            .into(),
            txt: [(
                "www.example.com._acme.slipway.test".to_string(),
                vec!["token-1".to_string()],
            )]
            .into(),
        }
    }

    fn rdata(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn services_and_their_subdomains_resolve_to_the_router() {
        let z = zone();
        for n in [
            "web.slipway.test",
            "WEB.Slipway.Test.",
            "a.web.slipway.test",
            "feature-x--web.slipway.test",
            "console.slipway.test",
        ] {
            let a = z.answer(n, RecordType::A);
            assert_eq!(a.code, ResponseCode::NoError, "{n}");
            assert_eq!(rdata(&a), ["127.0.0.1"], "{n}");
            assert!(a.authoritative);
            assert_eq!(rdata(&z.answer(n, RecordType::AAAA)), ["::1"], "{n}");
        }
        // An existing name without the type: no data, with the SOA.
        let mx = z.answer("web.slipway.test", RecordType::MX);
        assert_eq!(mx.code, ResponseCode::NoError);
        assert!(mx.answers.is_empty());
        assert_eq!(mx.authority[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn other_names_are_nxdomain_and_other_zones_refused() {
        let z = zone();
        for n in [
            "gone.slipway.test",
            "x.gone.slipway.test",
            "_acme-challenge.web.slipway.test",
            "bad!.slipway.test",
            "a.b.web.slipway.test",
        ] {
            let a = z.answer(n, RecordType::A);
            assert_eq!(a.code, ResponseCode::NXDomain, "{n}");
            assert_eq!(a.authority[0].record_type(), RecordType::SOA);
        }
        for n in [
            "example.net",
            "slipway.test.evil",
            "xslipway.test",
            "example.com",
            "net",
        ] {
            assert_eq!(
                z.answer(n, RecordType::A).code,
                ResponseCode::Refused,
                "{n}"
            );
        }
    }

    #[test]
    fn apex_soa_ns_and_service_records() {
        let z = zone();
        let soa = z.answer("slipway.test", RecordType::SOA);
        assert_eq!(soa.answers.len(), 1);
        assert!(
            rdata(&soa)[0].contains("ns.slipway.test. hostmaster.slipway.test. 7"),
            "{:?}",
            rdata(&soa)
        );
        let ns = z.answer("slipway.test", RecordType::NS);
        assert_eq!(rdata(&ns), ["ns.slipway.test."]);
        assert_eq!(ns.additional.len(), 2);
        let srv = z.answer("_http._tcp.web.slipway.test", RecordType::SRV);
        assert_eq!(rdata(&srv), ["0 0 8080 web.slipway.test."]);
        assert_eq!(srv.additional.len(), 2);
        let srv = z.answer("_https._tcp.web.slipway.test", RecordType::SRV);
        assert_eq!(rdata(&srv), ["0 0 8443 web.slipway.test."]);
        let mut no_tls = zone();
        no_tls.https_port = None;
        assert_eq!(
            no_tls
                .answer("_https._tcp.web.slipway.test", RecordType::SRV)
                .code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            z.answer("_smtp._tcp.web.slipway.test", RecordType::SRV)
                .code,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn published_txt_and_delegated_domains() {
        let z = zone();
        let txt = z.answer("www.example.com._acme.slipway.test", RecordType::TXT);
        assert_eq!(rdata(&txt), ["token-1"]);
        assert_eq!(
            rdata(&z.answer("www.example.com", RecordType::A)),
            ["127.0.0.1"]
        );
        assert_eq!(
            rdata(&z.answer("a.apps.example.org", RecordType::A)),
            ["127.0.0.1"]
        );
        // The wildcard's base exists (it holds the challenge) but has no address.
        let base = z.answer("apps.example.org", RecordType::A);
        assert_eq!(base.code, ResponseCode::NoError);
        assert!(base.answers.is_empty());
        assert_eq!(
            z.answer("x.www.example.com", RecordType::A).code,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn claims_are_zones_and_empty_non_terminals_exist() {
        let z = zone();
        // A pending claim: its apex has SOA and NS (so a delegation can be checked), no
        // address until it is active; negative answers carry its own SOA.
        let ns = z.answer("pending.example.net", RecordType::NS);
        assert_eq!(rdata(&ns), ["ns.slipway.test."]);
        let soa = z.answer("pending.example.net", RecordType::SOA);
        assert!(
            rdata(&soa)[0].contains("hostmaster.pending.example.net."),
            "{:?}",
            rdata(&soa)
        );
        let a = z.answer("pending.example.net", RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        let nx = z.answer("x.pending.example.net", RecordType::A);
        assert_eq!(nx.code, ResponseCode::NXDomain);
        assert!(nx.authority[0]
            .name
            .to_ascii()
            .starts_with("pending.example.net"));
        // Nothing exists below an NXDOMAIN: parents of existing names are NODATA.
        for n in [
            "_tcp.web.slipway.test",
            "_acme.slipway.test",
            "com._acme.slipway.test",
        ] {
            let a = z.answer(n, RecordType::A);
            assert_eq!(a.code, ResponseCode::NoError, "{n}");
            assert!(a.answers.is_empty(), "{n}");
        }
    }

    #[test]
    fn udp_payloads() {
        assert_eq!(udp_payload(None), 512);
        assert_eq!(udp_payload(Some(100)), 512);
        assert_eq!(udp_payload(Some(1000)), 1000);
        assert_eq!(udp_payload(Some(4096)), 1232);
    }

    #[test]
    fn acme_delegates() {
        assert_eq!(
            acme_delegate("*.Example.com.", "slipway.test"),
            "example.com._acme.slipway.test"
        );
        let z = zone();
        assert!(!z.services.contains("_acme"));
    }

    proptest! {
        /// Any name and type gets an answer without panicking, and only names in the
        /// zone or an active domain are answered.
        #[test]
        fn any_question(name in "[a-zA-Z0-9_.*!-]{0,80}", t in 0u16..300) {
            let z = zone();
            let a = z.answer(&name, RecordType::from(t));
            let n = name.trim_end_matches('.').to_ascii_lowercase();
            let ours = n == "slipway.test" || n.ends_with(".slipway.test")
                || n.ends_with("example.com") || n.ends_with("example.org");
            if !ours {
                prop_assert_eq!(a.code, ResponseCode::Refused);
            }
            for r in &a.answers {
                prop_assert_eq!(r.name.to_ascii().trim_end_matches('.').to_ascii_lowercase(), n.clone());
            }
        }
    }
}
