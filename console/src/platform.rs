//! The platform's operations, as the API's handlers call them: each validates, changes
//! the store, and wakes the part that acts (the builder or the deployer). Handlers only
//! turn HTTP into these calls and a [`PlatformError`] into a status; nothing here knows
//! HTTP.

use std::sync::Arc;

use slipway_builder::{Builder, SourceError};
use slipway_core::{
    DeploymentKind, EventKind, NameError, ServiceName, ServiceSpec, Source, SpecError,
};
use slipway_deployer::{Deployer, InstanceCounts};
use slipway_store::{DeploymentRow, RevisionRow, ServiceRow, Store, StoreError};

/// Why an operation was refused or failed. Each variant says what the caller must change;
/// only [`PlatformError::Store`], [`PlatformError::Runtime`] and
/// [`PlatformError::Repository`] are the platform's fault.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A service name that is not a valid name.
    #[error(transparent)]
    BadName(#[from] NameError),
    /// A spec with an invalid value.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// No such service.
    #[error("no service named {0}")]
    NoService(String),
    /// A service of that name exists.
    #[error("service {0} already exists")]
    Exists(String),
    /// Something named in the request does not exist (a revision).
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the service's state (no revision to roll back to, a git
    /// service asked to deploy an image, nothing pushed yet).
    #[error("{0}")]
    Conflict(String),
    /// The request names something the engine does not have (an image).
    #[error("{0}")]
    Unusable(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The engine failed.
    #[error(transparent)]
    Runtime(#[from] slipway_runtime::RuntimeError),
    /// A domain name that cannot be claimed.
    #[error("{0}")]
    BadDomain(String),
    /// The service's git repository could not be made or read.
    #[error("the service's git repository: {0}")]
    Repository(#[source] std::io::Error),
}

impl From<StoreError> for PlatformError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(n) => PlatformError::Exists(n),
            StoreError::NoService(n) => PlatformError::NoService(n),
            e => PlatformError::Store(e),
        }
    }
}

impl From<SourceError> for PlatformError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::NoSuchImage(_) => PlatformError::Unusable(e.to_string()),
            SourceError::WrongSource(m) => PlatformError::Conflict(m),
            SourceError::Store(e) => e.into(),
            SourceError::Runtime(e) => PlatformError::Runtime(e),
            SourceError::Git(e) => PlatformError::Repository(e),
            SourceError::Fetch(m) => PlatformError::Unusable(m),
        }
    }
}

/// Result alias.
pub type Result<T, E = PlatformError> = std::result::Result<T, E>;

/// What `deploy` started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    /// A build of a git service's branch head.
    Build {
        /// The build's id.
        build: i64,
        /// The commit it builds.
        commit: String,
    },
    /// A new revision of an image service.
    Revision(i64),
}

/// What a rollback started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// The revision it deploys again.
    pub revision: i64,
    /// The deployment that does it.
    pub deployment: i64,
}

/// The parts of the platform the operations use.
#[derive(Clone)]
pub struct Platform {
    /// The store.
    pub store: Arc<Store>,
    /// The builder.
    pub builder: Arc<Builder>,
    /// The deployer.
    pub deployer: Arc<Deployer>,
    /// Custom domains and what DNS and the router serve.
    pub names: Arc<crate::names::Names>,
}

impl Platform {
    /// A service by name.
    pub fn service(&self, name: &str) -> Result<ServiceRow> {
        let name = ServiceName::parse(name)?;
        self.store
            .service(name.as_str())?
            .ok_or_else(|| PlatformError::NoService(name.to_string()))
    }

    /// Creates a service; for an image source, deploys the image at once. Nothing of a
    /// service whose creation fails is left behind.
    pub async fn create_service(&self, spec: ServiceSpec) -> Result<ServiceRow> {
        spec.validate()?;
        if spec.preview_of.is_some() {
            return Err(preview_of_is_ours().into());
        }
        self.builder.check_source(&spec)?;
        self.store.create_service(&spec)?;
        let name = spec.name.to_string();
        self.note(&name, EventKind::Service, "service created");
        let made = async {
            self.builder
                .prepare(&spec)
                .await
                .map_err(PlatformError::Repository)?;
            if let Source::Image { .. } = spec.source {
                self.builder.deploy_image(&spec).await?;
            }
            Ok::<_, PlatformError>(())
        }
        .await;
        if let Err(e) = made {
            self.undo_create(&name).await;
            return Err(e);
        }
        self.deployer.wake(&name);
        self.service(&name)
    }

