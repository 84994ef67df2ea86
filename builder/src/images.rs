//! Image-tag watching: a service whose source is an image deploys when its tag moves.
//! On the local engine the engine's tag events say so; on an OCI registry the manifest
//! digest is polled ([`crate::registry`]: `HEAD /v2/<name>/manifests/<tag>` over HTTPS,
//! anonymously or with basic or bearer credentials), and a new digest is pulled and deployed. A tag that moved to the
//! image already deployed deploys nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use slipway_core::{EventKind, ServiceSpec, Source};

use crate::{Builder, SourceError};

/// An image reference split for the registry API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]`.
    pub host: String,
    /// The repository path (`team/app`).
    pub name: String,
    /// The tag (default `latest`).
    pub tag: String,
}

/// The registry part of `image`, when it names one (`127.0.0.1:5000/app:v1`,
/// `registry.example.com/team/app`); None for an image of the local engine or Docker
/// Hub's short names (`busybox:latest`). A digest reference (`@sha256:`) never moves.
pub fn registry_ref(image: &str) -> Option<RegistryRef> {
    if image.contains('@') {
        return None;
    }
    let (first, rest) = image.split_once('/')?;
    if !(first.contains('.') || first.contains(':') || first == "localhost") {
        return None;
    }
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (rest, "latest"),
    };
    if name.is_empty() || tag.is_empty() {
        return None;
    }
    // Docker Hub's API host is not its name, and its official images live under
    // `library/` (`docker.io/nginx` is `registry-1.docker.io/library/nginx`).
    let (host, name) = if first == "docker.io" || first == "index.docker.io" {
        let name = if name.contains('/') {
            name.to_string()
        } else {
            format!("library/{name}")
        };
        ("registry-1.docker.io".to_string(), name)
    } else {
        (first.to_string(), name.to_string())
    };
    Some(RegistryRef {
        host,
        name,
        tag: tag.to_string(),
    })
}

/// `image` with the tag the engine reports in its events (`busybox` is `busybox:latest`).
pub fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The engine's pull credentials from a registry secret: `user:password` only (a token
/// is sent to the registry's API, not to the engine).
pub fn basic_auth(secret: &str) -> Option<(String, String)> {
    secret
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))
}

impl Builder {
    /// Deploys the service's image if it is not the image of its current revision.
    /// Returns the new revision.
    pub async fn deploy_image_if_moved(
        &self,
        spec: &ServiceSpec,
        why: &str,
    ) -> Result<Option<i64>, SourceError> {
        let service = spec.name.as_str();
        let Source::Image { image, .. } = &spec.source else {
            return Ok(None);
        };
        let Some(id) = self.runtime.image_id(image).await? else {
            return Ok(None);
        };
        let row = self.store.service(service)?;
        let current = row.and_then(|r| r.target_revision.or(r.active_revision));
        if let Some(n) = current {
            if self
                .store
                .revision(service, n)?
                .is_some_and(|r| r.image == id)
            {
                return Ok(None);
            }
        }
        if !spec.auto_deploy {
            self.log(
                service,
                EventKind::Deployment,
                &format!("{why}: {image} moved; auto-deploy is off, so `slipway deploy {service}` deploys it"),
            );
            return Ok(None);
        }
        self.log(
            service,
            EventKind::Deployment,
            &format!("{why}: {image} moved to {}", slipway_core::short_id(&id)),
        );
        Ok(Some(self.deploy_image(spec).await?))
    }

    /// Checks a registry image once: a digest unlike the last one seen is pulled and, if
    /// it is a new image, deployed.
    async fn poll_registry(
        &self,
        spec: &ServiceSpec,
        seen: &mut HashMap<String, String>,
    ) -> Result<(), SourceError> {
        let Source::Image {
            image, credentials, ..
        } = &spec.source
        else {
            return Ok(());
        };
        let Some(r) = registry_ref(image) else {
            return Ok(());
        };
        let service = spec.name.as_str();
        let secret = match credentials {
            Some(n) => Some(self.store.secret(service, n)?.ok_or_else(|| {
                SourceError::WrongSource(format!(
                    "source.credentials names the secret {n}, which service {service} does not have"
                ))
            })?),
            None => None,
        };
        let digest = self
            .registry()
            .manifest_digest(&r, secret.as_deref())
            .await
            .map_err(|e| SourceError::Fetch(e.to_string()))?;
        if seen.get(service) == Some(&digest) {
            return Ok(());
        }
        let auth = secret.as_deref().and_then(basic_auth);
        self.runtime.pull(image, auth).await?;
        self.deploy_image_if_moved(spec, &format!("registry digest {digest}"))
            .await?;
        seen.insert(service.to_string(), digest);
        Ok(())
    }

