//! The reconciler against the scripted fake runtime, on a paused tokio clock: no Docker,
//! no sockets, each test in milliseconds of real time however many seconds of deadlines,
//! backoffs and health-check intervals it spans. The real-engine tests in
//! `slipway/tests` cover the same paths end to end.

use std::sync::Arc;
use std::time::Duration;

use slipway_core::{DeploymentKind, DeploymentState, ServiceSpec};
use slipway_deployer::Deployer;
use slipway_router::{Router, RouterConfig};
use slipway_runtime::fake::{Call, FakeRuntime, Script};
use slipway_runtime::{InstanceConfig, Runtime};
use slipway_store::Store;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Rig {
    store: Arc<Store>,
    rt: FakeRuntime,
    router: Arc<Router>,
    deployer: Arc<Deployer>,
    shutdown: CancellationToken,
}

fn spec(name: &str, extra: serde_json::Value) -> ServiceSpec {
    let mut v = serde_json::json!({
        "name": name,
        "source": {"type": "image", "image": "app:latest"},
        "health_check": {"interval_s": 1},
        "deploy_timeout_s": 8,
        "network": {"drain_timeout_s": 1},
    });
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            m.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).expect("a valid spec")
}

impl Rig {
    /// A deployer on an empty store and fake engine (not started).
    fn new() -> Rig {
        Rig::on(Arc::new(Store::memory().unwrap()), FakeRuntime::new("test"))
    }

    fn on(store: Arc<Store>, rt: FakeRuntime) -> Rig {
        let router = Router::new(RouterConfig::default());
        let shutdown = CancellationToken::new();
        let runtime: Arc<dyn Runtime> = Arc::new(rt.clone());
        let deployer = Deployer::new(store.clone(), runtime, router.clone(), shutdown.clone());
        Rig {
            store,
            rt,
            router,
            deployer,
            shutdown,
        }
    }

    fn create(&self, spec: &ServiceSpec) {
        self.store.create_service(spec).unwrap();
    }

    /// A new revision of `service` whose containers follow `script`, and its deployment.
    fn revision(&self, service: &str, script: Script) -> (i64, i64) {
        let n = self.store.revisions(service).unwrap().len() + 1;
        let tag = format!("slipway/test/{service}:r{n}");
        let image = self.rt.add_image(&tag, script);
        let (rev, dep) = self
            .store
            .new_revision(
                service,
                &image,
                |_| tag.clone(),
                None,
                DeploymentKind::Image,
            )
            .unwrap();
        (rev.number, dep)
    }

    /// Records a revision and wakes the worker, as a push does.
    fn push(&self, service: &str, script: Script) -> (i64, i64) {
        let r = self.revision(service, script);
        self.deployer.wake(service);
        r
    }

    fn state(&self, dep: i64) -> DeploymentState {
        self.store.deployment(dep).unwrap().unwrap().state
    }

    fn reason(&self, dep: i64) -> String {
        self.store.deployment(dep).unwrap().unwrap().reason
    }

    /// Waits (on the paused clock) until the deployment is over; returns its state.
    async fn done(&self, dep: i64) -> DeploymentState {
        self.until(&format!("deployment {dep} to end"), || {
            self.state(dep).is_terminal()
        })
        .await;
        self.state(dep)
    }

    async fn until(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        for _ in 0..10_000 {
            if ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out after {:?} of clock waiting for {what}\n{}",
            start.elapsed(),
            self.activity("web")
        );
    }

    fn activity(&self, service: &str) -> String {
        self.store
            .events(service, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|e| format!("[{}] {}\n", e.kind, e.message))
            .collect()
    }

    /// The instance ids the router sends traffic to.
    fn routed(&self, service: &str) -> Vec<String> {
        self.router
            .stats()
            .into_iter()
            .filter(|s| s.name == service)
            .flat_map(|s| s.instances)
            .filter(|i| !i.draining)
            .map(|i| i.id)
            .collect()
    }

    fn instance_ids(&self, revision: i64) -> Vec<String> {
        let mut ids: Vec<_> = self
            .rt
            .running_of(revision)
            .into_iter()
            .map(|c| c.config.instance)
            .collect();
        ids.sort();
        ids
    }

    fn active(&self, service: &str) -> Option<i64> {
        self.store
            .service(service)
            .unwrap()
            .unwrap()
            .active_revision
    }
}

