//! Host parsing and normalisation.
//!
//! Every request is routed by the name in its `Host` header (or the authority of an
//! absolute-form / HTTP/2 request URI). Clients write that name in many spellings for the
//! same service: `API.Example.com`, `api.example.com:8080`, `api.example.com.` (the fully
//! qualified form with the root dot). The route table stores one spelling, the normalised
//! one, so the hot path is a single `HashMap` lookup; this module turns any spelling into
//! that form, or refuses it. It lives on its own because it parses untrusted bytes: it must
//! never panic, and normalising twice must give the same answer as normalising once
//! (both are property-tested below and in `tests/host_props.rs`).
//!
//! Normal form: ASCII lowercase, no port, no trailing dot; IPv6 literals keep their brackets
//! (`[::1]`). Only letters, digits, `-`, `_` and `.` (between non-empty labels) are
//! accepted in names: anything else cannot be a service we route to.

use std::borrow::Cow;

/// Longest host name accepted (RFC 1035 limit on a domain name in text form).
pub const MAX_HOST_LEN: usize = 253;

/// Why a host could not be parsed. The router answers 400 for all of them: the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The host (without port) is empty.
    #[error("empty host")]
    Empty,
    /// The text after the last `:` is not a port number.
    #[error("invalid port in host")]
    Port,
    /// A character that cannot appear in a host name.
    #[error("invalid character in host")]
    Char,
    /// Two dots in a row, or a leading dot.
    #[error("empty label in host")]
    EmptyLabel,
    /// Longer than [`MAX_HOST_LEN`].
    #[error("host too long")]
    TooLong,
    /// `userinfo@` in front of the host.
    #[error("userinfo in host")]
    Userinfo,
    /// A `[` without a well-formed IPv6 literal.
    #[error("malformed IPv6 literal in host")]
    Ipv6,
}

/// Normalise a `Host` header value or URI authority (`host[:port]`, `[v6][:port]`).
/// Userinfo (`user@host`) is refused: it has no place in `Host` (RFC 9110 §7.2), and
/// a router that routes `evil@name` by `name` lets the app see a host it never serves.
///
/// Borrows when the input is already in normal form (the common case), so the hot path
/// allocates nothing here.
pub fn normalize_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    // Every request comes here; most hosts are already in normal form, and one pass over
    // the bytes proves it (the general path below takes several).
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    if raw.contains('@') {
        return Err(HostError::Userinfo);
    }
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    let host = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']').ok_or(HostError::Ipv6)?;
        let inner = &rest[..end];
        check_port(&rest[end + 1..])?;
        if inner.is_empty()
            || inner.len() > 45
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            || !inner.contains(':')
        {
            return Err(HostError::Ipv6);
        }
        // `[` + inner + `]`
        &raw[..end + 2]
    } else {
        let (name, port) = match raw.rfind(':') {
            Some(i) => (&raw[..i], &raw[i..]),
            None => (raw, ""),
        };
        check_port(port)?;
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        if name.len() > MAX_HOST_LEN {
            return Err(HostError::TooLong);
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(HostError::EmptyLabel);
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(HostError::Char);
            }
        }
        name
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

/// Whether `raw` is a name already in normal form: non-empty, at most [`MAX_HOST_LEN`],
/// only lowercase letters, digits, `-`, `_` and dots between non-empty labels. Exactly
/// the inputs that the general path of [`normalize_host`] returns unchanged, borrowed
/// (IPv6 literals and anything with a port take the general path).
fn is_normal(raw: &str) -> bool {
    let b = raw.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if b.len() > MAX_HOST_LEN || first == b'.' || last == b'.' {
        return false;
    }
    let mut prev_dot = false;
    for &c in b {
        let dot = c == b'.';
        let ok = c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_';
        if !(ok || dot) || (dot && prev_dot) {
            return false;
        }
        prev_dot = dot;
    }
    true
}

