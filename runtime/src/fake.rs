//! [`FakeRuntime`]: a scripted, in-memory [`Runtime`] for unit tests of the builder and
//! the deployer. Nothing here touches an engine or a socket, and time is read from
//! `tokio::time::Instant`, so tests run on a paused tokio clock in milliseconds.
//!
//! Each image carries a [`Script`] that says how its containers behave: they start and
//! answer health checks, crash with an exit code, never listen, answer checks with a
//! status, or die after a while. Tests can also kill a running container, and read back
//! every call the runtime received ([`FakeRuntime::calls`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use slipway_core::HealthCheck;

use crate::probe::ProbeError;
use tokio::time::Instant;

use crate::{
    ContainerEvent, EventAction, EventStream, ExitInfo, InstanceConfig, Observed, Runtime,
    RuntimeError,
};

/// How a health check of a fake container goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Every check passes.
    Pass,
    /// HTTP checks get this status; TCP checks pass (the port is open).
    Status(u16),
    /// Nothing listens: every check fails to connect.
    NoListener,
    /// The first `n` checks fail to connect, later ones pass (a slow start).
    PassAfter(u32),
}

/// How the containers of one image behave.
#[derive(Clone, Debug)]
pub struct Script {
    /// Exit code the container exits with as soon as it starts, if any.
    pub exit_at_start: Option<i64>,
    /// Its health checks.
    pub health: Health,
    /// Dies (with `exit_later`'s code) this long after it started, if set.
    pub dies_after: Option<Duration>,
    /// The code it dies with later.
    pub exit_later: i64,
    /// What its logs hold.
    pub logs: String,
    /// `start` itself fails with this engine error.
    pub start_error: Option<String>,
    /// The engine answers a log follower this late (a busy engine): a container removed
    /// meanwhile has taken its output with it.
    pub logs_answer_after: Option<Duration>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            exit_at_start: None,
            health: Health::Pass,
            dies_after: None,
            exit_later: 1,
            logs: String::new(),
            start_error: None,
            logs_answer_after: None,
        }
    }
}

impl Script {
    /// Starts and passes every check.
    pub fn healthy() -> Self {
        Script::default()
    }

    /// Exits with `code` at once, printing `logs`.
    pub fn crashes(code: i64, logs: &str) -> Self {
        Script {
            exit_at_start: Some(code),
            logs: logs.into(),
            ..Script::default()
        }
    }

    /// Runs but never listens on its port.
    pub fn never_listens() -> Self {
        Script {
            health: Health::NoListener,
            ..Script::default()
        }
    }

    /// Answers HTTP checks with `status`.
    pub fn answers(status: u16) -> Self {
        Script {
            health: Health::Status(status),
            ..Script::default()
        }
    }

    /// Healthy, then exits with `code` once it has run for `after`.
    pub fn dies_after(after: Duration, code: i64) -> Self {
        Script {
            dies_after: Some(after),
            exit_later: code,
            ..Script::default()
        }
    }
}

/// One fake container.
#[derive(Clone, Debug)]
pub struct FakeContainer {
    /// Its id.
    pub id: String,
    /// The configuration it was created with.
    pub config: InstanceConfig,
    /// Its image's script.
    pub script: Script,
    /// When it started, if it did.
    pub started: Option<Instant>,
    /// Stopped (or exited) with this code.
    pub exited: Option<i64>,
    /// Paused.
    pub paused: bool,
    /// Its published address once started.
    pub addr: Option<SocketAddr>,
    /// Health checks it received.
    pub checks: u32,
}

impl FakeContainer {
    fn running(&self, now: Instant) -> bool {
        let Some(started) = self.started else {
            return false;
        };
        if self.exited.is_some() {
            return false;
        }
        !matches!(self.script.dies_after, Some(d) if now >= started + d)
    }

    /// The exit code, once it has stopped.
    fn exit_code(&self, now: Instant) -> Option<i64> {
        if let Some(c) = self.exited {
            return Some(c);
        }
        match (self.started, self.script.dies_after) {
            (Some(s), Some(d)) if now >= s + d => Some(self.script.exit_later),
            _ => None,
        }
    }
}

/// A call the fake received, for tests to check what the platform asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// A build of this tag.
    Build(String),
    /// A container created from this image for this revision.
    Create {
        /// The image.
        image: String,
        /// The revision label.
        revision: i64,
    },
    /// A container started.
    Start(String),
    /// A container stopped with this grace.
    Stop(String, i32),
    /// A container removed.
    Remove(String),
    /// A container paused.
    Pause(String),
    /// A container unpaused.
    Unpause(String),
    /// An image reference removed.
    RemoveImage(String),
}

