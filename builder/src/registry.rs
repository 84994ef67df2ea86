//! The OCI distribution API, as much of it as following a tag needs: the manifest digest
//! of `host/name:tag` (`HEAD /v2/<name>/manifests/<tag>`), over HTTPS verified against
//! the host's roots (and the operator's CA bundle), anonymously, with basic or bearer
//! credentials, and through the registry's token service when it answers 401 with a
//! `Bearer realm=...` challenge (Docker Hub, GHCR, ECR, Harbor and distribution with
//! token auth all do).
//!
//! Loopback registries (`127.0.0.0/8`, `localhost`, `::1`) are what the engine calls
//! insecure by default: like the engine, this tries HTTPS first and falls back to plain
//! HTTP when no TLS server answers there.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::images::RegistryRef;

/// The media types a manifest HEAD accepts: OCI index and manifest, Docker's manifest
/// list and v2 manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How long one request to a registry or its token service may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a token service's answer that is read.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;

/// A client for registries' manifest digests.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// What went wrong reading a digest, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry or its token service could not be reached or spoke no HTTP.
    #[error("{url}: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why it failed (connection, TLS, timeout).
        reason: String,
    },
    /// It answered, but not with a digest.
    #[error("{url}: {reason}")]
    Refused {
        /// What was asked.
        url: String,
        /// The status and what it means here.
        reason: String,
    },
}

/// A `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The token service's URL.
    pub realm: String,
    /// The `service` parameter to send back.
    pub service: Option<String>,
    /// The `scope` parameter to send back.
    pub scope: Option<String>,
}

/// Parses a `WWW-Authenticate` value; `None` unless it is a Bearer challenge with a
/// realm. Parameters are `key=value` or `key="quoted value"` (a quoted value may hold
/// commas and `\"`), separated by commas.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim_start();
    let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service, mut scope) = (None, None, None);
    loop {
        rest = rest.trim_start_matches([' ', ',', '\t']);
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
        rest = next;
    }
    let realm = realm.filter(|r| r.starts_with("https://") || r.starts_with("http://"))?;
    Some(Challenge {
        realm,
        service,
        scope,
    })
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The token service's URL for a challenge, asking to pull `name` when the challenge
/// names no scope.
pub fn token_url(c: &Challenge, name: &str) -> String {
    let scope = c
        .scope
        .clone()
        .unwrap_or_else(|| format!("repository:{name}:pull"));
    let mut url = c.realm.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    if let Some(s) = &c.service {
        url.push_str(&format!("service={}&", query_value(s)));
    }
    url.push_str(&format!("scope={}", query_value(&scope)));
    url
}

/// Basic credentials for `user:password`, bearer for a token.
pub fn authorization(secret: &str) -> String {
    match secret.split_once(':') {
        Some(_) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(secret)
        ),
        None => format!("Bearer {secret}"),
    }
}

