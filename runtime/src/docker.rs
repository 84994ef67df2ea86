//! [`DockerRuntime`]: the [`Runtime`] on the Docker Engine API, through bollard.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use slipway_core::HealthCheck;

use crate::{
    labels, output, ExitInfo, InstanceConfig, Observed, Runtime, RuntimeError, BUILD_CPU_PERIOD,
    BUILD_CPU_QUOTA, BUILD_CPU_SHARES, BUILD_MEMORY, INSTANCE_CAPS, INSTANCE_PIDS_LIMIT, NETWORK,
};

/// The bridge driver's option that turns inter-container communication on or off.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

fn engine(e: bollard::errors::Error) -> RuntimeError {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            RuntimeError::Engine(message)
        }
        other => RuntimeError::Client(other),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The Docker engine, for one platform id.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    platform: String,
    /// The id of [`NETWORK`] on this engine.
    network: String,
    /// How long a TCP check's connection must stay up: [`crate::probe::PROXY_HOLD`], or
    /// zero when the local engine runs without its userland proxy.
    tcp_hold: std::time::Duration,
}

/// An exclusive lock on a file in the temporary directory, held while a platform finds or
/// creates [`NETWORK`]; None when the file cannot be opened or locked (the smallest-id
/// rule then still settles on one network).
fn network_lock() -> Option<std::fs::File> {
    let path = std::env::temp_dir().join("slipway-network.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ok()?;
    file.lock().ok()?;
    Some(file)
}

/// [`crate::probe::userland_proxy_off`] for this host's `dockerd`, from `/proc` and
/// `/etc/docker/daemon.json`.
fn local_userland_proxy_off() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    let cmdlines: Vec<Vec<u8>> = dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .collect();
    let daemon = std::fs::read_to_string("/etc/docker/daemon.json").ok();
    crate::probe::userland_proxy_off(cmdlines.iter().map(Vec::as_slice), daemon.as_deref())
}

impl DockerRuntime {
    /// Connects through `DOCKER_HOST` or the default socket, negotiates the API version and
    /// pings, so a missing engine is reported at start with what to do.
    pub async fn connect(platform: &str) -> Result<Self, RuntimeError> {
        let endpoint =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let unreachable = |source| RuntimeError::Unreachable {
            endpoint: endpoint.clone(),
            source,
        };
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        let local = !endpoint.starts_with("tcp://") && !endpoint.starts_with("ssh://");
        let proxy_off = local
            && tokio::task::spawn_blocking(local_userland_proxy_off)
                .await
                .unwrap_or(false);
        let tcp_hold = if proxy_off {
            std::time::Duration::ZERO
        } else {
            crate::probe::PROXY_HOLD
        };
        tracing::info!(
            "the engine's userland proxy is {}: TCP health checks hold connections {} ms",
            if proxy_off { "off" } else { "on or unknown" },
            tcp_hold.as_millis()
        );
        let mut rt = DockerRuntime {
            docker,
            platform: platform.to_string(),
            network: String::new(),
            tcp_hold,
        };
        // Platforms on one machine that start at the same moment take turns, so they do
        // not each create a network of the same name (this engine allows that, and then
        // one of them would remove the other's before it ran anything on it).
        let lock = tokio::task::spawn_blocking(network_lock)
            .await
            .map_err(|e| RuntimeError::Engine(format!("taking the network lock: {e}")))?;
        rt.network = rt.ensure_network().await?;
        drop(lock);
        Ok(rt)
    }