/// `""`, `":"` (an empty port is allowed by RFC 3986) or `":<0-65535>"`.
fn check_port(port: &str) -> Result<(), HostError> {
    if port.is_empty() {
        return Ok(());
    }
    let digits = port.strip_prefix(':').ok_or(HostError::Port)?;
    if digits.is_empty() {
        return Ok(());
    }
    if digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::Port);
    }
    digits
        .parse::<u16>()
        .map(|_| ())
        .map_err(|_| HostError::Port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<String, HostError> {
        normalize_host(s).map(Cow::into_owned)
    }

    #[test]
    fn fast_path_accepts_only_normal_forms() {
        for ok in ["a", "bench.slipway.localhost", "a-b_c.d9", "1.2.3.4"] {
            assert!(is_normal(ok), "{ok}");
            assert_eq!(n(ok).as_deref(), Ok(ok));
        }
        let long = "a".repeat(MAX_HOST_LEN + 1);
        for not in [
            "", ".", "a.", ".a", "a..b", "A.b", "a:80", "[::1]", "u@a", "a b", &long,
        ] {
            assert!(!is_normal(not), "{not}");
        }
    }

    #[test]
    fn normal_forms() {
        assert_eq!(n("api.slipway.localhost").unwrap(), "api.slipway.localhost");
        assert_eq!(n("API.Slipway.Localhost").unwrap(), "api.slipway.localhost");
        assert_eq!(
            n("api.slipway.localhost:8080").unwrap(),
            "api.slipway.localhost"
        );
        assert_eq!(
            n("api.slipway.localhost.").unwrap(),
            "api.slipway.localhost"
        );
        assert_eq!(
            n("Api.Slipway.Localhost.:80").unwrap(),
            "api.slipway.localhost"
        );
        assert_eq!(n("api:").unwrap(), "api");
        assert_eq!(n("127.0.0.1:80").unwrap(), "127.0.0.1");
        assert_eq!(n("[::1]:8080").unwrap(), "[::1]");
        assert_eq!(n("[FE80::1]").unwrap(), "[fe80::1]");
    }

    #[test]
    fn borrows_when_already_normal() {
        assert!(matches!(normalize_host("a.b"), Ok(Cow::Borrowed("a.b"))));
        assert!(matches!(normalize_host("a.b:1"), Ok(Cow::Borrowed("a.b"))));
    }

    #[test]
    fn rejects() {
        assert_eq!(n(""), Err(HostError::Empty));
        assert_eq!(n(":80"), Err(HostError::Empty));
        assert_eq!(n("."), Err(HostError::Empty));
        assert_eq!(n("a..b"), Err(HostError::EmptyLabel));
        assert_eq!(n(".a"), Err(HostError::EmptyLabel));
        assert_eq!(n("a.."), Err(HostError::EmptyLabel));
        assert_eq!(n("a b"), Err(HostError::Char));
        assert_eq!(n("a/b"), Err(HostError::Char));
        assert_eq!(n("a:b:c"), Err(HostError::Port));
        assert_eq!(n("a:123456"), Err(HostError::Port));
        assert_eq!(n("a:8x"), Err(HostError::Port));
        assert_eq!(n("a:65536"), Err(HostError::Port));
        assert_eq!(n("[::1"), Err(HostError::Ipv6));
        assert_eq!(n("[]"), Err(HostError::Ipv6));
        assert_eq!(n("[zz::1]"), Err(HostError::Ipv6));
        assert_eq!(n("[::1]x"), Err(HostError::Port));
        assert_eq!(n("é.com"), Err(HostError::Char));
        assert_eq!(n("user:pw@api:1"), Err(HostError::Userinfo));
        assert_eq!(n("evil@web.slipway.localhost"), Err(HostError::Userinfo));
        assert_eq!(n(&"a".repeat(254)), Err(HostError::TooLong));
    }

    #[test]
    fn idempotent_on_examples() {
        for s in ["A.b.", "x:1", "[::AB]:9", "a-b_c.D"] {
            let once = n(s).unwrap();
            assert_eq!(n(&once).unwrap(), once);
        }
    }
}
