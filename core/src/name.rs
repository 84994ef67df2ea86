//! Service names. A name becomes a DNS label (`<name>.<zone>`), a Docker label value, a
//! git repository path and an image tag, so it follows the strictest of those: RFC 1123
//! labels in lower case.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Names the platform keeps for itself (the console and API hosts).
pub const RESERVED: &[&str] = &["api", "console", "git", "www"];

/// A validated service name: 1 to 63 characters of `a-z`, `0-9` and `-`, starting with a
/// letter and not ending with `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct ServiceName(String);

/// Why a service name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("a service name cannot be empty")]
    Empty,
    /// The name is longer than a DNS label allows.
    #[error("service name {0:?} is longer than 63 characters")]
    TooLong(String),
    /// The name has a character outside `a-z0-9-`.
    #[error("service name {name:?} has {ch:?}: use lower-case letters, digits and '-' only")]
    BadChar {
        /// The refused name.
        name: String,
        /// The first character that is not allowed.
        ch: char,
    },
    /// The name does not start with a letter.
    #[error("service name {0:?} must start with a lower-case letter")]
    BadStart(String),
    /// The name ends with a hyphen.
    #[error("service name {0:?} must not end with '-'")]
    BadEnd(String),
    /// The platform uses this name itself.
    #[error("service name {0:?} is reserved by the platform")]
    Reserved(String),
}

impl ServiceName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > 63 {
            return Err(NameError::TooLong(name.to_string()));
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar {
                name: name.to_string(),
                ch,
            });
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(NameError::BadStart(name.to_string()));
        }
        if name.ends_with('-') {
            return Err(NameError::BadEnd(name.to_string()));
        }
        if RESERVED.contains(&name) {
            return Err(NameError::Reserved(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The host a service answers at in the platform zone: `<service>.<zone>`, lowercase,
/// without the zone's trailing dot. The router, the API and DNS all use this one rule.
pub fn service_host(service: &str, zone: &str) -> String {
    format!("{service}.{}", zone.trim_end_matches('.')).to_ascii_lowercase()
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ServiceName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for ServiceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web", "my-app-2", &"a".repeat(63)] {
            assert_eq!(ServiceName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_bad_names_with_reasons() {
        assert_eq!(ServiceName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            ServiceName::parse(&"a".repeat(64)),
            Err(NameError::TooLong(_))
        ));
        assert!(matches!(
            ServiceName::parse("My-App"),
            Err(NameError::BadChar { ch: 'M', .. })
        ));
        assert!(matches!(
            ServiceName::parse("a_b"),
            Err(NameError::BadChar { ch: '_', .. })
        ));
        assert!(matches!(
            ServiceName::parse("a.b"),
            Err(NameError::BadChar { ch: '.', .. })
        ));
        assert!(matches!(
            ServiceName::parse("1abc"),
            Err(NameError::BadStart(_))
        ));
        assert!(matches!(
            ServiceName::parse("-abc"),
            Err(NameError::BadStart(_))
        ));
        assert!(matches!(
            ServiceName::parse("abc-"),
            Err(NameError::BadEnd(_))
        ));
        assert!(matches!(
            ServiceName::parse("console"),
            Err(NameError::Reserved(_))
        ));
        let msg = ServiceName::parse("a b").unwrap_err().to_string();
        assert!(msg.contains("lower-case letters"), "{msg}");
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<ServiceName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<ServiceName>("\"../etc\"").is_err());
    }

    proptest! {
        #[test]
        fn every_accepted_name_is_a_dns_label(s in "\\PC{0,70}") {
            if let Ok(n) = ServiceName::parse(&s) {
                let n = n.as_str();
                prop_assert!(!n.is_empty() && n.len() <= 63);
                prop_assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(!n.starts_with('-') && !n.ends_with('-'));
            }
        }

        #[test]
        fn well_formed_labels_are_accepted(s in "[a-z][a-z0-9-]{0,61}[a-z0-9]") {
            prop_assume!(!RESERVED.contains(&s.as_str()));
            prop_assert!(ServiceName::parse(&s).is_ok());
        }
    }
}

/// The name of `service`'s preview of `branch`: `<branch-slug>--<service>`, at most 63
/// characters and starting with a letter. A slug that must be cut ends in a short hash
/// of the branch name. Two branches with the same slug (`a/b`, `a-b`) get the same name:
/// the platform refuses the second one.
pub fn preview_name(branch: &str, service: &str) -> Result<ServiceName, NameError> {
    let mut slug = String::new();
    for c in branch.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut slug = slug.trim_matches('-').to_string();
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug.insert_str(0, "b-");
    }
    // FNV-1a: stable across releases and machines.
    let hash = branch.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let suffix = format!("-{:06x}", hash & 0xff_ffff);
    let room = 63usize.saturating_sub(service.len() + 2);
    if slug.len() > room {
        let keep = room.saturating_sub(suffix.len());
        slug.truncate(keep);
        let slug_trim = slug.trim_end_matches('-').to_string();
        slug = format!("{slug_trim}{suffix}");
        if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(NameError::TooLong(format!("{branch}--{service}")));
        }
    }
    ServiceName::parse(&format!("{slug}--{service}"))
}

#[cfg(test)]
mod preview_tests {
    use super::*;

    #[test]
    fn preview_names() {
        assert_eq!(preview_name("login", "web").unwrap().as_str(), "login--web");
        let n = preview_name("feature/Login_Page", "web").unwrap();
        assert_eq!(n.as_str(), "feature-login-page--web");
        assert_eq!(n, preview_name("feature/login-page", "web").unwrap());
        let long = preview_name(&format!("feature/{}", "x".repeat(200)), "web").unwrap();
        assert!(long.as_str().len() <= 63, "{long}");
        assert_ne!(
            long,
            preview_name(&format!("feature/{}y", "x".repeat(200)), "web").unwrap()
        );
        assert!(preview_name("123", "web")
            .unwrap()
            .as_str()
            .starts_with("b-123"));
    }

    proptest::proptest! {
        #[test]
        fn any_branch_gets_a_valid_name_or_an_error(branch in "\\PC{0,120}", service in "[a-z][a-z0-9-]{0,40}[a-z0-9]") {
            if let Ok(n) = preview_name(&branch, &service) {
                proptest::prop_assert!(n.as_str().len() <= 63);
                let tail = format!("--{}", service);
                proptest::prop_assert!(n.as_str().ends_with(&tail));
            }
        }
    }
}