    /// The id of [`NETWORK`], created when the engine does not have it. Platforms on
    /// other machines sharing the engine that start at the same moment may each create
    /// one (this engine allows two networks of one name): every platform then uses the one
    /// with the smallest id, and the others are removed when nothing uses them.
    async fn ensure_network(&self) -> Result<String, RuntimeError> {
        let mut nets = self.networks_named().await?;
        if nets.is_empty() {
            self.create_network().await?;
            nets = self.networks_named().await?;
        }
        nets.sort();
        let Some((keep, isolated)) = nets.first().cloned() else {
            return Err(RuntimeError::Engine(format!(
                "network {NETWORK} was created but the engine does not list it"
            )));
        };
        if !isolated {
            // Made by someone else: instances would reach each other on it.
            return Err(RuntimeError::Engine(format!(
                "the engine has a network {NETWORK} without com.docker.network.bridge.enable_icc=false: remove it (docker network rm {NETWORK}) and Slipway creates its own"
            )));
        }
        for (extra, _) in &nets[1..] {
            // In use by another platform's containers: it stays, unused by new ones.
            if let Err(e) = self.docker.remove_network(extra).await {
                tracing::debug!(network = %extra, "a duplicate {NETWORK} network stays (in use): {e}");
            }
        }
        Ok(keep)
    }

