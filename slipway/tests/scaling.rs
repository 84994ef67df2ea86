//! Issue 5 on the real engine: scale to zero and wake on the first requests, scale up in
//! the panic window and back down, no flapping under steady load, warm idle by pause.

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use support::load::Load;
use support::{wait_for, Platform, Repo};

const SLOW: &str =
    "#!/bin/sh\nsleep 1\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow done\\n'\n";

async fn deploy(p: &Platform, name: &str, scaling: serde_json::Value) -> Repo {
    p.create(json!({"name": name, "health_check": {"interval_s": 1}, "scaling": scaling}))
        .await;
    let repo = Repo::new(p, None, name);
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nCOPY www /www\nCMD httpd -f -p $PORT -h /www\n",
    );
    repo.write("www/index.html", &format!("hello from {name}\n"));
    repo.write("www/cgi-bin/slow", SLOW);
    repo.commit("app");
    repo.push();
    p.wait_content(
        name,
        &format!("hello from {name}"),
        Duration::from_secs(120),
    )
    .await;
    repo
}

async fn ready(p: &Platform, name: &str) -> (i64, i64) {
    let v = p.service(name).await;
    (
        v["instances"]["ready"].as_i64().unwrap(),
        v["instances"]["paused"].as_i64().unwrap(),
    )
}

