//! Webhook proofs and payloads, from untrusted senders: GitHub's `X-Hub-Signature-256`
//! (HMAC-SHA256 of the raw body, checked in constant time) and GitLab's `X-Gitlab-Token`
//! (compared in constant time), and the pushed ref of either payload.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Whether the request carries a valid proof for `secret`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    if let Some(sig) = headers.get("x-hub-signature-256") {
        let Some(hex) = sig
            .to_str()
            .ok()
            .and_then(|s| s.trim().strip_prefix("sha256="))
        else {
            return false;
        };
        let Some(given) = decode_hex(hex) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(body);
        return mac.verify_slice(&given).is_ok();
    }
    if let Some(token) = headers.get("x-gitlab-token") {
        return crate::constant_time_eq(token.as_bytes(), secret);
    }
    false
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// What a (verified) payload is about.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// GitHub's ping when a hook is made.
    Ping,
    /// A push to this ref (`refs/heads/main`).
    Ref(String),
    /// Something else, or a payload without a ref: poll anyway.
    Unknown,
}

/// The pushed ref of a GitHub or GitLab push payload.
pub fn pushed_ref(headers: &HeaderMap, body: &[u8]) -> Pushed {
    if headers
        .get("x-github-event")
        .is_some_and(|e| e.as_bytes() == b"ping")
    {
        return Pushed::Ping;
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => match v.get("ref").and_then(|r| r.as_str()) {
            Some(r) => Pushed::Ref(r.to_string()),
            None => Pushed::Unknown,
        },
        Err(_) => Pushed::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let sig: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={sig}")
    }

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    #[test]
    fn github_signatures_and_gitlab_tokens() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = with("x-hub-signature-256", &sign(b"s3cret", body));
        assert!(verify(&good, body, b"s3cret"));
        assert!(!verify(&good, b"{}", b"s3cret"), "another body");
        assert!(!verify(&good, body, b"other"), "another secret");
        assert!(!verify(&good, body, b""), "no secret");
        assert!(!verify(&HeaderMap::new(), body, b"s3cret"), "no proof");
        assert!(!verify(
            &with("x-hub-signature-256", "sha1=abc"),
            body,
            b"s3cret"
        ));
        assert!(verify(&with("x-gitlab-token", "s3cret"), body, b"s3cret"));
        assert!(!verify(&with("x-gitlab-token", "s3cre"), body, b"s3cret"));
        assert_eq!(
            pushed_ref(&good, body),
            Pushed::Ref("refs/heads/main".into())
        );
        assert_eq!(
            pushed_ref(&with("x-github-event", "ping"), b"{}"),
            Pushed::Ping
        );
        assert_eq!(pushed_ref(&HeaderMap::new(), b"\xff"), Pushed::Unknown);
    }

    proptest::proptest! {
        /// Any header value and body: refused unless it is the body's own signature.
        #[test]
        fn arbitrary_proofs_are_refused(sig in "[ -~]{0,80}", body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let Ok(v) = sig.parse() else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.insert("x-hub-signature-256", v);
            proptest::prop_assert_eq!(verify(&h, &body, b"k"), sign(b"k", &body) == sig.trim());
            let _ = pushed_ref(&h, &body);
        }
    }
}