fn states_in_order(activity: &str, dep: i64) -> Vec<String> {
    let prefix = format!("deployment {dep} (revision ");
    activity
        .lines()
        .filter_map(|l| l.strip_prefix("[deployment] "))
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split("): ").nth(1))
        .filter_map(|l| l.split(':').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn blue_green_happy_path() {
    let rig = Rig::new();
    rig.create(&spec("web", serde_json::json!({})));
    rig.deployer.start().await.unwrap();
    let (r1, d1) = rig.push("web", Script::healthy());
    assert_eq!(rig.done(d1).await, DeploymentState::Succeeded);
    assert_eq!(rig.active("web"), Some(r1));
    let blue = rig.instance_ids(r1);
    assert_eq!(blue.len(), 1);
    assert_eq!(rig.routed("web"), blue);

    let (r2, d2) = rig.push("web", Script::healthy());
    assert_eq!(rig.done(d2).await, DeploymentState::Succeeded);
    let green = rig.instance_ids(r2);
    assert_eq!(green.len(), 1);
    assert_eq!(
        rig.routed("web"),
        green,
        "traffic moved to the new revision"
    );
    assert!(rig.instance_ids(r1).is_empty(), "the old instance stopped");
    assert_eq!(rig.active("web"), Some(r2));
    let activity = rig.activity("web");
    assert_eq!(
        states_in_order(&activity, d2),
        [
            "starting",
            "health_checking",
            "switching_traffic",
            "draining",
            "succeeded"
        ],
        "{activity}"
    );
    // Blue/green: the new container started before the old one was stopped.
    let calls = rig.rt.calls();
    let pos = |want: &dyn Fn(&Call) -> bool| calls.iter().position(|(_, c)| want(c)).unwrap();
    let created = pos(&|c| matches!(c, Call::Create { revision, .. } if *revision == r2));
    let stopped = pos(&|c| matches!(c, Call::Stop(..) | Call::Remove(..)));
    assert!(created < stopped, "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn four_bad_deployments_leave_the_old_revision_serving() {
    let rig = Rig::new();
    rig.create(&spec(
        "web",
        serde_json::json!({"health_check": {"interval_s": 1, "protocol": "http", "path": "/health"}}),
    ));
    rig.deployer.start().await.unwrap();
    let (good, d) = rig.push("web", Script::healthy());
    assert_eq!(rig.done(d).await, DeploymentState::Succeeded);
    let serving = rig.instance_ids(good);

    let cases: Vec<(&str, Script, &str)> = vec![
        (
            "crash",
            Script::crashes(3, "fatal: DATABASE_URL is not set"),
            "exited with code 3",
        ),
        (
            "deaf",
            Script::never_listens(),
            "did not pass its health check within 8 s",
        ),
        ("http500", Script::answers(500), "answered 500"),
        (
            "engine refuses",
            Script {
                start_error: Some("driver failed programming external connectivity".into()),
                ..Script::healthy()
            },
            "driver failed programming external connectivity",
        ),
    ];
    for (case, script, why) in cases {
        let (_, dep) = rig.push("web", script);
        assert_eq!(rig.done(dep).await, DeploymentState::RolledBack, "{case}");
        let reason = rig.reason(dep);
        assert!(reason.contains("keeps serving"), "{case}: {reason}");
        // This case's own deployment explains itself: earlier cases' events do not count.
        let own: String = rig
            .store
            .events("web", 0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.message.starts_with(&format!("deployment {dep} (")))
            .map(|e| e.message + "\n")
            .collect();
        assert!(own.contains(why), "{case}: lacks {why:?}:\n{own}");
        if case == "crash" {
            assert!(own.contains("fatal: DATABASE_URL is not set"), "{own}");
        }
        assert_eq!(rig.active("web"), Some(good), "{case}");
        assert_eq!(
            rig.routed("web"),
            serving,
            "{case}: the old instance serves"
        );
        assert_eq!(
            rig.rt.containers().len(),
            1,
            "{case}: the failed instances were removed"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn crash_loops_back_off_2_4_and_8_seconds() {
    let rig = Rig::new();
    rig.create(&spec("web", serde_json::json!({})));
    rig.deployer.start().await.unwrap();
    // Healthy long enough to deploy, then it exits: every replacement dies young.
    let (_, d) = rig.push("web", Script::dies_after(Duration::from_secs(3), 9));
    assert_eq!(rig.done(d).await, DeploymentState::Succeeded);
    rig.until("four replacements", || {
        rig.rt
            .calls()
            .iter()
            .filter(|(_, c)| matches!(c, Call::Create { .. }))
            .count()
            >= 5
    })
    .await;
    // Between the removal of a dead instance and the creation of its replacement: the
    // backoff, to the millisecond on the paused clock.
    let calls = rig.rt.calls();
    let mut waits = Vec::new();
    let mut removed_at = None;
    for (at, c) in &calls {
        match c {
            Call::Remove(_) => removed_at = Some(*at),
            Call::Create { .. } => {
                if let Some(r) = removed_at.take() {
                    waits.push((*at - r).as_millis());
                }
            }
            _ => {}
        }
    }
    assert_eq!(waits[..3], [2000, 4000, 8000], "{calls:?}");
    let activity = rig.activity("web");
    assert!(activity.contains("exited with code 9"), "{activity}");
    assert!(activity.contains("backing off"), "{activity}");
}

#[tokio::test(start_paused = true)]
async fn a_push_supersedes_a_deployment_in_flight() {
    let rig = Rig::new();
    rig.create(&spec("web", serde_json::json!({"deploy_timeout_s": 300})));
    rig.deployer.start().await.unwrap();
    let (r1, d1) = rig.push("web", Script::healthy());
    assert_eq!(rig.done(d1).await, DeploymentState::Succeeded);
    // Revision 2 never gets healthy; revision 3 arrives while it is being checked.
    let (r2, d2) = rig.push("web", Script::never_listens());
    rig.until("revision 2 health checking", || {
        rig.state(d2) == DeploymentState::HealthChecking
    })
    .await;
    let (r3, d3) = rig.push("web", Script::healthy());
    assert_eq!(rig.done(d3).await, DeploymentState::Succeeded);
    assert_eq!(rig.state(d2), DeploymentState::Superseded);
    assert_eq!(rig.active("web"), Some(r3));
    assert!(
        rig.instance_ids(r2).is_empty(),
        "revision 2's instances were removed"
    );
    assert!(rig.instance_ids(r1).is_empty());
    assert_eq!(rig.routed("web"), rig.instance_ids(r3));
    assert!(
        rig.activity("web")
            .contains("superseded by a newer deployment"),
        "{}",
        rig.activity("web")
    );
}

#[tokio::test(start_paused = true)]
async fn rollback_redeploys_a_kept_revision() {
    let rig = Rig::new();
    rig.create(&spec("web", serde_json::json!({})));
    rig.deployer.start().await.unwrap();
    let (r1, d1) = rig.push("web", Script::healthy());
    rig.done(d1).await;
    let (r2, d2) = rig.push("web", Script::healthy());
    rig.done(d2).await;
    let d3 = rig
        .store
        .deploy_revision("web", r1, DeploymentKind::Rollback)
        .unwrap();
    rig.deployer.wake("web");
    assert_eq!(rig.done(d3).await, DeploymentState::Succeeded);
    assert_eq!(rig.active("web"), Some(r1));
    assert!(rig.instance_ids(r2).is_empty());
    assert_eq!(rig.routed("web"), rig.instance_ids(r1));
    // The rollback ran revision 1's own image again: two creations of revision 1, one
    // image.
    let images: Vec<String> = rig
        .rt
        .calls()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Call::Create { image, revision } if revision == r1 => Some(image),
            _ => None,
        })
        .collect();
    assert_eq!(images.len(), 2, "{images:?}");
    assert_eq!(images[0], images[1], "a rollback reuses the image");
}

/// Walks a deployment through the state machine to `to`, as a worker would have before
/// the server died.
fn leave_in(store: &Store, dep: i64, to: DeploymentState) {
    use DeploymentState::*;
    let path = [Starting, HealthChecking, SwitchingTraffic, Draining];
    if to == Pending {
        return;
    }
    if to == Failed {
        // Cut short between failing and rolling back.
        store
            .set_deployment_state(dep, Starting, "before the crash")
            .unwrap();
        store
            .set_deployment_state(dep, Failed, "before the crash")
            .unwrap();
        return;
    }
    for s in path {
        store
            .set_deployment_state(dep, s, "before the crash")
            .unwrap();
        if s == to {
            return;
        }
    }
    panic!("no path to {to}");
}

fn cfg_for(rig: &Rig, service: &str, revision: i64, instance: &str) -> InstanceConfig {
    let rev = rig.store.revision(service, revision).unwrap().unwrap();
    InstanceConfig {
        service: service.into(),
        revision,
        instance: instance.into(),
        image: rev.tag,
        env: Vec::new(),
        port: 8080,
        nano_cpus: 1_000_000_000,
        memory_bytes: 1 << 30,
    }
}

#[tokio::test(start_paused = true)]
async fn restart_recovery_in_every_open_state() {
    use DeploymentState::*;
    // Each open state, and whether traffic had switched (the active revision is written
    // during switching_traffic, so both sides of that write are cases).
    for (state, swapped) in [
        (Pending, false),
        (Starting, false),
        (HealthChecking, false),
        (SwitchingTraffic, false),
        (SwitchingTraffic, true),
        (Draining, true),
        (Failed, false),
    ] {
        // A platform that served revision 1 and died while deploying revision 2.
        let store = Arc::new(Store::memory().unwrap());
        let rt = FakeRuntime::new("test");
        let first = Rig::on(store.clone(), rt.clone());
        first.create(&spec("web", serde_json::json!({})));
        let (r1, d1) = first.revision("web", Script::healthy());
        leave_in(&store, d1, Draining);
        store.set_deployment_state(d1, Succeeded, "done").unwrap();
        store.set_active_revision("web", r1).unwrap();
        let blue = rt.leave_running(cfg_for(&first, "web", r1, "blue"), true);
        let (r2, d2) = first.revision("web", Script::healthy());
        leave_in(&store, d2, state);
        if swapped {
            store.set_active_revision("web", r2).unwrap();
        }
        let green = (state != Pending && state != Failed)
            .then(|| rt.leave_running(cfg_for(&first, "web", r2, "green"), true));
        let dead = rt.leave_running(cfg_for(&first, "web", r1, "dead"), false);

        let rig = Rig::on(store.clone(), rt.clone());
        rig.deployer.start().await.unwrap();
        let live: Vec<String> = rt.containers().into_iter().map(|c| c.id).collect();
        assert!(
            !live.contains(&dead),
            "{state}: a stopped container is removed"
        );
        if swapped {
            // Traffic had switched: the deployment is complete; the new instance serves.
            assert_eq!(rig.state(d2), Succeeded, "{state}");
            assert!(
                !live.contains(&blue),
                "{state}: the old revision's instance goes"
            );
            let green = green.clone().unwrap();
            assert!(live.contains(&green), "{state}: the new one is adopted");
            rig.until("the adopted instance routed", || {
                !rig.routed("web").is_empty()
            })
            .await;
            assert_eq!(rig.routed("web"), ["green"], "{state}");
        } else {
            // Not switched: failed with the reason, and deployed again from the start.
            assert_eq!(rig.state(d2), RolledBack, "{state}");
            assert!(
                rig.reason(d2)
                    .contains(&format!("interrupted in state {state}")),
                "{state}: {}",
                rig.reason(d2)
            );
            assert_eq!(
                rig.active("web"),
                Some(r1),
                "{state}: the old revision serves"
            );
            if let Some(g) = &green {
                assert!(!live.contains(g), "{state}: the half-started instance goes");
            }
            let again = rig.store.open_deployment("web").unwrap().unwrap();
            assert_eq!((again.revision, again.kind), (r2, DeploymentKind::Restart));
            assert_eq!(rig.done(again.id).await, Succeeded, "{state}");
            assert_eq!(rig.active("web"), Some(r2));
            assert!(rt.containers().iter().all(|c| c.id != blue));
        }
        assert_eq!(rig.routed("web"), rig.instance_ids(r2), "{state}");
        rig.shutdown.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn scale_to_zero_and_wake_in_both_idle_modes() {
    for mode in ["stop", "pause"] {
        let rig = Rig::new();
        rig.create(&spec(
            "web",
            serde_json::json!({"scaling": {"min_size": 0, "max_size": 3, "idle_mode": mode}}),
        ));
        rig.deployer.start().await.unwrap();
        let (r1, d) = rig.push("web", Script::healthy());
        assert_eq!(rig.done(d).await, DeploymentState::Succeeded);
        let first = rig.instance_ids(r1);
        rig.store.set_desired_instances("web", 0).unwrap();
        rig.deployer.wake("web");
        rig.until("no instance takes traffic", || rig.routed("web").is_empty())
            .await;
        if mode == "pause" {
            rig.until("paused", || rig.rt.containers().iter().any(|c| c.paused))
                .await;
            // Frozen, not removed: the same container is still there.
            let kept: Vec<String> = rig
                .rt
                .containers()
                .into_iter()
                .map(|c| c.config.instance)
                .collect();
            assert_eq!(kept, first, "pause mode keeps the container");
        } else {
            rig.until("removed", || rig.rt.containers().is_empty())
                .await;
        }
        // A request arrives: the scaler wants one, and the deployer wakes it.
        rig.store.set_desired_instances("web", 1).unwrap();
        rig.deployer.wake("web");
        rig.until("one instance routed", || rig.routed("web").len() == 1)
            .await;
        let now = rig.instance_ids(r1);
        if mode == "pause" {
            assert_eq!(now, first, "pause mode wakes the same container");
            assert!(rig
                .rt
                .calls()
                .iter()
                .any(|(_, c)| matches!(c, Call::Unpause(_))));
        } else {
            assert_ne!(now, first, "stop mode starts a new container");
        }
        // Scale out to three and back to one: the newest go.
        rig.store.set_desired_instances("web", 3).unwrap();
        rig.deployer.wake("web");
        rig.until("three routed", || rig.routed("web").len() == 3)
            .await;
        rig.store.set_desired_instances("web", 1).unwrap();
        rig.deployer.wake("web");
        rig.until("one routed", || rig.routed("web").len() == 1)
            .await;
        assert_eq!(rig.routed("web"), now, "{mode}: the oldest instance stays");
        rig.shutdown.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_worker_is_restarted_and_readopts_its_instances() {
    let rig = Rig::new();
    rig.create(&spec("panics", serde_json::json!({})));
    rig.deployer.start().await.unwrap();
    let (r1, d1) = rig.push("panics", Script::healthy());
    assert_eq!(rig.done(d1).await, DeploymentState::Succeeded);
    let serving = rig.instance_ids(r1);

    slipway_core::fault::arm("worker-panic", "panics");
    let (_, d2) = rig.push("panics", Script::healthy());
    assert_eq!(rig.done(d2).await, DeploymentState::RolledBack);
    let activity = rig.activity("panics");
    assert!(
        activity.contains("internal error: the worker of service panics panicked"),
        "{activity}"
    );
    rig.until("re-adopted", || {
        rig.activity("panics")
            .contains("worker restarted: adopted 1 running instance(s) of revision 1")
    })
    .await;
    assert_eq!(rig.instance_ids(r1), serving, "the instance kept running");
    assert_eq!(rig.routed("panics"), serving);
    // The restarted worker takes the next push.
    let (r3, d3) = rig.push("panics", Script::healthy());
    assert_eq!(rig.done(d3).await, DeploymentState::Succeeded);
    assert_eq!(rig.routed("panics"), rig.instance_ids(r3));
    // And a delete: its instances go.
    rig.store.delete_service("panics").unwrap();
    rig.deployer.remove("panics").await;
    assert!(rig.rt.containers().is_empty(), "{:?}", rig.rt.containers());
}

#[tokio::test(start_paused = true)]
async fn secrets_reach_the_app_but_the_sources_own_do_not() {
    let rig = Rig::new();
    let watched = serde_json::json!({
        "source": {"type": "image", "image": "app:latest", "credentials": "REGISTRY"},
        "env": {"PLAIN": "1", "API_KEY": "overridden"},
    });
    rig.create(&spec("env", watched));
    for (name, value) in [("API_KEY", "k1"), ("REGISTRY", "user:pw")] {
        rig.store.set_secret("env", name, value).unwrap();
    }
    rig.deployer.start().await.unwrap();
    let (r1, d1) = rig.push("env", Script::healthy());
    assert_eq!(rig.done(d1).await, DeploymentState::Succeeded);
    let running = rig.rt.running_of(r1);
    let env = &running[0].config.env;
    let get = |k: &str| {
        env.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .next_back()
    };
    assert_eq!(get("PLAIN"), Some("1"));
    assert_eq!(get("API_KEY"), Some("k1"), "a secret wins over a variable");
    assert_eq!(
        get("REGISTRY"),
        None,
        "registry credentials reached the app: {env:?}"
    );
    assert_eq!(get("PORT"), Some("8080"));
}

#[tokio::test(start_paused = true)]
async fn a_paused_service_has_no_instances_and_resumes_its_revision() {
    let rig = Rig::new();
    rig.create(&spec("held", serde_json::json!({})));
    rig.deployer.start().await.unwrap();
    let (r1, d1) = rig.push("held", Script::healthy());
    assert_eq!(rig.done(d1).await, DeploymentState::Succeeded);
    assert_eq!(rig.instance_ids(r1).len(), 1);
    rig.store.set_paused("held", true).unwrap();
    rig.deployer.wake("held");
    rig.until("no instances", || rig.instance_ids(r1).is_empty())
        .await;
    assert!(rig.routed("held").is_empty());
    assert_eq!(
        rig.router
            .route_for_host("held.slipway.localhost")
            .as_deref(),
        Some("held"),
        "still routed, so the router can answer that it is paused"
    );
    // A push while paused waits for the resume.
    let (r2, d2) = rig.push("held", Script::healthy());
    for _ in 0..20 {
        tokio::time::advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
    }
    assert!(rig.rt.running_of(r2).is_empty(), "started while paused");
    rig.store.set_paused("held", false).unwrap();
    rig.deployer.wake("held");
    assert_eq!(rig.done(d2).await, DeploymentState::Succeeded);
    assert_eq!(rig.routed("held"), rig.instance_ids(r2));
}

#[tokio::test(start_paused = true)]
async fn app_output_is_kept_even_from_a_container_that_died_at_once() {
    let rig = Rig::new();
    rig.create(&spec("talk", serde_json::json!({})));
    rig.deployer.start().await.unwrap();
    let mut talks = Script::healthy();
    talks.logs = "listening on 8080\nready".into();
    let (r1, d1) = rig.push("talk", talks);
    assert_eq!(rig.done(d1).await, DeploymentState::Succeeded);
    let lines = |rig: &Rig| -> Vec<(i64, String)> {
        rig.store
            .app_logs("talk", &Default::default())
            .unwrap()
            .into_iter()
            .map(|l| (l.revision, l.line))
            .collect()
    };
    rig.until("the running app's lines", || lines(&rig).len() == 2)
        .await;
    assert_eq!(lines(&rig)[0], (r1, "listening on 8080".to_string()));
    let (r2, d2) = rig.push("talk", Script::crashes(3, "Traceback\nKeyError: 'PORT'"));
    assert_eq!(rig.done(d2).await, DeploymentState::RolledBack);
    assert!(
        rig.rt.running_of(r2).is_empty(),
        "the crashed container is gone"
    );
    let kept = lines(&rig);
    assert!(
        kept.contains(&(r2, "KeyError: 'PORT'".to_string())),
        "the crash's last words stay readable: {kept:?}"
    );
}

/// An instance that dies before it is healthy, on an engine slow to answer the log
/// follower: its container is removed only after the follower read what it wrote.
#[tokio::test(start_paused = true)]
async fn output_of_an_instance_that_died_before_healthy_outlives_a_slow_follower() {
    let rig = Rig::new();
    rig.create(&spec("talk", serde_json::json!({})));
    rig.deployer.start().await.unwrap();
    let mut dies = Script::dies_after(Duration::from_millis(50), 3);
    dies.health = slipway_runtime::fake::Health::NoListener;
    dies.logs = "booting\nlast words before the crash".into();
    dies.logs_answer_after = Some(Duration::from_millis(1500));
    let (r1, d1) = rig.push("talk", dies);
    assert_eq!(rig.done(d1).await, DeploymentState::RolledBack);
    rig.until("its container to go", || rig.rt.containers().is_empty())
        .await;
    let kept: Vec<(i64, String)> = rig
        .store
        .app_logs("talk", &Default::default())
        .unwrap()
        .into_iter()
        .map(|l| (l.revision, l.line))
        .collect();
    assert!(
        kept.contains(&(r1, "last words before the crash".to_string())),
        "the crash's last words stay readable: {kept:?}"
    );
}