async fn wait_ready(
    p: &Platform,
    name: &str,
    want: impl Fn(i64, i64) -> bool,
    within: Duration,
    what: &str,
) {
    let deadline = Instant::now() + within;
    loop {
        let (r, z) = ready(p, name).await;
        if want(r, z) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: ready {r} paused {z}\n{}",
            p.activity(name).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_requests_at_zero_all_get_200() {
    let p = Platform::start().await;
    deploy(
        &p,
        "zero",
        json!({"min_size": 0, "scale_to_zero_grace_s": 1}),
    )
    .await;
    wait_ready(
        &p,
        "zero",
        |r, _| r == 0,
        Duration::from_secs(30),
        "scale to zero",
    )
    .await;
    support::wait_for(
        "stop mode to remove the container",
        Duration::from_secs(30),
        || async { p.containers().is_empty() },
    )
    .await;
    let reqs = (0..100).map(|_| p.get("zero", "/"));
    let results = join_all(reqs).await;
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok((200, b)) if b.contains("hello from zero")))
        .count();
    assert_eq!(
        ok,
        100,
        "{:?}",
        results
            .iter()
            .filter(|r| !matches!(r, Ok((200, _))))
            .take(5)
            .collect::<Vec<_>>()
    );
    let activity = p.activity("zero").await;
    assert!(
        activity.contains("a request arrived while at zero"),
        "{activity}"
    );
    assert!(activity.contains("scaling toward zero"), "{activity}");
    // Scaling decisions reach the metrics too.
    let (_, m) = p.call("GET", "/metrics", None, None).await;
    let m = m.as_str().unwrap_or_default().to_string();
    assert!(
        m.contains("slipway_scaler_desired_instances{service=\"zero\"}")
            && m.contains("slipway_instances{service=\"zero\",state=\"ready\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_step_scales_up_in_the_panic_window_and_back_to_zero() {
    let p = Platform::start().await;
    // Target 2 in flight per instance; panic on a 2 s window; a short stable window.
    deploy(
        &p,
        "step",
        json!({"min_size": 0, "max_size": 4, "max_concurrency": 4, "target_utilization_pct": 50,
        "stable_window_s": 6, "panic_window_s": 2, "scale_to_zero_grace_s": 2}),
    )
    .await;
    wait_ready(
        &p,
        "step",
        |r, _| r == 1,
        Duration::from_secs(10),
        "one instance after the push",
    )
    .await;
    // Eight clients in a closed loop of 1 s requests: concurrency ~8, four instances' worth.
    let started = Instant::now();
    let load = Load::start(
        &p.http,
        p.router_port,
        "step",
        &[("/cgi-bin/slow", 8, Duration::from_millis(10))],
        Duration::from_secs(60),
    );
    wait_ready(
        &p,
        "step",
        |r, _| r >= 2,
        Duration::from_secs(2 + 6),
        "scale-up within the panic window (+ start time)",
    )
    .await;
    let up_after = started.elapsed();
    wait_ready(
        &p,
        "step",
        |r, _| r >= 3,
        Duration::from_secs(20),
        "scale-up to the load",
    )
    .await;
    let tally = load.stop().await;
    assert_eq!(tally.failures(), 0, "{}", tally.summary());
    // The first scale-up is a panic-mode decision, and it follows from its inputs: at
    // least 200% of the ready instances' target (4 x 50% = 2 per instance), and the
    // desired count is what the panic window's concurrency needs.
    let activity = p.activity("step").await;
    let up = activity
        .lines()
        .find(|l| l.starts_with("scale desired instances 1 -> "))
        .unwrap_or_else(|| panic!("no scale-up from 1:\n{activity}"));
    let num = |key: &str| -> f64 {
        let at = up.find(key).unwrap_or_else(|| panic!("{key} in {up}")) + key.len();
        up[at..]
            .split([',', ']'])
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{key} in {up}: {e}"))
    };
    let to: f64 = up["scale desired instances 1 -> ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (ready, panic, stable) = (
        num("ready "),
        num("panic-window concurrency "),
        num("stable-window concurrency "),
    );
    assert!(up.contains("panicking true"), "{up}");
    let target = 2.0;
    assert!(
        panic / target >= 2.0 * ready,
        "not over the panic threshold: {up}"
    );
    // The scaler's rounding: ceil(load / target) with a relative slack against float noise.
    let need = |load: f64| (load / target * (1.0 - 1e-9)).ceil();
    let want = ready.max(need(panic)).max(need(stable)).min(4.0);
    assert_eq!(to, want, "{up}");
    // Load stopped: down one at a time, then to zero after the grace period.
    wait_ready(
        &p,
        "step",
        |r, _| r == 0,
        Duration::from_secs(60),
        "back to zero",
    )
    .await;
    support::wait_for("containers removed", Duration::from_secs(30), || async {
        p.containers().is_empty()
    })
    .await;
    eprintln!("scaled up after {up_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_changes_scale_at_most_once_per_stable_window() {
    let p = Platform::start().await;
    // Target 2 per instance; steady concurrency ~5 -> 3 instances.
    deploy(
        &p,
        "steady",
        json!({"min_size": 1, "max_size": 6, "max_concurrency": 4, "target_utilization_pct": 50,
        "stable_window_s": 6, "panic_window_s": 3}),
    )
    .await;
    let load = Load::start(
        &p.http,
        p.router_port,
        "steady",
        &[("/cgi-bin/slow", 5, Duration::from_millis(10))],
        Duration::from_secs(60),
    );
    // Let it ramp for two stable windows, then watch four windows.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let events = p.get_json("/v1/services/steady/events?limit=1000").await;
    let mark = events.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(24)).await;
    let tally = load.stop().await;
    assert_eq!(tally.failures(), 0, "{}", tally.summary());
    let events = p
        .get_json(&format!(
            "/v1/services/steady/events?after={mark}&limit=1000"
        ))
        .await;
    let changes: Vec<(i64, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["kind"] == "scale"
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("desired instances")
        })
        .map(|e| {
            (
                e["at_ms"].as_i64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for w in changes.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= 6000,
            "two changes within one stable window: {changes:?}"
        );
    }
    assert!(changes.len() <= 4, "{changes:?}");
    let (r, _) = ready(&p, "steady").await;
    assert!(
        (2..=4).contains(&r),
        "steady load of ~5 at target 2 runs 3 instances, give or take one: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_mode_wakes_the_same_container() {
    let p = Platform::start().await;
    deploy(
        &p,
        "warm",
        json!({"min_size": 0, "scale_to_zero_grace_s": 1, "idle_mode": "pause"}),
    )
    .await;
    let before = p.containers();
    assert_eq!(before.len(), 1);
    wait_ready(
        &p,
        "warm",
        |r, z| r == 0 && z == 1,
        Duration::from_secs(30),
        "paused when idle",
    )
    .await;
    assert_eq!(
        p.service("warm").await["status"],
        "idle (warm)",
        "scale to zero's warm idle is not called paused"
    );
    let state = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Paused}}", &before[0]])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "true");
    let results = join_all((0..20).map(|_| p.get("warm", "/"))).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok((200, _)))),
        "{results:?}"
    );
    assert_eq!(
        p.containers(),
        before,
        "woken by unpause, not a new container"
    );
    assert!(p.activity("warm").await.contains("unpaused 1 instance"));
}