/// True for the hosts the engine treats as insecure registries by default.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    /// A client trusting the host's roots (`SSL_CERT_FILE` when set, else the system
    /// store) and the certificates of `extra_pem`.
    pub fn new(extra_pem: Option<&[u8]>) -> RegistryClient {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!("reading the host's CA certificates: {e}");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_pem {
            use rustls_pki_types::pem::PemObject as _;
            let certs =
                rustls_pki_types::CertificateDer::pem_slice_iter(pem).filter_map(Result::ok);
            roots.add_parsable_certificates(certs);
        }
        RegistryClient::with_roots(roots)
    }

    /// A client trusting exactly `roots`.
    pub fn with_roots(roots: rustls::RootCertStore) -> RegistryClient {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        RegistryClient { http }
    }

    async fn send(
        &self,
        url: &str,
        head: bool,
        auth: Option<&str>,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), RegistryError> {
        let unreachable = |reason: String| RegistryError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let mut req = if head {
            hyper::Request::head(url).header("accept", MANIFEST_ACCEPT)
        } else {
            hyper::Request::get(url)
        };
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(
            REQUEST_TIMEOUT,
            Limited::new(body, TOKEN_BODY_LIMIT).collect(),
        )
        .await
        .map_err(|_| unreachable("the body did not arrive in time".into()))?
        .map_err(|e| unreachable(format!("reading the body: {e}")))?
        .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// The manifest digest of `r` (`Docker-Content-Digest`), with the credentials in
    /// `secret` (`user:password` or a token) when given.
    pub async fn manifest_digest(
        &self,
        r: &RegistryRef,
        secret: Option<&str>,
    ) -> Result<String, RegistryError> {
        let path = format!("{}/v2/{}/manifests/{}", r.host, r.name, r.tag);
        let https = format!("https://{path}");
        match self.digest_at(&https, &r.name, secret).await {
            Err(RegistryError::Unreachable { reason, .. }) if is_loopback(&r.host) => {
                let http = format!("http://{path}");
                // Whatever plain http says (a TLS-only server may answer 400), the https
                // reason is half the story.
                self.digest_at(&http, &r.name, secret)
                    .await
                    .map_err(|e| match e {
                        RegistryError::Unreachable { url, reason: plain } => {
                            RegistryError::Unreachable {
                                url,
                                reason: format!("{plain} (and over https: {reason})"),
                            }
                        }
                        RegistryError::Refused { url, reason: plain } => RegistryError::Refused {
                            url,
                            reason: format!("{plain} (and over https: {reason})"),
                        },
                    })
            }
            other => other,
        }
    }

    async fn digest_at(
        &self,
        url: &str,
        name: &str,
        secret: Option<&str>,
    ) -> Result<String, RegistryError> {
        let first = secret.map(authorization);
        let (mut status, mut headers, _) = self.send(url, true, first.as_deref()).await?;
        if status == http::StatusCode::UNAUTHORIZED {
            let challenge = headers
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_challenge);
            if let Some(c) = challenge {
                let token = self.token(&c, name, secret).await?;
                (status, headers, _) = self
                    .send(url, true, Some(&format!("Bearer {token}")))
                    .await?;
            }
        }
        let refused = |reason: &str| RegistryError::Refused {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let digest = headers
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .map(str::to_string);
        match (status.as_u16(), digest) {
            (200, Some(d)) if d.starts_with("sha256:") || d.starts_with("sha512:") => Ok(d),
            (200, Some(_)) => Err(refused("the Docker-Content-Digest is not a digest")),
            (200, None) => Err(refused("no Docker-Content-Digest in the answer")),
            (401, _) => Err(refused(
                "401: set source.credentials to a secret the registry takes",
            )),
            (403, _) => Err(refused("403: these credentials may not pull this image")),
            (404, _) => Err(refused("404: no such image or tag")),
            (s, _) => Err(refused(&format!("answered {s}"))),
        }
    }

    /// A token from the challenge's token service, asked with basic credentials when the
    /// secret is `user:password` (anonymously otherwise).
    async fn token(
        &self,
        c: &Challenge,
        name: &str,
        secret: Option<&str>,
    ) -> Result<String, RegistryError> {
        let url = token_url(c, name);
        let auth = secret.filter(|s| s.contains(':')).map(authorization);
        let (status, _, body) = self.send(&url, false, auth.as_deref()).await?;
        let refused = |reason: String| RegistryError::Refused {
            url: c.realm.clone(),
            reason,
        };
        if !status.is_success() {
            return Err(refused(format!(
                "the registry's token service answered {status}: set source.credentials to a secret it takes"
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| refused(format!("the token service's answer is not its JSON: {e}")))?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| refused("the token service gave no usable token".into()))
    }
}

/// An error and its sources on one line (hyper's client error alone says only
/// "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use tokio::net::TcpListener;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#
            ),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer  realm = "http://127.0.0.1:9/t" , service=x"#),
            Some(Challenge {
                realm: "http://127.0.0.1:9/t".into(),
                service: Some("x".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry""#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(
            parse_challenge(r#"Bearer realm="file:///etc/passwd""#),
            None
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://a"#),
            None,
            "unclosed"
        );
    }

    #[test]
    fn token_urls() {
        let c = Challenge {
            realm: "https://auth.example/token?x=1".into(),
            service: Some("reg one".into()),
            scope: None,
        };
        assert_eq!(
            token_url(&c, "team/app"),
            "https://auth.example/token?x=1&service=reg%20one&scope=repository%3Ateam%2Fapp%3Apull"
        );
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.evil:1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    proptest! {
        /// Any header value parses or is refused, never panics; a realm that comes back is
        /// an http(s) URL.
        #[test]
        fn any_challenge(header in "\\PC{0,80}") {
            if let Some(c) = parse_challenge(&header) {
                prop_assert!(c.realm.starts_with("http"));
            }
        }

        /// Quoted values come back as they were written, escapes and commas included.
        #[test]
        fn quoted_values_round_trip(service in "[ -~]{0,30}", scope in "[ -~]{0,30}") {
            let q = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
            let header = format!(
                "Bearer realm=\"https://a/t\",service=\"{}\",scope=\"{}\"",
                q(&service),
                q(&scope)
            );
            let c = parse_challenge(&header).unwrap();
            prop_assert_eq!(c.service, Some(service));
            prop_assert_eq!(c.scope, Some(scope));
        }
    }

    /// A registry with token auth on loopback: HEAD without a token gets a Bearer
    /// challenge; the token service hands `T0K` for `user:pw` only.
    async fn token_registry(tls: Option<Arc<rustls::ServerConfig>>) -> String {
        use hyper::service::service_fn;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let realm = format!("{scheme}://127.0.0.1:{port}/token");
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let realm = realm.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let realm = realm.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_string());
                            let path = req.uri().path_and_query().unwrap().to_string();
                            let mut resp = hyper::Response::builder();
                            let body = if path
                                == "/token?service=fake&scope=repository%3Ateam%2Fapp%3Apull"
                            {
                                if auth.as_deref() == Some(&authorization("user:pw")) {
                                    r#"{"token":"T0K","expires_in":300}"#.to_string()
                                } else {
                                    resp = resp.status(401);
                                    String::new()
                                }
                            } else if path == "/v2/team/app/manifests/v1" {
                                if auth.as_deref() == Some("Bearer T0K") {
                                    resp = resp.header("docker-content-digest", "sha256:abc");
                                } else {
                                    resp = resp.status(401).header(
                                        "www-authenticate",
                                        format!(r#"Bearer realm="{realm}",service="fake""#),
                                    );
                                }
                                String::new()
                            } else {
                                resp = resp.status(404);
                                String::new()
                            };
                            Ok::<_, std::convert::Infallible>(
                                resp.body(http_body_util::Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let io = match tls {
                        Some(cfg) => {
                            let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                            else {
                                return;
                            };
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                .await;
                            return;
                        }
                        None => tcp,
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        format!("127.0.0.1:{port}")
    }

    fn app(host: &str) -> RegistryRef {
        RegistryRef {
            host: host.to_string(),
            name: "team/app".into(),
            tag: "v1".into(),
        }
    }

    #[tokio::test]
    async fn a_bearer_challenge_is_answered_through_the_token_service() {
        let host = token_registry(None).await;
        let client = RegistryClient::with_roots(rustls::RootCertStore::empty());
        let digest = client.manifest_digest(&app(&host), Some("user:pw")).await;
        assert_eq!(digest.unwrap(), "sha256:abc");
        let e = client
            .manifest_digest(&app(&host), Some("user:wrong"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("token service answered 401"), "{e}");
        let e = client.manifest_digest(&app(&host), None).await.unwrap_err();
        assert!(e.to_string().contains("token service answered 401"), "{e}");
    }

    /// A CA and a certificate for 127.0.0.1 signed by it.
    fn test_ca() -> (rustls::RootCertStore, Arc<rustls::ServerConfig>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        (roots, Arc::new(server))
    }

    #[tokio::test]
    async fn https_registries_are_verified_against_the_roots() {
        let (roots, server) = test_ca();
        let host = token_registry(Some(server)).await;
        let trusting = RegistryClient::with_roots(roots);
        let digest = trusting.manifest_digest(&app(&host), Some("user:pw")).await;
        assert_eq!(digest.unwrap(), "sha256:abc");
        // Without the CA the handshake fails; loopback then tries plain http, which a
        // TLS server does not speak: both reasons are in the error.
        let other = RegistryClient::with_roots(rustls::RootCertStore::empty());
        let e = other
            .manifest_digest(&app(&host), Some("user:pw"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("over https") && e.contains("certificate"), "{e}");
    }
}