    /// The ids of the networks named [`NETWORK`], each with whether it has
    /// inter-container communication disabled.
    async fn networks_named(&self) -> Result<Vec<(String, bool)>, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert("name", vec![NETWORK]);
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(engine)?;
        // The engine's name filter matches substrings.
        Ok(list
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(NETWORK))
            .filter_map(|n| {
                let isolated = n
                    .options
                    .as_ref()
                    .and_then(|o| o.get(ICC_OPTION))
                    .is_some_and(|v| v == "false");
                Some((n.id?, isolated))
            })
            .collect())
    }

    async fn create_network(&self) -> Result<(), RuntimeError> {
        let mut options = HashMap::new();
        options.insert(ICC_OPTION.to_string(), "false".to_string());
        let mut net_labels = HashMap::new();
        net_labels.insert("slipway.network".to_string(), "instances".to_string());
        let req = NetworkCreateRequest {
            name: NETWORK.to_string(),
            driver: Some("bridge".to_string()),
            options: Some(options),
            labels: Some(net_labels),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn platform(&self) -> &str {
        &self.platform
    }

    async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        service: &str,
        log: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<String, RuntimeError> {
        let mut labels = HashMap::new();
        labels.insert(labels::PLATFORM.to_string(), self.platform.clone());
        labels.insert(labels::SERVICE.to_string(), service.to_string());
        let options = BuildImageOptionsBuilder::default()
            .t(tag)
            .dockerfile("Dockerfile")
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .memory(BUILD_MEMORY)
            .memswap(BUILD_MEMORY)
            .cpushares(BUILD_CPU_SHARES)
            .cpuperiod(BUILD_CPU_PERIOD)
            .cpuquota(BUILD_CPU_QUOTA)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        let mut image_id = None;
        // The base image of the step that runs, when it is a FROM: a pull that fails
        // there is explained as a missing base image.
        let mut from: Option<String> = None;
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    let msg = match engine(e) {
                        RuntimeError::Engine(m) => m,
                        other => other.to_string(),
                    };
                    log(&msg);
                    return Err(RuntimeError::Engine(output::build_error(
                        &msg,
                        from.as_deref(),
                    )));
                }
            };
            if let Some(s) = info.stream.as_deref() {
                for line in s.lines() {
                    if line.starts_with("Step ") {
                        from = output::from_image(line).map(str::to_owned);
                    }
                    log(line);
                }
            }
            if let Some(s) = info.status.as_deref() {
                log(s);
            }
            if let Some(detail) = info.error_detail {
                let msg = detail.message.unwrap_or_else(|| "build failed".into());
                log(&msg);
                return Err(RuntimeError::Engine(output::build_error(
                    &msg,
                    from.as_deref(),
                )));
            }
            if let Some(aux) = info.aux {
                if let Some(id) = aux.id {
                    image_id = Some(id);
                }
            }
        }
        match image_id {
            Some(id) => Ok(id),
            None => self.image_id(tag).await?.ok_or_else(|| {
                RuntimeError::Engine(format!("the build finished but image {tag} is missing"))
            }),
        }
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(img.id),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine(e)),
        }
    }

    async fn image_user(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(Some(img.config.and_then(|c| c.user).unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine(e)),
        }
    }

    async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), RuntimeError> {
        let opts = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(image, Some(opts))
            .await
            .map_err(engine)
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let opts = RemoveImageOptionsBuilder::default().force(false).build();
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn create(&self, cfg: &InstanceConfig) -> Result<String, RuntimeError> {
        let port_key = format!("{}/tcp", cfg.port);
        let mut labels = HashMap::new();
        labels.insert(labels::PLATFORM.to_string(), self.platform.clone());
        labels.insert(labels::SERVICE.to_string(), cfg.service.clone());
        labels.insert(labels::REVISION.to_string(), cfg.revision.to_string());
        labels.insert(labels::INSTANCE.to_string(), cfg.instance.clone());
        let mut bindings = HashMap::new();
        bindings.insert(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
        );
        let body = ContainerCreateBody {
            image: Some(cfg.image.clone()),
            env: Some(cfg.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: Some(vec![port_key.clone()]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                init: Some(true),
                security_opt: Some(vec!["no-new-privileges".to_string()]),
                cap_drop: Some(vec!["ALL".to_string()]),
                cap_add: Some(INSTANCE_CAPS.iter().map(|c| (*c).to_string()).collect()),
                pids_limit: Some(INSTANCE_PIDS_LIMIT),
                network_mode: Some(self.network.clone()),
                port_bindings: Some(bindings),
                nano_cpus: Some(cfg.nano_cpus),
                memory: Some(cfg.memory_bytes),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("slipway-{}-{}", cfg.service, cfg.instance);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(engine)?;
        Ok(created.id)
    }

    /// Publishes the port on 127.0.0.1 at a port the engine picks.
    async fn start(
        &self,
        container_id: &str,
        port: u16,
    ) -> Result<Option<SocketAddr>, RuntimeError> {
        self.docker
            .start_container(container_id, None)
            .await
            .map_err(engine)?;
        let inspect = self
            .docker
            .inspect_container(container_id, None)
            .await
            .map_err(engine)?;
        let port_key = format!("{port}/tcp");
        // A container that exited before its port was published has none.
        Ok(inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(&port_key).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok())
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p))))
    }

    async fn stop(&self, container_id: &str, grace_s: i32) -> Result<(), RuntimeError> {
        let opts = StopContainerOptionsBuilder::default().t(grace_s).build();
        match self.docker.stop_container(container_id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()), // already stopped
            Err(e) => Err(engine(e)),
        }
    }

    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(container_id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()), // removal already in progress
            Err(e) => Err(engine(e)),
        }
    }

    /// The cgroup freezer: the container keeps its memory and uses no CPU.
    async fn pause(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.docker
            .pause_container(container_id)
            .await
            .map_err(engine)
    }

    async fn unpause(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.docker
            .unpause_container(container_id)
            .await
            .map_err(engine)
    }

    async fn list(&self) -> Result<Vec<Observed>, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label",
            vec![format!("{}={}", labels::PLATFORM, self.platform)],
        );
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(engine)?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                let addr = c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|p| p.public_port)
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
                Some(Observed {
                    container_id: c.id?,
                    service: labels.get(labels::SERVICE)?.clone(),
                    revision: labels.get(labels::REVISION)?.parse().ok()?,
                    instance: labels.get(labels::INSTANCE)?.clone(),
                    running: state == "running" || state == "paused",
                    paused: state == "paused",
                    addr,
                })
            })
            .collect())
    }

    async fn inspect(&self, container_id: &str) -> Result<ExitInfo, RuntimeError> {
        let c = self
            .docker
            .inspect_container(container_id, None)
            .await
            .map_err(engine)?;
        let s = c.state.unwrap_or_default();
        Ok(ExitInfo {
            running: s.running.unwrap_or(false),
            exit_code: s.exit_code,
            oom_killed: s.oom_killed.unwrap_or(false),
            error: s.error,
        })
    }

    async fn follow_logs(
        &self,
        container_id: &str,
        since_ms: i64,
    ) -> Result<crate::LogStream, RuntimeError> {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .timestamps(true)
            .since(i32::try_from(since_ms.max(0) / 1000).unwrap_or(i32::MAX))
            .build();
        let frames = self.docker.logs(container_id, Some(opts));
        Ok(log_lines(Box::pin(frames), since_ms))
    }

    async fn logs_tail(&self, container_id: &str, lines: usize) -> String {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(container_id, Some(opts));
        let mut raw = Vec::new();
        let collect = async {
            while let Some(Ok(chunk)) = stream.next().await {
                raw.extend_from_slice(&chunk.into_bytes());
                if raw.len() > 4 * output::TAIL_MAX {
                    // Keep the newest bytes only.
                    raw.drain(..raw.len() - output::TAIL_MAX);
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(3), collect)
            .await
            .is_err()
        {
            tracing::debug!(
                container = container_id,
                "the log tail took over 3 s; using what came"
            );
        }
        output::tail_text(&raw)
    }

    /// The stream reads the engine's `/events` with a `since` of the moment of the call,
    /// so nothing between this call and the first read is missed.
    async fn events(&self) -> Result<crate::EventStream, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert("type", vec!["container".to_string()]);
        filters.insert(
            "label",
            vec![format!("{}={}", labels::PLATFORM, self.platform)],
        );
        filters.insert("event", vec!["start".to_string(), "die".to_string()]);
        let since = since_now();
        let opts = bollard::query_parameters::EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let stream = self
            .docker
            .events(Some(opts))
            .filter_map(|item| async move {
                let msg = match item {
                    Ok(m) => m,
                    Err(e) => return Some(Err(engine(e))),
                };
                let actor = msg.actor?;
                let attrs = actor.attributes.unwrap_or_default();
                let action = match msg.action.as_deref()? {
                    "start" => crate::EventAction::Start,
                    "die" => crate::EventAction::Die {
                        exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
                    },
                    _ => return None,
                };
                Some(Ok(crate::ContainerEvent {
                    container_id: actor.id?,
                    service: attrs.get(labels::SERVICE).cloned().unwrap_or_default(),
                    instance: attrs.get(labels::INSTANCE).cloned().unwrap_or_default(),
                    action,
                }))
            });
        Ok(Box::pin(stream))
    }

    async fn image_tags(&self) -> Result<crate::TagStream, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert("type", vec!["image".to_string()]);
        filters.insert("event", vec!["tag".to_string(), "pull".to_string()]);
        let since = since_now();
        let opts = bollard::query_parameters::EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let stream = self
            .docker
            .events(Some(opts))
            .filter_map(|item| async move {
                match item {
                    Ok(m) => {
                        let attrs = m.actor?.attributes.unwrap_or_default();
                        attrs.get("name").cloned().map(Ok)
                    }
                    Err(e) => Some(Err(engine(e))),
                }
            });
        Ok(Box::pin(stream))
    }

    async fn pull(
        &self,
        reference: &str,
        auth: Option<(String, String)>,
    ) -> Result<(), RuntimeError> {
        let opts = bollard::query_parameters::CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let creds = auth.map(|(username, password)| bollard::auth::DockerCredentials {
            username: Some(username),
            password: Some(password),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(opts), None, creds);
        while let Some(item) = stream.next().await {
            item.map_err(engine)?;
        }
        Ok(())
    }

    async fn probe(
        &self,
        addr: SocketAddr,
        check: &HealthCheck,
    ) -> Result<(), crate::probe::ProbeError> {
        crate::probe::tcp_probe(addr, check, self.tcp_hold).await
    }
}

