//! What can go wrong with one proxied request, and whose fault it was.
//!
//! The status a client sees must tell the truth about where the failure happened: a broken
//! instance is a 502 (or 504 when it is merely slow), a full service is a 503 that says
//! when to come back, and only a malformed request is a 4xx. Answering 400 for an upstream
//! failure (as naive proxies do) sends users and alerts to the wrong place. Each variant
//! therefore carries a [`Fault`], and [`ProxyError::status`] is the one mapping from error
//! to status code.

use http::StatusCode;

/// Which side of the router a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The instance (backend): refused, reset, timed out or sent garbage.
    Upstream,
    /// The client: bad or missing host, or a host nobody serves.
    Downstream,
    /// The router itself: its queues are full, the wait for capacity or a cold start ran
    /// out, or the service went away while the request waited.
    Internal,
}

/// A request the router answered itself instead of with an instance's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No `Host` header and no authority in the URI, or one that does not parse.
    #[error("missing or invalid host: {0}")]
    BadHost(&'static str),
    /// No service is routed at this host.
    #[error("no service at this host")]
    UnknownHost,
    /// The request's framing is ambiguous: a `Transfer-Encoding` that is not exactly one
    /// `chunked` coding (RFC 9112 §6.1). The connection is closed after the answer.
    #[error("ambiguous request framing: {0}")]
    BadFraming(&'static str),
    /// A transfer coding the router does not implement (RFC 9112 §6.1: 501).
    #[error("unknown transfer coding")]
    UnknownCoding,
    /// The request head is larger than `RouterConfig::max_header_bytes`.
    #[error("request head too large")]
    HeadTooLarge,
    /// Every instance is at its concurrency limit and the wait queue is full.
    #[error("service at capacity and its queue is full")]
    QueueFull,
    /// Waited `queue_timeout` for a free slot without getting one.
    #[error("timed out waiting for a free instance slot")]
    QueueTimeout,
    /// The service had no instance for `cold_start_timeout`.
    #[error("no instance became ready within the cold start timeout")]
    ColdStartTimeout,
    /// The service was removed while the request waited for it.
    #[error("service was removed while the request waited")]
    ServiceGone,
    /// The service switched to h2c while the request waited for a slot; the HTTP/1.1
    /// fast path cannot forward it, and a retry takes the HTTP/2 path.
    #[error("service changed protocol while the request waited")]
    ServiceChanged,
    /// Could not open a connection to the instance.
    #[error("connect to instance failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The instance failed before sending complete response headers (reset, closed,
    /// malformed or oversized head).
    #[error("instance failed before response headers: {0}")]
    Upstream(#[source] hyper::Error),
    /// The same, seen by the HTTP/1.1 fast path: the instance's connection failed or
    /// closed before a complete response head.
    #[error("instance connection failed before response headers: {0}")]
    UpstreamIo(#[source] std::io::Error),
    /// The instance's response head was malformed, oversized, or framed in a way that
    /// cannot be trusted.
    #[error("instance sent an invalid response: {0}")]
    BadResponse(&'static str),
    /// The instance answered an upgrade in a way that cannot be tunnelled.
    #[error("instance sent an unusable upgrade response")]
    BadUpgrade,
    /// No response headers within `request_timeout`.
    #[error("instance did not answer within the request timeout")]
    UpstreamTimeout,
}

impl ProxyError {
    /// Whose fault this was.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::BadHost(_)
            | ProxyError::UnknownHost
            | ProxyError::BadFraming(_)
            | ProxyError::UnknownCoding
            | ProxyError::HeadTooLarge => Fault::Downstream,
            ProxyError::QueueFull
            | ProxyError::QueueTimeout
            | ProxyError::ColdStartTimeout
            | ProxyError::ServiceGone
            | ProxyError::ServiceChanged => Fault::Internal,
            ProxyError::Connect(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamIo(_)
            | ProxyError::BadResponse(_)
            | ProxyError::BadUpgrade
            | ProxyError::UpstreamTimeout => Fault::Upstream,
        }
    }

    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadHost(_) | ProxyError::BadFraming(_) => StatusCode::BAD_REQUEST,
            ProxyError::UnknownHost => StatusCode::NOT_FOUND,
            ProxyError::UnknownCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::QueueFull
            | ProxyError::QueueTimeout
            | ProxyError::ColdStartTimeout
            | ProxyError::ServiceGone
            | ProxyError::ServiceChanged => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamIo(_)
            | ProxyError::BadResponse(_)
            | ProxyError::BadUpgrade => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whether the connection must close after this answer: the request's framing cannot
    /// be trusted, so neither can anything after it on the connection.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            ProxyError::BadFraming(_) | ProxyError::UnknownCoding | ProxyError::HeadTooLarge
        )
    }

    /// Seconds to put in `Retry-After`, for the answers where retrying later helps.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ProxyError::QueueFull
            | ProxyError::QueueTimeout
            | ProxyError::ServiceGone
            | ProxyError::ServiceChanged => Some(1),
            ProxyError::ColdStartTimeout => Some(5),
            _ => None,
        }
    }

    /// The short plain-text body of the router's own answer.
    pub(crate) fn body(&self) -> &'static str {
        match self {
            ProxyError::BadHost(_) => "slipway: missing or invalid Host\n",
            ProxyError::UnknownHost => "slipway: no service at this host\n",
            ProxyError::BadFraming(_) => "slipway: ambiguous request framing\n",
            ProxyError::UnknownCoding => "slipway: unknown transfer coding\n",
            ProxyError::HeadTooLarge => "slipway: request head too large\n",
            ProxyError::QueueFull => "slipway: service at capacity, queue full\n",
            ProxyError::QueueTimeout => "slipway: service at capacity, timed out in queue\n",
            ProxyError::ColdStartTimeout => "slipway: service is starting, try again\n",
            ProxyError::ServiceGone => "slipway: service was removed\n",
            ProxyError::ServiceChanged => "slipway: service changed, try again\n",
            ProxyError::Connect(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamIo(_)
            | ProxyError::BadResponse(_)
            | ProxyError::BadUpgrade => "slipway: bad gateway\n",
            ProxyError::UpstreamTimeout => "slipway: gateway timeout\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_are_never_4xx() {
        let errs = [
            ProxyError::Connect(std::io::Error::other("x")),
            ProxyError::UpstreamIo(std::io::Error::other("x")),
            ProxyError::BadResponse("x"),
            ProxyError::BadUpgrade,
            ProxyError::UpstreamTimeout,
        ];
        for e in errs {
            assert_eq!(e.fault(), Fault::Upstream);
            assert!(e.status().is_server_error(), "{e}");
        }
        assert_eq!(
            ProxyError::QueueFull.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(ProxyError::QueueFull.retry_after().is_some());
        assert_eq!(ProxyError::UnknownHost.status(), StatusCode::NOT_FOUND);
    }
}