    async fn undo_create(&self, name: &str) {
        match self.store.delete_service(name) {
            Ok(_) => {}
            Err(e) => tracing::error!(service = name, "store: undoing a failed create: {e}"),
        }
        self.builder.forget(name).await;
    }

    /// Deletes a service: its record at once, then its instances, routes and repository;
    /// and its previews, which build from that repository and use its secrets.
    pub async fn delete_service(&self, name: &str) -> Result<()> {
        let row = self.service(name)?;
        let name = row.spec.name.as_str();
        let previews: Vec<String> = self
            .store
            .snapshot()
            .services()
            .filter(|r| r.spec.preview_of.as_deref() == Some(name))
            .map(|r| r.spec.name.to_string())
            .collect();
        self.delete_one(name).await?;
        for p in previews {
            match self.delete_one(&p).await {
                Ok(()) | Err(PlatformError::NoService(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn delete_one(&self, name: &str) -> Result<()> {
        let row = self.service(name)?;
        let name = row.spec.name.as_str();
        let domains = self.store.domains(name)?;
        self.store.delete_service(name)?;
        // Its domains go with it: certificates, keys, published records.
        for d in &domains {
            self.names.forget(&d.domain);
        }
        self.deployer.remove(name).await;
        self.builder.forget(name).await;
        Ok(())
    }

    /// Changes a service's settings with a JSON merge patch (RFC 7386: a key set to
    /// `null` is removed, objects merge, anything else replaces). Everything but the name
    /// may change; the result is validated as a whole. A change of what an instance runs
    /// with (env, port, CPU, memory) is a new revision of the current image, deployed
    /// blue/green; the rest (scaling, network, health checks, source settings) applies to
    /// the running service. Returns the service and the new revision, if one was made.
    pub async fn update_service(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<(ServiceRow, Option<i64>)> {
        let row = self.service(name)?;
        let name = row.spec.name.to_string();
        let serde_json::Value::Object(fields) = patch else {
            return Err(SpecError {
                field: "body".into(),
                message: "a JSON object of the settings to change".into(),
            }
            .into());
        };
        if let Some(n) = fields.get("name") {
            if n.as_str() != Some(name.as_str()) {
                return Err(SpecError {
                    field: "name".into(),
                    message: "a service's name cannot change (create another service)".into(),
                }
                .into());
            }
        }
        let mut value = serde_json::to_value(&row.spec)
            .map_err(|e| PlatformError::Store(StoreError::Spec(e)))?;
        merge_patch(&mut value, patch);
        let spec: ServiceSpec = serde_path_to_error::deserialize(value).map_err(|e| {
            let message = e.inner().to_string();
            SpecError {
                field: error_field(&e.path().to_string(), &message)
                    .unwrap_or_else(|| "body".into()),
                message,
            }
        })?;
        spec.validate()?;
        if spec.preview_of != row.spec.preview_of {
            return Err(preview_of_is_ours().into());
        }
        if spec == row.spec {
            return Ok((row, None));
        }
        let old = &row.spec;
        let mut changed: Vec<&str> = Vec::new();
        let runs = [
            ("env", old.env != spec.env),
            ("port", old.port != spec.port),
            ("cpu", old.cpu != spec.cpu),
            ("memory", old.memory != spec.memory),
        ];
        for (f, c) in runs {
            if c {
                changed.push(f);
            }
        }
        let revision_needed = !changed.is_empty();
        let live = [
            ("scaling", old.scaling != spec.scaling),
            ("network", old.network != spec.network),
            ("health_check", old.health_check != spec.health_check),
            ("source", old.source != spec.source),
        ];
        for (f, c) in live {
            if c {
                changed.push(f);
            }
        }
        if changed.is_empty() {
            changed.push("settings");
        }
        self.store.update_spec(&spec)?;
        let what = changed.join(", ");
        self.note(
            &name,
            EventKind::Service,
            &format!("settings changed: {what}"),
        );
        let revision = if revision_needed {
            self.builder
                .redeploy_config(
                    &name,
                    &format!("settings changed ({what})"),
                    old.port == spec.port,
                )
                .await
                .map_err(PlatformError::from)?
        } else {
            self.deployer.wake(&name);
            None
        };
        let row = self.service(&name)?;
        Ok((row, revision))
    }

    /// Pauses a service: its instances drain and go, and requests get a 503 page saying
    /// it is paused until it is resumed. Pausing a paused service changes nothing.
    pub fn pause(&self, name: &str) -> Result<bool> {
        let row = self.service(name)?;
        let name = row.spec.name.as_str();
        if row.paused {
            return Ok(false);
        }
        self.store.set_paused(name, true)?;
        self.note(
            name,
            EventKind::Service,
            "paused: its instances drain and stop; requests get 503 until it is resumed",
        );
        self.deployer.wake(name);
        Ok(true)
    }

    /// Resumes a paused service: its active revision starts again (and a deployment that
    /// arrived meanwhile runs).
    pub fn resume(&self, name: &str) -> Result<bool> {
        let row = self.service(name)?;
        let name = row.spec.name.as_str();
        if !row.paused {
            return Ok(false);
        }
        self.store.set_paused(name, false)?;
        let what = match row.active_revision {
            Some(r) => format!("resumed: revision {r} starts again"),
            None => "resumed".to_string(),
        };
        self.note(name, EventKind::Service, &what);
        self.deployer.wake(name);
        Ok(true)
    }

    /// Claims `domain` for a service, pending until its records verify; returns the
    /// records to create. Claiming it again returns the same claim (and token).
    pub fn add_domain(&self, name: &str, domain: &str) -> Result<crate::names::DomainView> {
        let row = self.service(name)?;
        let service = row.spec.name.as_str();
        let d = slipway_core::Domain::parse(domain).map_err(|e| PlatformError::BadDomain(e.0))?;
        let zone = &self.names.config().zone;
        if d.in_zone(zone) {
            return Err(PlatformError::BadDomain(format!(
                "{d} is in the platform zone {zone}: the service already answers at {}",
                slipway_core::service_host(service, zone)
            )));
        }
        let row = self
            .store
            .claim_domain(service, &d, &new_token())
            .map_err(|e| match e {
                StoreError::Claimed { domain, service } => PlatformError::Conflict(format!(
                    "{domain} is claimed by service {service}: remove it there first"
                )),
                e => e.into(),
            })?;
        self.store.event(
            service,
            EventKind::Domain,
            &format!("domain {d} claimed: pending until its records verify"),
        )?;
        self.names.check_now();
        Ok(self.names.view(&row))
    }

    /// A service's domains.
    pub fn domains(&self, name: &str) -> Result<Vec<crate::names::DomainView>> {
        let row = self.service(name)?;
        Ok(self
            .store
            .domains(row.spec.name.as_str())?
            .iter()
            .map(|d| self.names.view(d))
            .collect())
    }

    /// Removes a service's domain: the router stops serving it at once, and its
    /// certificate and key are deleted.
    pub fn remove_domain(&self, name: &str, domain: &str) -> Result<()> {
        let row = self.service(name)?;
        let service = row.spec.name.as_str();
        let d = slipway_core::Domain::parse(domain).map_err(|e| PlatformError::BadDomain(e.0))?;
        if !self.store.release_domain(service, &d)? {
            return Err(PlatformError::NotFound(format!(
                "service {service} has no domain {d}"
            )));
        }
        self.names.forget(&d);
        self.store
            .event(service, EventKind::Domain, &format!("domain {d} removed"))?;
        Ok(())
    }

    /// Deploys again: a git service builds its branch head (whatever became of its last
    /// build); an image service records the image as it is now.
    pub async fn deploy(&self, name: &str) -> Result<Deployed> {
        let row = self.service(name)?;
        if let Source::Git { .. } = row.spec.source {
            let (build, commit) = self.builder.deploy_head(&row.spec).await?;
            return Ok(Deployed::Build { build, commit });
        }
        Ok(Deployed::Revision(
            self.builder.deploy_image(&row.spec).await?,
        ))
    }

    /// Deploys a kept revision again: `revision`, or the newest one older than the
    /// active revision.
    pub fn rollback(&self, name: &str, revision: Option<i64>) -> Result<RolledBack> {
        let row = self.service(name)?;
        let name = row.spec.name.as_str();
        let revs = self.store.revisions(name)?;
        let target = rollback_target(name, &revs, row.active_revision, revision)?;
        let deployment = self
            .store
            .deploy_revision(name, target, DeploymentKind::Rollback)?;
        self.note(
            name,
            EventKind::Deployment,
            &format!("rollback to revision {target} requested (deployment {deployment})"),
        );
        self.deployer.wake(name);
        Ok(RolledBack {
            revision: target,
            deployment,
        })
    }

    /// Sets a secret (its value never comes back out of the API) and deploys the
    /// service's image again with it, blue/green. Returns the new revision, if the service
    /// had one to redeploy.
    pub async fn set_secret(&self, name: &str, key: &str, value: &str) -> Result<Option<i64>> {
        let row = self.service(name)?;
        let name = row.spec.name.as_str();
        slipway_core::secret_name(key)?;
        if value.contains('\0') || value.len() > 32 * 1024 {
            return Err(SpecError::new(
                "value",
                format!("the value of secret {key} is not valid (NUL byte or over 32 KiB)"),
            )
            .into());
        }
        let replaced = self.store.set_secret(name, key, value)?;
        let what = if replaced { "changed" } else { "set" };
        Ok(self
            .builder
            .redeploy(name, &format!("secret {key} {what}"))
            .await?)
    }

    /// Removes a secret and deploys the service again without it.
    pub async fn unset_secret(&self, name: &str, key: &str) -> Result<Option<i64>> {
        let row = self.service(name)?;
        let name = row.spec.name.as_str();
        if !self.store.unset_secret(name, key)? {
            return Err(PlatformError::NotFound(format!(
                "service {name} has no secret named {key}"
            )));
        }
        Ok(self
            .builder
            .redeploy(name, &format!("secret {key} removed"))
            .await?)
    }

    /// A service's secrets: names and when they were set.
    pub fn secrets(&self, name: &str) -> Result<Vec<slipway_store::SecretRow>> {
        let row = self.service(name)?;
        Ok(self.store.secrets(row.spec.name.as_str())?)
    }

    /// What a service is doing, in a few words, and its instances.
    pub fn status(
        &self,
        row: &ServiceRow,
    ) -> Result<(String, InstanceCounts, Option<DeploymentRow>)> {
        let name = row.spec.name.as_str();
        let latest = self.store.deployments(name, 1)?.into_iter().next();
        let counts = self.deployer.counts().remove(name).unwrap_or_default();
        Ok(status_of(row, counts, latest))
    }

    /// [`Platform::status`] of every service, with one read of the store and of the
    /// instance counts for all of them (not one per service).
    pub fn statuses(&self, rows: Vec<ServiceRow>) -> Result<Vec<(ServiceRow, Status)>> {
        let mut latest = self.store.latest_deployments()?;
        let mut counts = self.deployer.counts();
        Ok(rows
            .into_iter()
            .map(|row| {
                let name = row.spec.name.as_str();
                let (c, d) = (counts.remove(name).unwrap_or_default(), latest.remove(name));
                let status = status_of(&row, c, d);
                (row, status)
            })
            .collect())
    }

    fn note(&self, service: &str, kind: EventKind, msg: &str) {
        if let Err(e) = self.store.event(service, kind, msg) {
            tracing::warn!(service, "store: {e}");
        }
    }
}

/// What a service is doing in a few words, its instance counts and its newest
/// deployment.
pub type Status = (String, InstanceCounts, Option<DeploymentRow>);

/// What a service is doing, in a few words, from its row, its instance counts and its
/// newest deployment.
fn status_of(row: &ServiceRow, counts: InstanceCounts, latest: Option<DeploymentRow>) -> Status {
    let status = match (&latest, row.active_revision) {
        _ if row.paused => "paused".into(),
        (Some(d), _) if !d.state.is_terminal() => format!("deploying ({})", d.state),
        (_, None) => match &row.spec.source {
            Source::Git { .. } => "waiting for a push".into(),
            Source::Image { .. } => "no revision yet".into(),
        },
        (_, Some(_)) if counts.ready > 0 => "running".into(),
        // Scale to zero's warm idle state (`idle_mode: pause`), not a paused service.
        (_, Some(_)) if counts.paused > 0 => "idle (warm)".into(),
        (_, Some(_)) => "scaled to zero".into(),
    };
    (status, counts, latest)
}

/// The revision a rollback deploys: `wanted` if it is kept, otherwise the newest kept
/// revision older than `active`.
pub fn rollback_target(
    name: &str,
    revs: &[RevisionRow],
    active: Option<i64>,
    wanted: Option<i64>,
) -> Result<i64> {
    match wanted {
        Some(n) => revs
            .iter()
            .find(|r| r.number == n)
            .map(|r| r.number)
            .ok_or_else(|| {
                let have: Vec<String> = revs.iter().map(|r| r.number.to_string()).collect();
                PlatformError::NotFound(format!(
                    "service {name} has no revision {n} (kept revisions: {})",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ))
            }),
        None => {
            let active = active.ok_or_else(|| {
                PlatformError::Conflict(format!(
                    "service {name} has no active revision to roll back from"
                ))
            })?;
            revs.iter()
                .filter(|r| r.number < active)
                .map(|r| r.number)
                .max()
                .ok_or_else(|| {
                    PlatformError::Conflict(format!(
                        "service {name} has no revision older than {active}"
                    ))
                })
        }
    }
}

/// `preview_of` is Slipway's: it links a preview to the service whose repository and
/// secrets it uses, so no request may set or change it.
fn preview_of_is_ours() -> SpecError {
    SpecError {
        field: "preview_of".into(),
        message: "set by Slipway on the previews it makes; a request cannot set or change it"
            .into(),
    }
}

/// RFC 7386 JSON merge patch of `target` by `patch`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The dotted field a deserialization error is about: its path (`scaling.min_size`, and
/// for an unknown field the field itself), or for an error at the top the unknown field
/// its message names; None otherwise.
pub fn error_field(path: &str, message: &str) -> Option<String> {
    let path = path.trim_matches('.');
    if !path.is_empty() {
        return Some(path.to_string());
    }
    message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
        .filter(|f| !f.is_empty())
        .map(str::to_string)
}

/// A fresh ownership token: 128 bits from the OS's CSPRNG, as hex.
fn new_token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: i64) -> RevisionRow {
        RevisionRow {
            service: "web".into(),
            number: n,
            image: format!("sha256:{n}"),
            tag: format!("t{n}"),
            commit: None,
            created_ms: 0,
            served: true,
            spec: None,
        }
    }

    #[test]
    fn rollback_targets() {
        let revs = [rev(5), rev(3), rev(2)];
        assert_eq!(rollback_target("web", &revs, Some(5), None).unwrap(), 3);
        assert_eq!(rollback_target("web", &revs, Some(5), Some(2)).unwrap(), 2);
        let e = rollback_target("web", &revs, Some(5), Some(4)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service web has no revision 4 (kept revisions: 5, 3, 2)"
        );
        assert!(matches!(e, PlatformError::NotFound(_)));
        assert!(matches!(
            rollback_target("web", &revs, Some(2), None),
            Err(PlatformError::Conflict(_))
        ));
        assert!(matches!(
            rollback_target("web", &revs, None, None),
            Err(PlatformError::Conflict(_))
        ));
        assert!(rollback_target("web", &[], Some(1), Some(1))
            .unwrap_err()
            .to_string()
            .contains("kept revisions: none"));
    }
}
