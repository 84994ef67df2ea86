//! Custom domain names: what a user may claim for a service, and the records that prove
//! the claim.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A custom domain as claimed: lower case, no final dot; `*.` first for a wildcard.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

/// Why a name cannot be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

impl Domain {
    /// Checks a domain a user typed: at most 253 characters, at least two labels of
    /// letters, digits and inner hyphens (1 to 63 each), a last label that is not all
    /// digits (no IP addresses), optionally `*.` first. Case and a final dot are ignored.
    pub fn parse(input: &str) -> Result<Domain, DomainError> {
        let bad = |why: &str| {
            Err(DomainError(format!(
                "{input:?} is not a domain name: {why}"
            )))
        };
        let s = input.trim().trim_end_matches('.').to_ascii_lowercase();
        if s.is_empty() {
            return bad("it is empty");
        }
        if s.len() > 253 {
            return bad("it is longer than 253 characters");
        }
        let (_, base) = match s.strip_prefix("*.") {
            Some(b) => (true, b),
            None => (false, s.as_str()),
        };
        let labels: Vec<&str> = base.split('.').collect();
        if labels.len() < 2 {
            return bad("it needs at least two labels, like example.com");
        }
        for l in &labels {
            if l.is_empty() || l.len() > 63 {
                return bad("each label is 1 to 63 characters");
            }
            if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return bad("labels hold only letters, digits and hyphens (a wildcard is only `*.` at the start)");
            }
            if l.starts_with('-') || l.ends_with('-') {
                return bad("a label cannot start or end with a hyphen");
            }
        }
        if labels[labels.len() - 1].bytes().all(|b| b.is_ascii_digit()) {
            return bad("an IP address is not a domain");
        }
        Ok(Domain(s))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The name without its `*.`.
    pub fn base(&self) -> &str {
        self.0.trim_start_matches("*.")
    }

    /// An apex (`example.com`: two labels, no wildcard), which cannot be a CNAME and is
    /// pointed at the router by A/AAAA records instead.
    pub fn is_apex(&self) -> bool {
        !self.is_wildcard() && self.0.split('.').count() == 2
    }

    /// Whether `host` is this domain: the name itself, or for a wildcard exactly one
    /// label under its base (as a certificate's wildcard matches).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        if self.is_wildcard() {
            host.len() > self.base().len() + 1
                && host.ends_with(self.base())
                && host.as_bytes()[host.len() - self.base().len() - 1] == b'.'
                && !host[..host.len() - self.base().len() - 1].contains('.')
        } else {
            host.eq_ignore_ascii_case(&self.0)
        }
    }

    /// Where the ownership token goes: `_slipway-challenge.<base>`.
    pub fn token_name(&self) -> String {
        format!("_slipway-challenge.{}", self.base())
    }

    /// True if the name is in `zone` (the platform's own names need no claim).
    pub fn in_zone(&self, zone: &str) -> bool {
        let zone = zone.trim_end_matches('.');
        self.base() == zone || self.base().ends_with(&format!(".{zone}"))
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Domain, DomainError> {
        Domain::parse(&s)
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            Domain::parse("WWW.Example.COM.").unwrap().as_str(),
            "www.example.com"
        );
        let w = Domain::parse("*.apps.example.com").unwrap();
        assert!(w.is_wildcard() && !w.is_apex());
        assert_eq!(w.base(), "apps.example.com");
        assert_eq!(w.token_name(), "_slipway-challenge.apps.example.com");
        assert!(Domain::parse("example.com").unwrap().is_apex());
        for bad in [
            "",
            "com",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "1.2.3.4",
            "a.*.com",
            "*.com",
            "ex ample.com",
            "évil.com",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad}");
        }
        assert!(Domain::parse(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn wildcards_match_one_label() {
        let w = Domain::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("a.b.example.com"));
        assert!(!w.matches("aexample.com"));
        let d = Domain::parse("www.example.com").unwrap();
        assert!(d.matches("WWW.example.com."));
        assert!(!d.matches("x.www.example.com"));
        assert!(Domain::parse("web.slipway.example")
            .unwrap()
            .in_zone("slipway.example"));
        assert!(!Domain::parse("xslipway.example")
            .unwrap()
            .in_zone("slipway.example"));
    }

    proptest! {
        #[test]
        fn any_input_parses_or_is_refused(s in "\\PC{0,80}") {
            if let Ok(d) = Domain::parse(&s) {
                prop_assert!(Domain::parse(d.as_str()).unwrap() == d.clone());
                prop_assert!(d.as_str().len() <= 253);
            }
        }
    }
}