struct State {
    /// Starts and deaths, for [`Runtime::events`] (a death by `dies_after` is not sent:
    /// it is noticed only when asked).
    events: tokio::sync::broadcast::Sender<ContainerEvent>,
    next: u64,
    /// Image reference (tag or id) to image id.
    refs: BTreeMap<String, String>,
    /// Image id to script.
    scripts: BTreeMap<String, Script>,
    /// What the next builds produce: a script, or a build error. Default: healthy.
    builds: Vec<Result<Script, String>>,
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<(Instant, Call)>,
}

/// The scripted in-memory runtime. Clones share their state.
#[derive(Clone)]
pub struct FakeRuntime {
    platform: String,
    state: Arc<Mutex<State>>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime::new("fake")
    }
}

impl FakeRuntime {
    /// An empty fake engine for platform id `platform`.
    pub fn new(platform: &str) -> Self {
        FakeRuntime {
            platform: platform.into(),
            state: Arc::new(Mutex::new(State {
                events: tokio::sync::broadcast::channel(1024).0,
                next: 0,
                refs: BTreeMap::new(),
                scripts: BTreeMap::new(),
                builds: Vec::new(),
                containers: BTreeMap::new(),
                calls: Vec::new(),
            })),
        }
    }

    fn emit(s: &State, c: &FakeContainer, action: EventAction) {
        // No subscriber is not an error.
        let _unheard = s.events.send(ContainerEvent {
            container_id: c.id.clone(),
            service: c.config.service.clone(),
            instance: c.config.instance.clone(),
            action,
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an image answering to `reference` whose containers follow `script`; returns
    /// its id.
    pub fn add_image(&self, reference: &str, script: Script) -> String {
        let mut s = self.lock();
        s.next += 1;
        let id = format!("sha256:{:064x}", s.next);
        s.refs.insert(reference.into(), id.clone());
        s.refs.insert(id.clone(), id.clone());
        s.scripts.insert(id.clone(), script);
        id
    }

    /// The next build produces an image whose containers follow `script`.
    pub fn next_build(&self, script: Script) {
        self.lock().builds.push(Ok(script));
    }

    /// The next build fails with `error`.
    pub fn next_build_fails(&self, error: &str) {
        self.lock().builds.push(Err(error.into()));
    }

    /// Every container the fake knows (removed ones are gone).
    pub fn containers(&self) -> Vec<FakeContainer> {
        self.lock().containers.values().cloned().collect()
    }

    /// The running containers of `revision`.
    pub fn running_of(&self, revision: i64) -> Vec<FakeContainer> {
        let now = Instant::now();
        self.lock()
            .containers
            .values()
            .filter(|c| c.config.revision == revision && c.running(now))
            .cloned()
            .collect()
    }

    /// Every call so far, with when it came.
    pub fn calls(&self) -> Vec<(Instant, Call)> {
        self.lock().calls.clone()
    }

    /// Makes a running container exit with `code` now.
    pub fn kill(&self, container_id: &str, code: i64) {
        let mut s = self.lock();
        let Some(c) = s.containers.get_mut(container_id) else {
            return;
        };
        if c.exited.is_none() {
            c.exited = Some(code);
            let c = c.clone();
            Self::emit(
                &s,
                &c,
                EventAction::Die {
                    exit_code: Some(code),
                },
            );
        }
    }

    /// Puts a container on the fake engine as a crashed platform would have left it:
    /// created from `image` with `cfg`'s labels, running (or not) at `addr`.
    pub fn leave_running(&self, cfg: InstanceConfig, running: bool) -> String {
        let mut s = self.lock();
        s.next += 1;
        let id = format!("c{:06}", s.next);
        let script = s
            .refs
            .get(&cfg.image)
            .and_then(|i| s.scripts.get(i))
            .cloned()
            .unwrap_or_default();
        let addr = Self::next_addr(&s);
        s.containers.insert(
            id.clone(),
            FakeContainer {
                id: id.clone(),
                config: cfg,
                script,
                started: Some(Instant::now()),
                exited: (!running).then_some(137),
                paused: false,
                addr: Some(addr),
                checks: 0,
            },
        );
        id
    }

    /// A loopback address no other fake container has (nothing listens there).
    fn next_addr(s: &State) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 20_000 + (s.next % 40_000) as u16))
    }

    fn record(s: &mut State, call: Call) {
        s.calls.push((Instant::now(), call));
    }