/// `/events`' `since` for "from now", even though the request goes out only when the
/// stream is first read.
fn since_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// The engine's log frames (with timestamps) as lines, from after `since_ms`.
fn log_lines(
    frames: futures_util::stream::BoxStream<
        'static,
        Result<bollard::container::LogOutput, bollard::errors::Error>,
    >,
    since_ms: i64,
) -> crate::LogStream {
    struct State {
        frames: futures_util::stream::BoxStream<
            'static,
            Result<bollard::container::LogOutput, bollard::errors::Error>,
        >,
        out: Vec<u8>,
        err: Vec<u8>,
        ready: std::collections::VecDeque<crate::LogLine>,
        since_ms: i64,
        /// The engine's stream broke: sent after what was read before it.
        broke: Option<RuntimeError>,
        ended: bool,
    }
    impl State {
        fn push(&mut self, stderr: bool, text: String) {
            let (at_ms, line) = match output::docker_timestamp(&text) {
                Some((at, rest)) => (at, rest.to_string()),
                None => (slipway_core::now_unix_ms(), text),
            };
            // `since` is in whole seconds: lines of that second already kept come
            // again.
            if at_ms > self.since_ms {
                self.ready.push_back(crate::LogLine {
                    at_ms,
                    stderr,
                    line,
                });
            }
        }

        /// The stream ended (the container stopped) or broke: a last line without
        /// its newline is still a line (a crash's last words often are).
        fn end(&mut self) {
            self.ended = true;
            for stderr in [false, true] {
                let carry = if stderr { &mut self.err } else { &mut self.out };
                if !carry.is_empty() {
                    let text = output::bounded_line(carry);
                    carry.clear();
                    self.push(stderr, text);
                }
            }
        }
    }
    let state = State {
        frames: Box::pin(frames),
        out: Vec::new(),
        err: Vec::new(),
        ready: Default::default(),
        since_ms,
        broke: None,
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(l) = st.ready.pop_front() {
                return Some((Ok(l), st));
            }
            if st.ended {
                return st.broke.take().map(|e| (Err(e), st));
            }
            let frame = match st.frames.next().await {
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    st.broke = Some(RuntimeError::Client(e));
                    st.end();
                    continue;
                }
                None => {
                    st.end();
                    continue;
                }
            };
            let (stderr, bytes) = match frame {
                bollard::container::LogOutput::StdErr { message } => (true, message),
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => (false, message),
                bollard::container::LogOutput::StdIn { .. } => continue,
            };
            let mut lines = Vec::new();
            let carry = if stderr { &mut st.err } else { &mut st.out };
            output::split_lines(carry, &bytes, |text| lines.push(text));
            for text in lines {
                st.push(stderr, text);
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::container::LogOutput;

    async fn lines_of(
        frames: Vec<Result<LogOutput, bollard::errors::Error>>,
    ) -> Vec<Result<(bool, String), String>> {
        let stream = log_lines(Box::pin(futures_util::stream::iter(frames)), 0);
        stream
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|r| r.map(|l| (l.stderr, l.line)).map_err(|e| e.to_string()))
            .collect()
    }

    fn out(text: &str) -> Result<LogOutput, bollard::errors::Error> {
        Ok(LogOutput::StdOut {
            message: text.as_bytes().to_vec().into(),
        })
    }

    fn err(text: &str) -> Result<LogOutput, bollard::errors::Error> {
        Ok(LogOutput::StdErr {
            message: text.as_bytes().to_vec().into(),
        })
    }

    #[tokio::test]
    async fn a_last_line_without_newline_is_kept_when_the_stream_ends() {
        let got = lines_of(vec![
            out("2026-12-03T08:12:13.000000001Z booting\n"),
            err("2026-12-03T08:12:13.100000000Z last words"),
        ])
        .await;
        assert_eq!(
            got,
            vec![
                Ok((false, "booting".into())),
                Ok((true, "last words".into()))
            ]
        );
    }

    /// The engine's stream can break as the container goes (it is removed while being
    /// followed): what was read before the break is still sent, then the error.
    #[tokio::test]
    async fn a_last_line_without_newline_is_kept_when_the_stream_breaks() {
        let got = lines_of(vec![
            out("2026-12-03T08:12:13.000000001Z booting\n"),
            out("2026-12-03T08:12:13.100000000Z last words"),
            Err(bollard::errors::Error::DockerStreamError {
                error: "connection reset".into(),
            }),
            out("2026-12-03T08:12:14.000000000Z never read\n"),
        ])
        .await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], Ok((false, "booting".into())));
        assert_eq!(got[1], Ok((false, "last words".into())));
        assert!(
            got[2]
                .as_ref()
                .is_err_and(|e| e.contains("connection reset")),
            "{got:?}"
        );
    }
}
