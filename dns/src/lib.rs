//! Slipway's authoritative DNS server for the platform zone (`<service>.<zone>`), service
//! discovery names and custom-domain verification, on hickory-server.
//!
//! Not built yet: it belongs to the domains-and-TLS issue that follows the core loop. The
//! crate exists so the workspace has the layout of docs/ARCHITECTURE.md and so that DNS
//! stays a separate part that depends only on `slipway-core`. Until then, services answer
//! at `http://<service>.slipway.localhost:<router port>` (most resolvers and curl map
//! `*.localhost` to loopback) or with an explicit `Host` header.

/// The DNS name a service answers at in `zone`.
pub fn service_fqdn(service: &slipway_core::ServiceName, zone: &str) -> String {
    slipway_core::service_host(service.as_str(), zone)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fqdn() {
        let n = slipway_core::ServiceName::parse("web").unwrap();
        assert_eq!(
            super::service_fqdn(&n, "slipway.localhost."),
            "web.slipway.localhost"
        );
    }
}