    fn missing(id: &str) -> RuntimeError {
        RuntimeError::Engine(format!("No such container: {id}"))
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn platform(&self) -> &str {
        &self.platform
    }

    async fn build(
        &self,
        _context: Vec<u8>,
        tag: &str,
        _service: &str,
        log: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<String, RuntimeError> {
        let next = {
            let mut s = self.lock();
            Self::record(&mut s, Call::Build(tag.into()));
            if s.builds.is_empty() {
                Ok(Script::default())
            } else {
                s.builds.remove(0)
            }
        };
        match next {
            Ok(script) => {
                log("Step 1/1 : FROM fake");
                Ok(self.add_image(tag, script))
            }
            Err(e) => {
                log(&e);
                Err(RuntimeError::Engine(e))
            }
        }
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        Ok(self.lock().refs.get(reference).cloned())
    }

    async fn image_user(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        // The fake's images set no user.
        Ok(self.lock().refs.get(reference).map(|_| String::new()))
    }

    async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        let id = s
            .refs
            .get(image)
            .cloned()
            .ok_or_else(|| RuntimeError::Engine(format!("No such image: {image}")))?;
        s.refs.insert(format!("{repo}:{tag}"), id);
        Ok(())
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        Self::record(&mut s, Call::RemoveImage(reference.into()));
        s.refs.remove(reference);
        Ok(())
    }

    async fn create(&self, cfg: &InstanceConfig) -> Result<String, RuntimeError> {
        let mut s = self.lock();
        Self::record(
            &mut s,
            Call::Create {
                image: cfg.image.clone(),
                revision: cfg.revision,
            },
        );
        let Some(image) = s.refs.get(&cfg.image).cloned() else {
            return Err(RuntimeError::Engine(format!(
                "No such image: {}",
                cfg.image
            )));
        };
        let script = s.scripts.get(&image).cloned().unwrap_or_default();
        s.next += 1;
        let id = format!("c{:06}", s.next);
        s.containers.insert(
            id.clone(),
            FakeContainer {
                id: id.clone(),
                config: cfg.clone(),
                script,
                started: None,
                exited: None,
                paused: false,
                addr: None,
                checks: 0,
            },
        );
        Ok(id)
    }

    async fn start(
        &self,
        container_id: &str,
        _port: u16,
    ) -> Result<Option<SocketAddr>, RuntimeError> {
        let mut s = self.lock();
        Self::record(&mut s, Call::Start(container_id.into()));
        let addr = Self::next_addr(&s);
        s.next += 1;
        let c = s
            .containers
            .get_mut(container_id)
            .ok_or_else(|| Self::missing(container_id))?;
        if let Some(e) = c.script.start_error.clone() {
            return Err(RuntimeError::Engine(e));
        }
        c.started = Some(Instant::now());
        let exit = c.script.exit_at_start;
        if let Some(code) = exit {
            c.exited = Some(code);
        } else {
            c.addr = Some(addr);
        }
        let c = c.clone();
        Self::emit(&s, &c, EventAction::Start);
        if let Some(code) = exit {
            Self::emit(
                &s,
                &c,
                EventAction::Die {
                    exit_code: Some(code),
                },
            );
            return Ok(None);
        }
        Ok(c.addr)
    }

    async fn stop(&self, container_id: &str, grace_s: i32) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        Self::record(&mut s, Call::Stop(container_id.into(), grace_s));
        if let Some(c) = s.containers.get_mut(container_id) {
            if c.exited.is_none() && c.started.is_some() {
                c.exited = Some(0);
                let c = c.clone();
                Self::emit(&s, &c, EventAction::Die { exit_code: Some(0) });
            }
        }
        Ok(())
    }

    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        Self::record(&mut s, Call::Remove(container_id.into()));
        s.containers.remove(container_id);
        Ok(())
    }

    async fn pause(&self, container_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        Self::record(&mut s, Call::Pause(container_id.into()));
        let c = s
            .containers
            .get_mut(container_id)
            .ok_or_else(|| Self::missing(container_id))?;
        c.paused = true;
        Ok(())
    }

    async fn unpause(&self, container_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        Self::record(&mut s, Call::Unpause(container_id.into()));
        let c = s
            .containers
            .get_mut(container_id)
            .ok_or_else(|| Self::missing(container_id))?;
        c.paused = false;
        Ok(())
    }

    async fn inspect(&self, container_id: &str) -> Result<ExitInfo, RuntimeError> {
        let now = Instant::now();
        let s = self.lock();
        let c = s
            .containers
            .get(container_id)
            .ok_or_else(|| Self::missing(container_id))?;
        Ok(ExitInfo {
            running: c.running(now),
            exit_code: c.exit_code(now),
            oom_killed: false,
            error: None,
        })
    }

    async fn list(&self) -> Result<Vec<Observed>, RuntimeError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .containers
            .values()
            .map(|c| Observed {
                container_id: c.id.clone(),
                service: c.config.service.clone(),
                revision: c.config.revision,
                instance: c.config.instance.clone(),
                running: c.running(now),
                paused: c.paused,
                addr: c.addr.filter(|_| c.running(now)),
            })
            .collect())
    }

    async fn logs_tail(&self, container_id: &str, lines: usize) -> String {
        let s = self.lock();
        let Some(c) = s.containers.get(container_id) else {
            return String::new();
        };
        let all: Vec<&str> = c.script.logs.lines().collect();
        let from = all.len().saturating_sub(lines);
        all[from..].iter().map(|l| format!("{l}\n")).collect()
    }

    async fn follow_logs(
        &self,
        container_id: &str,
        since_ms: i64,
    ) -> Result<crate::LogStream, RuntimeError> {
        let late = self
            .lock()
            .containers
            .get(container_id)
            .and_then(|c| c.script.logs_answer_after);
        if let Some(late) = late {
            tokio::time::sleep(late).await;
        }
        let lines = {
            let s = self.lock();
            let Some(c) = s.containers.get(container_id) else {
                return Err(RuntimeError::Engine(format!(
                    "no such container {container_id}"
                )));
            };
            c.script.logs.clone()
        };
        // The script's lines are all written at start: a follower that already has some
        // (it asks from after them) gets nothing more.
        let at_ms = slipway_core::now_unix_ms();
        let out: Vec<Result<crate::LogLine, RuntimeError>> = if since_ms > 0 {
            Vec::new()
        } else {
            lines
                .lines()
                .map(|l| {
                    Ok(crate::LogLine {
                        at_ms,
                        stderr: false,
                        line: l.to_string(),
                    })
                })
                .collect()
        };
        Ok(Box::pin(futures_util::stream::iter(out)))
    }

    async fn events(&self) -> Result<EventStream, RuntimeError> {
        let rx = self.lock().events.subscribe();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((Ok(e), rx)),
                    // A slow reader skips what it missed, as a reconnecting one would.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn image_tags(&self) -> Result<crate::TagStream, RuntimeError> {
        // The fake's images are scripted, never re-tagged behind its back.
        Ok(Box::pin(futures_util::stream::pending()))
    }

    async fn pull(
        &self,
        reference: &str,
        _auth: Option<(String, String)>,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Engine(format!(
            "the fake engine has no registry to pull {reference} from"
        )))
    }

    async fn probe(&self, addr: SocketAddr, check: &HealthCheck) -> Result<(), ProbeError> {
        let now = Instant::now();
        let refused = || ProbeError::Connect {
            check: crate::probe::describe(check),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let mut s = self.lock();
        let Some(c) = s
            .containers
            .values_mut()
            .find(|c| c.addr == Some(addr) && c.running(now) && !c.paused)
        else {
            return Err(refused());
        };
        c.checks += 1;
        let http = check.protocol == slipway_core::HealthProtocol::Http;
        match c.script.health {
            Health::Pass => Ok(()),
            Health::NoListener => Err(ProbeError::ClosedAtOnce),
            Health::PassAfter(n) if c.checks <= n => Err(refused()),
            Health::PassAfter(_) => Ok(()),
            Health::Status(code) if http && !(200..400).contains(&code) => {
                Err(ProbeError::Status {
                    check: crate::probe::describe(check),
                    code,
                })
            }
            Health::Status(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn cfg(image: &str, instance: &str) -> InstanceConfig {
        InstanceConfig {
            service: "web".into(),
            revision: 1,
            instance: instance.into(),
            image: image.into(),
            env: Vec::new(),
            port: 8080,
            nano_cpus: 1,
            memory_bytes: 1,
        }
    }

    #[tokio::test]
    async fn events_report_starts_and_deaths() {
        let rt = FakeRuntime::default();
        rt.add_image("crash", Script::crashes(3, "bye"));
        rt.add_image("ok", Script::healthy());
        let mut events = rt.events().await.unwrap();
        let a = rt.create(&cfg("crash", "a")).await.unwrap();
        assert_eq!(rt.start(&a, 8080).await.unwrap(), None);
        let b = rt.create(&cfg("ok", "b")).await.unwrap();
        assert!(rt.start(&b, 8080).await.unwrap().is_some());
        rt.kill(&b, 9);
        rt.kill(&b, 9); // dead already: no second death
        let c = rt.create(&cfg("ok", "c")).await.unwrap();
        rt.start(&c, 8080).await.unwrap();
        rt.stop(&c, 5).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let e = events.next().await.unwrap().unwrap();
            seen.push((e.instance, e.action));
        }
        use EventAction::*;
        assert_eq!(
            seen,
            vec![
                ("a".into(), Start),
                ("a".into(), Die { exit_code: Some(3) }),
                ("b".into(), Start),
                ("b".into(), Die { exit_code: Some(9) }),
                ("c".into(), Start),
                ("c".into(), Die { exit_code: Some(0) }),
            ]
        );
    }
}