/// Pausing removes every instance and answers 503 with a page saying so (the cold-start
/// gate does not wake it); resuming brings the active revision back within seconds.
/// Both are in the activity log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let p = Platform::start().await;
    deploy(&p, "held", json!({"min_size": 1})).await;
    let before = p.containers();
    assert_eq!(before.len(), 1);
    let out = p.cli(&["pause", "held"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("held paused"));
    wait_for(
        "the router to answer 503",
        Duration::from_secs(10),
        || async { matches!(p.get("held", "/").await, Ok((503, _))) },
    )
    .await;
    let (s, body) = p.get("held", "/").await.unwrap();
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("held is paused"), "{body}");
    wait_for("the instance to go", Duration::from_secs(30), || async {
        p.containers().is_empty()
    })
    .await;
    assert_eq!(p.service("held").await["status"], "paused");
    // Requests do not wake it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(p.containers().is_empty());
    assert_eq!(p.get("held", "/").await.unwrap().0, 503);

    let out = p.cli(&["resume", "held"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the service to answer again",
        Duration::from_secs(20),
        || async { matches!(p.get("held", "/").await, Ok((200, _))) },
    )
    .await;
    assert_ne!(p.service("held").await["status"], "paused");
    let log = p.activity("held").await;
    assert!(
        log.contains("paused: its instances drain and stop"),
        "{log}"
    );
    assert!(log.contains("resumed: revision 1 starts again"), "{log}");
    // Resuming a running service is not an error, and changes nothing.
    let (s, v) = p.call("POST", "/v1/services/held/resume", None, None).await;
    assert_eq!((s, v["changed"].clone()), (200, json!(false)));
}

const ENV_CGI: &str =
    "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nGREETING=%s\\n' \"$GREETING\"\n";

/// `slipway env set|unset` change the environment as a new revision, deployed
/// blue/green: the app sees the variable, then not; `env list` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_changes_are_new_revisions() {
    let p = Platform::start().await;
    p.create(json!({"name": "envy", "health_check": {"interval_s": 1}}))
        .await;
    let repo = Repo::new(&p, None, "envy");
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nCOPY www /www\nCMD httpd -f -p $PORT -h /www\n",
    );
    repo.write("www/index.html", "envy\n");
    repo.write("www/cgi-bin/env", ENV_CGI);
    repo.commit("app");
    repo.push();
    let says = |want: &'static str| {
        let p = &p;
        async move {
            wait_for(want, Duration::from_secs(60), || async {
                matches!(p.get("envy", "/cgi-bin/env").await, Ok((200, b)) if b.contains(want))
            })
            .await
        }
    };
    says("GREETING=\n").await;
    let out = p.cli(&["env", "set", "envy", "GREETING=bonjour", "MODE=test"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("revision 2 deploys it"), "{text}");
    says("GREETING=bonjour").await;
    let list = p.cli(&["env", "list", "envy"]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        listed.contains("GREETING=bonjour") && listed.contains("MODE=test"),
        "{listed}"
    );
    let out = p.cli(&["env", "unset", "envy", "GREETING"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    says("GREETING=\n").await;
    let revs = p.get_json("/v1/services/envy/revisions").await;
    assert_eq!(revs.as_array().unwrap().len(), 3, "{revs}");
    let bad = p.cli(&["env", "set", "envy", "1BAD=x"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(err.contains("422") && err.contains("env"), "{err}");
}
