//! What both request paths share (the hyper path in `crate::proxy` and the HTTP/1.1 fast
//! path in `crate::fast`): how header fields are classified, how a request takes a slot
//! (the bounded queue and the cold-start gate), and the count of answers given without a
//! service. Both import this; neither imports the other.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::StatusCode;

use crate::error::ProxyError;
use crate::state::{InFlightGuard, QueueTicket};
use crate::table::ServiceEntry;
use crate::Router;

/// The header fields the router treats specially, recognised by name case-insensitively;
/// one table for both request paths (`crate::proxy` and `crate::fast`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    ProxyAuthenticate,
    ProxyAuthorization,
    Expect,
    Forwarded,
    XForwardedFor,
    XForwardedHost,
    XForwardedProto,
    /// Any other field: end to end, passed on as it is.
    Other,
}

impl Field {
    pub fn of(name: &str) -> Field {
        let is = |s: &str| name.eq_ignore_ascii_case(s);
        // One dispatch on the length, then at most two comparisons.
        match name.len() {
            2 if is("te") => Field::Te,
            4 if is("host") => Field::Host,
            6 if is("expect") => Field::Expect,
            7 if is("upgrade") => Field::Upgrade,
            7 if is("trailer") => Field::Trailer,
            9 if is("forwarded") => Field::Forwarded,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::KeepAlive,
            14 if is("content-length") => Field::ContentLength,
            15 if is("x-forwarded-for") => Field::XForwardedFor,
            16 if is("x-forwarded-host") => Field::XForwardedHost,
            16 if is("proxy-connection") => Field::ProxyConnection,
            17 if is("x-forwarded-proto") => Field::XForwardedProto,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            18 if is("proxy-authenticate") => Field::ProxyAuthenticate,
            19 if is("proxy-authorization") => Field::ProxyAuthorization,
            _ => Field::Other,
        }
    }

    /// The hop-by-hop fields of [`HOP_BY_HOP`].
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::KeepAlive
                | Field::ProxyConnection
                | Field::Te
                | Field::Trailer
                | Field::TransferEncoding
                | Field::Upgrade
                | Field::ProxyAuthenticate
                | Field::ProxyAuthorization
        )
    }
}

/// Take a slot, waiting in the bounded queue or at the cold-start gate if needed.
pub(crate) async fn admit(
    router: &Router,
    mut entry: Arc<ServiceEntry>,
) -> Result<(Arc<ServiceEntry>, InFlightGuard), ProxyError> {
    if let Some(g) = entry.try_acquire() {
        return Ok((entry, g));
    }
    let mut ticket: Option<QueueTicket> = None;
    let mut cold_deadline: Option<tokio::time::Instant> = None;
    let mut queue_deadline: Option<tokio::time::Instant> = None;
    // Each turn either returns or waits for a notification, and the deadlines below bound
    // the total wait, so the loop is bounded in time.
    loop {
        let state = Arc::clone(&entry.state);
        let notified = state.notify.notified();
        tokio::pin!(notified);
        // Register before checking, so a slot freed in between is not missed.
        notified.as_mut().enable();
        let cold = entry.instances.is_empty();
        if !cold {
            if let Some(g) = entry.try_acquire() {
                return Ok((entry, g));
            }
        }
        if cold && cold_deadline.is_none() {
            router.wake(&entry.route.name);
        }
        if ticket.is_none() {
            match QueueTicket::try_new(&state, entry.route.queue_size) {
                Some(t) => ticket = Some(t),
                None if cold => return Err(ProxyError::ColdStartTimeout),
                None => return Err(ProxyError::QueueFull),
            }
        }
        let now = tokio::time::Instant::now();
        let deadline = if cold {
            *cold_deadline.get_or_insert(now + entry.route.cold_start_timeout)
        } else {
            *queue_deadline.get_or_insert(now + entry.route.queue_timeout)
        };
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(if cold {
                ProxyError::ColdStartTimeout
            } else {
                ProxyError::QueueTimeout
            });
        }
        let table = router.table.load();
        entry = match table.services.get(&entry.route.name) {
            Some(e) => Arc::clone(e),
            None => return Err(ProxyError::ServiceGone),
        };
    }
}

/// For the service-less answers' metrics.
pub(crate) fn record_unrouted(router: &Router, status: StatusCode) {
    let idx = usize::from(status == StatusCode::NOT_FOUND);
    router.unrouted[idx].fetch_add(1, Ordering::Relaxed);
}
