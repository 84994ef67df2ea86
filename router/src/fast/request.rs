//! Reading a client's request head: whether the fast path takes it, and the head the
//! instance gets.

use super::*;

/// What the client's buffer holds.
pub(super) enum Prepared {
    /// Not a whole request yet.
    Partial,
    /// Not for the fast path: the hyper path serves it.
    HandOff,
    /// The head is larger than the limit: 431, and the connection closes.
    TooLarge,
    /// Answered by the router: a host nobody serves.
    Unrouted {
        consumed: usize,
        close: bool,
        head: bool,
    },
    Forward(Forward),
}

/// Whether a request target holds only bytes that every parser reads the same way
/// (RFC 3986's unreserved, sub-delims, `:@/?%`). Anything else (a fragment, quotes,
/// braces, non-ASCII) goes to the hyper path, which accepts or refuses it as before.
pub(super) fn plain_target(path: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Split a comma-separated header value into trimmed, non-empty tokens.
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Parse the request at the front of `buf` and, if the fast path takes it, write what the
/// instance gets into `out`.
pub(super) fn prepare(router: &Router, buf: &[u8], peer_ip: &[u8], out: &mut Vec<u8>) -> Prepared {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= router.config.head_limit() => n,
        Ok(httparse::Status::Partial) if buf.len() <= router.config.head_limit() => {
            return Prepared::Partial
        }
        Ok(_) => return Prepared::TooLarge,
        Err(_) => return Prepared::HandOff,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Prepared::HandOff;
    };
    if !path.starts_with('/')
        || !plain_target(path)
        || method == "CONNECT"
        || path.starts_with(crate::ACME_PREFIX)
    {
        return Prepared::HandOff;
    }
    // One pass over the fields: they are checked and the instance's head is written at
    // once (`out` is discarded if the request goes elsewhere).
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut close = false;
    // A field with `_` in its name is dropped unless the service allows them; then the
    // hyper path, which reads the service first, forwards it.
    let mut underscored = false;
    for f in req.headers.iter() {
        if f.name.as_bytes().contains(&b'_') {
            underscored = true;
            continue;
        }
        match Field::of(f.name) {
            Field::Host => {
                if host.replace(f.value).is_some() {
                    return Prepared::HandOff;
                }
            }
            Field::ContentLength => match (length, parse_length(f.value)) {
                (None, Some(n)) => length = Some(n),
                _ => return Prepared::HandOff,
            },
            Field::Connection => {
                for t in tokens(f.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        return Prepared::HandOff;
                    }
                }
                continue;
            }
            Field::Te
            | Field::Upgrade
            | Field::Trailer
            | Field::Expect
            | Field::TransferEncoding => return Prepared::HandOff,
            // Hop-by-hop, or forwarding information the router replaces.
            Field::KeepAlive
            | Field::ProxyConnection
            | Field::ProxyAuthenticate
            | Field::ProxyAuthorization
            | Field::Forwarded
            | Field::XForwardedFor
            | Field::XForwardedHost
            | Field::XForwardedProto => continue,
            Field::Other => {}
        }
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    let body = usize::try_from(length.unwrap_or(0)).unwrap_or(usize::MAX);
    if body > MAX_INLINE_BODY {
        return Prepared::HandOff;
    }
    let Some(host) = host else {
        return Prepared::HandOff;
    };
    let Ok(host_text) = std::str::from_utf8(host) else {
        return Prepared::HandOff;
    };
    let Ok(name) = normalize_host(host_text) else {
        return Prepared::HandOff;
    };
    let consumed = head_len + body;
    if buf.len() < consumed {
        // The body is still coming: hyper streams it, with no header-read deadline on it.
        return Prepared::HandOff;
    }
    let table = router.table.load();
    let Some(entry) = table.lookup(name.as_ref()) else {
        return Prepared::Unrouted {
            consumed,
            close,
            head: method == "HEAD",
        };
    };
    if entry.route.http2
        || (underscored && entry.route.underscores_in_headers)
        || entry.route.https_redirect
        || entry.route.paused
    {
        return Prepared::HandOff;
    }
    let entry = Arc::clone(entry);
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(peer_ip);
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\nx-forwarded-host: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&buf[head_len..consumed]);
    Prepared::Forward(Forward {
        entry,
        consumed,
        close,
        head: method == "HEAD",
        idempotent: crate::pool::is_idempotent(method),
    })
}