    /// Follows every image service until shutdown: the engine's tag events for images on
    /// the engine, a digest poll every `poll_s` for registry images.
    pub fn watch_images(self: &Arc<Self>) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let mut tags = match me.runtime.image_tags().await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!("image tag events: {e}; only registry images are followed");
                    None
                }
            };
            let mut seen: HashMap<String, String> = HashMap::new();
            let mut due: HashMap<String, tokio::time::Instant> = HashMap::new();
            let mut failing: HashMap<String, String> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let tagged = tokio::select! {
                    () = me.shutdown.cancelled() => return,
                    _ = tick.tick() => None,
                    t = async {
                        match tags.as_mut() {
                            Some(s) => s.next().await,
                            None => std::future::pending().await,
                        }
                    } => match t {
                        Some(Ok(name)) => Some(name),
                        Some(Err(e)) => {
                            tracing::warn!("image tag events: {e}; reconnecting");
                            tags = me.runtime.image_tags().await.ok();
                            None
                        }
                        None => {
                            tags = me.runtime.image_tags().await.ok();
                            None
                        }
                    },
                };
                let snap = me.store.snapshot();
                if let Some(name) = tagged {
                    for row in snap.services() {
                        let Source::Image { image, .. } = &row.spec.source else {
                            continue;
                        };
                        if with_tag(image) == name {
                            if let Err(e) = me.deploy_image_if_moved(&row.spec, "tag event").await {
                                me.log(
                                    row.spec.name.as_str(),
                                    EventKind::Deployment,
                                    &format!("tag event: {e}"),
                                );
                            }
                        }
                    }
                    continue;
                }
                let now = tokio::time::Instant::now();
                for row in snap.services() {
                    let Source::Image { image, poll_s, .. } = &row.spec.source else {
                        continue;
                    };
                    if registry_ref(image).is_none() {
                        continue;
                    }
                    let name = row.spec.name.to_string();
                    if due.get(&name).is_some_and(|t| *t > now) {
                        continue;
                    }
                    due.insert(name.clone(), now + Duration::from_secs(u64::from(*poll_s)));
                    match me.poll_registry(&row.spec, &mut seen).await {
                        Ok(()) => {
                            failing.remove(&name);
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            if failing.get(&name) != Some(&msg) {
                                me.log(
                                    &name,
                                    EventKind::Deployment,
                                    &format!("registry poll: {msg}"),
                                );
                                failing.insert(name, msg);
                            }
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references() {
        assert_eq!(
            registry_ref("127.0.0.1:5000/app:v1"),
            Some(RegistryRef {
                host: "127.0.0.1:5000".into(),
                name: "app".into(),
                tag: "v1".into()
            })
        );
        assert_eq!(
            registry_ref("registry.example.com/team/app").unwrap().tag,
            "latest"
        );
        assert_eq!(registry_ref("localhost/app:x").unwrap().host, "localhost");
        assert_eq!(registry_ref("busybox:latest"), None);
        assert_eq!(registry_ref("library/busybox"), None);
        assert_eq!(registry_ref("127.0.0.1:5000/app@sha256:abc"), None);
        // Docker Hub by its full name: its API host, official images under library/.
        assert_eq!(
            registry_ref("docker.io/nginx:1.27"),
            Some(RegistryRef {
                host: "registry-1.docker.io".into(),
                name: "library/nginx".into(),
                tag: "1.27".into()
            })
        );
        assert_eq!(registry_ref("docker.io/team/app").unwrap().name, "team/app");
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(with_tag("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(with_tag("127.0.0.1:5000/app:v2"), "127.0.0.1:5000/app:v2");
        assert!(crate::registry::authorization("u:p").starts_with("Basic "));
        assert_eq!(crate::registry::authorization("tok"), "Bearer tok");
    }

    proptest::proptest! {
        #[test]
        fn any_reference_splits_or_not(image in "\\PC{0,60}") {
            if let Some(r) = registry_ref(&image) {
                proptest::prop_assert!(!r.name.is_empty() && !r.tag.is_empty());
            }
            let _ = with_tag(&image);
        }
    }
}
