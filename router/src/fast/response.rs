//! Reading an instance's response head and writing the client's, and the router's own
//! answers as HTTP/1.1 bytes.

use super::*;

/// How the instance frames its response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the instance closes the connection.
    Close,
}

/// The instance's response head, turned into the client's.
pub(super) struct ResponseHead {
    pub(super) status: u16,
    pub(super) framing: Framing,
    /// The instance connection may carry another request afterwards.
    pub(super) reusable: bool,
}

/// What the front of an instance connection's buffer holds.
pub(super) enum Parsed {
    Partial,
    /// A 1xx other than 101, this long: skipped (never forwarded, as hyper's client does).
    Informational(usize),
    /// 101 to a request that asked for no upgrade.
    SwitchingProtocols,
    Invalid(&'static str),
    Complete(usize, ResponseHead),
}

/// Parse the response head at the front of `buf` and write the client's version of it
/// into `out`: hop-by-hop fields and whatever the instance's `Connection` names removed,
/// framing fields set by what the router will send.
pub(super) fn parse_response(
    buf: &[u8],
    head: bool,
    client_close: bool,
    out: &mut Vec<u8>,
) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid("too many header fields"),
        Err(_) => return Parsed::Invalid("malformed head"),
    };
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Parsed::Invalid("malformed status line");
    };
    if code < 100 {
        return Parsed::Invalid("status code below 100");
    }
    if code == 101 {
        return Parsed::SwitchingProtocols;
    }
    if (100..200).contains(&code) {
        return Parsed::Informational(head_len);
    }
    let mut reusable = version == 1;
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut named = false;
    for f in resp.headers.iter() {
        match Field::of(f.name) {
            Field::Connection => {
                for t in tokens(f.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        reusable = false;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        named = true;
                    }
                }
            }
            Field::ContentLength => match (length, parse_length(f.value)) {
                (_, None) => return Parsed::Invalid("invalid Content-Length"),
                (Some(a), Some(b)) if a != b => {
                    return Parsed::Invalid("conflicting Content-Length values")
                }
                (_, n) => length = n,
            },
            Field::TransferEncoding => {
                // The last coding decides: chunked last frames the body, anything else
                // leaves it delimited by the close (RFC 9112 §6.3).
                if let Some(last) = tokens(f.value).last() {
                    chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
                }
            }
            _ => {}
        }
    }
    if chunked.is_some() && version == 0 {
        return Parsed::Invalid("Transfer-Encoding in an HTTP/1.0 response");
    }
    if chunked.is_some() && length.is_some() {
        // A length beside Transfer-Encoding is a lie or an attack: it is dropped and the
        // connection's framing no longer trusted, body or not.
        reusable = false;
    }
    let bodiless = head || code == 204 || code == 304;
    let framing = if bodiless {
        Framing::None
    } else if let Some(chunked) = chunked {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    if framing == Framing::Close {
        reusable = false;
    }
    // Fields the instance's Connection header names are its hop-by-hop fields too.
    let connection_named: Vec<&[u8]> = if named {
        resp.headers
            .iter()
            .filter(|f| Field::of(f.name) == Field::Connection)
            .flat_map(|f| tokens(f.value))
            .collect()
    } else {
        Vec::new()
    };

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for f in resp.headers.iter() {
        // Framing fields are never copied: the router writes its own below, from the
        // framing it will use (so `Connection` naming them cannot unframe a response).
        let field = Field::of(f.name);
        if field.is_hop_by_hop()
            || field == Field::ContentLength
            || connection_named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(f.name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    match (framing, length) {
        (Framing::Length(n), _) => content_length(out, n),
        // A bodiless answer to HEAD, or a 304, tells the length a GET would have had
        // (RFC 9110 §8.6); a 204 has none.
        (Framing::None, Some(n)) if chunked.is_none() && code != 204 => content_length(out, n),
        (Framing::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if client_close || framing == Framing::Close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Complete(
        head_len,
        ResponseHead {
            status: code,
            framing,
            reusable,
        },
    )
}

pub(super) fn content_length(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "content-length: {n}\r\n");
}

/// The router's own answer, as HTTP/1.1 bytes: the same as `proxy::error_response`. A
/// response to `HEAD` has the length but not the body.
pub(super) fn local_response(out: &mut Vec<u8>, e: &ProxyError, close: bool, head: bool) {
    use std::io::Write as _;
    out.clear();
    let status = e.status();
    let body = e.body();
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(secs) = e.retry_after() {
        let _ = write!(out, "retry-after: {secs}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
}
