//! HTTPS termination: rustls with the certificate chosen by SNI.
//!
//! [`Certs`] holds the issued certificates by name (`www.example.com`, and
//! `*.example.com` for a wildcard, which covers one label under it). A name without an
//! issued certificate gets a self-signed one, made on first use and kept (a bounded
//! cache), so HTTPS answers at once while the real certificate is being issued. ALPN
//! offers `h2` and `http/1.1`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Self-signed certificates kept at most (then the cache starts again).
const SELF_SIGNED_CACHE: usize = 1024;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
#[error("certificate for {name}: {reason}")]
pub struct CertError {
    /// The name it was for.
    pub name: String,
    /// What was wrong.
    pub reason: String,
}

/// The certificates the router serves.
pub struct Certs {
    issued: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    self_signed: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The name a client without SNI gets a certificate for.
    fallback_name: String,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("issued", &self.issued.load().len())
            .finish()
    }
}

/// Lower case, no final dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Certs {
    /// No issued certificates; `fallback_name` (the platform zone) for clients that send
    /// no SNI.
    pub fn new(fallback_name: &str) -> Certs {
        Certs {
            issued: ArcSwap::from_pointee(HashMap::new()),
            self_signed: Mutex::new(HashMap::new()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            fallback_name: key(fallback_name),
        }
    }

    /// Parses a PEM chain and key into what rustls serves.
    pub fn certified(
        &self,
        name: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Arc<CertifiedKey>, CertError> {
        let bad = |reason: String| CertError {
            name: name.to_string(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("the chain: {e}")))?;
        if chain.is_empty() {
            return Err(bad("no certificate in the chain".into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(format!("the key: {e}")))?;
        let ck =
            CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| bad(e.to_string()))?;
        Ok(Arc::new(ck))
    }

    /// Serves `chain_pem` with `key_pem` for `name` from now on.
    pub fn set(&self, name: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), CertError> {
        let ck = self.certified(name, chain_pem, key_pem)?;
        let mut m = (**self.issued.load()).clone();
        m.insert(key(name), ck);
        self.issued.store(Arc::new(m));
        Ok(())
    }

    /// Stops serving `name`'s issued certificate (a self-signed one takes its place).
    pub fn remove(&self, name: &str) {
        let mut m = (**self.issued.load()).clone();
        if m.remove(&key(name)).is_some() {
            self.issued.store(Arc::new(m));
        }
    }

    /// Whether `name` has an issued certificate (exactly, not by a wildcard).
    pub fn has(&self, name: &str) -> bool {
        self.issued.load().contains_key(&key(name))
    }

    /// The certificate for a server name: issued for it, else by a wildcard one label
    /// up, else self-signed.
    pub fn for_name(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = name.map(key).unwrap_or_else(|| self.fallback_name.clone());
        let issued = self.issued.load();
        if let Some(c) = issued.get(&name) {
            return Some(c.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(c) = issued.get(&format!("*.{parent}")) {
                return Some(c.clone());
            }
        }
        self.self_signed(&name)
    }

    fn self_signed(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let mut cache = self.self_signed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(name) {
            return Some(c.clone());
        }
        let made = self_signed_pem(name).ok()?;
        let ck = self
            .certified(name, made.0.as_bytes(), made.1.as_bytes())
            .ok()?;
        if cache.len() >= SELF_SIGNED_CACHE {
            cache.clear();
        }
        cache.insert(name.to_string(), ck.clone());
        Some(ck)
    }

    /// A rustls server configuration that picks from these certificates by SNI and
    /// offers h2 and http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.for_name(hello.server_name())
    }
}

/// A self-signed certificate and key (PEM) for `name`.
pub fn self_signed_pem(name: &str) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{name} (Slipway, self-signed)"),
    );
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Any server name a client sends gets a certificate or none, never a panic, and
        /// the self-signed cache stays bounded.
        #[test]
        fn any_sni_name(name in "\\PC{0,80}") {
            let certs = Certs::new("slipway.test");
            let _ = certs.for_name(Some(&name));
            prop_assert!(certs.self_signed.lock().unwrap().len() <= SELF_SIGNED_CACHE);
        }
    }

    #[test]
    fn names_pick_issued_then_wildcard_then_self_signed() {
        let certs = Certs::new("slipway.test");
        let (c, k) = self_signed_pem("www.example.com").unwrap();
        certs
            .set("WWW.example.com.", c.as_bytes(), k.as_bytes())
            .unwrap();
        let (wc, wk) = self_signed_pem("*.apps.example.com").unwrap();
        certs
            .set("*.apps.example.com", wc.as_bytes(), wk.as_bytes())
            .unwrap();
        let issued = certs.for_name(Some("www.example.com")).unwrap();
        let wild = certs.for_name(Some("a.apps.example.com")).unwrap();
        assert!(!Arc::ptr_eq(&issued, &wild));
        assert!(Arc::ptr_eq(
            &wild,
            &certs.for_name(Some("b.apps.example.com")).unwrap()
        ));
        let other = certs.for_name(Some("a.b.apps.example.com")).unwrap();
        assert!(!Arc::ptr_eq(&other, &wild), "a wildcard covers one label");
        // Self-signed ones are kept.
        assert!(Arc::ptr_eq(
            &other,
            &certs.for_name(Some("a.b.apps.example.com")).unwrap()
        ));
        assert!(certs.for_name(None).is_some());
        certs.remove("www.example.com");
        assert!(!certs.has("www.example.com"));
        assert!(!Arc::ptr_eq(
            &issued,
            &certs.for_name(Some("www.example.com")).unwrap()
        ));
        let e = certs.set("x.example.com", b"junk", b"junk").unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
