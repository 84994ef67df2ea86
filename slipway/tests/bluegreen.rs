//! Issue 4 on the real engine: blue/green deployments gated by health checks, under load,
//! failing safely, rolling back, and surviving kill -9 mid-deployment.

mod support;

use std::time::Duration;

use serde_json::json;
use support::load::Load;
use support::{build_site_image, wait_for, Platform, Repo};

const HEALTHY: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n";
const SLOW: &str =
    "#!/bin/sh\nsleep 3\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow done\\n'\n";

/// A busybox app with a version page, a slow CGI and a health CGI.
fn app(repo: &Repo, version: &str, health: &str, cmd: &str) {
    repo.write(
        "Dockerfile",
        &format!("FROM busybox:latest\nCOPY www /www\nCMD {cmd}\n"),
    );
    repo.write("www/index.html", &format!("version {version}\n"));
    repo.write("www/cgi-bin/slow", SLOW);
    repo.write("www/cgi-bin/health", health);
    repo.commit(version);
}

const SERVE: &str = "httpd -f -p $PORT -h /www";

/// For each "replacing it after N s" health event, N and the milliseconds until the next
/// instance start the scaler logged.
async fn backoff_pairs(p: &Platform, service: &str) -> Vec<(u64, i64)> {
    let events = p
        .get_json(&format!("/v1/services/{service}/events?limit=1000"))
        .await;
    let events = events.as_array().unwrap();
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let msg = e["message"].as_str().unwrap_or("");
        let Some(wait) = msg
            .lines()
            .find_map(|l| l.strip_prefix("replacing it after "))
            .and_then(|l| l.split(' ').next()?.parse::<u64>().ok())
        else {
            continue;
        };
        let at = e["at_ms"].as_i64().unwrap();
        if let Some(start) = events[i + 1..].iter().find(|n| {
            n["kind"] == "scale" && n["message"].as_str().unwrap_or("").starts_with("started ")
        }) {
            out.push((wait, start["at_ms"].as_i64().unwrap() - at));
        }
    }
    out
}

/// The activity-log messages of one deployment (`deployment N (revision R): ...`).
async fn deployment_events(p: &Platform, service: &str, id: i64) -> String {
    let events = p
        .get_json(&format!("/v1/services/{service}/events?limit=1000"))
        .await;
    let prefix = format!("deployment {id} (");
    events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with(&prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

fn spec(name: &str) -> serde_json::Value {
    json!({"name": name, "health_check": {"protocol": "http", "path": "/cgi-bin/health", "interval_s": 1,
        "healthy_threshold": 2, "unhealthy_threshold": 2}, "deploy_timeout_s": 8,
        "network": {"drain_timeout_s": 10}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_deployments_under_load_fail_no_request() {
    let p = Platform::start().await;
    p.create(spec("bg")).await;
    let repo = Repo::new(&p, None, "bg");
    app(&repo, "0", HEALTHY, SERVE);
    repo.push();
    p.wait_content("bg", "version 0", Duration::from_secs(120))
        .await;

    // ~200 requests/s of short requests plus long (3 s) requests that span the swaps.
    let load = Load::start(
        &p.http,
        p.router_port,
        "bg",
        &[
            ("/", 10, Duration::from_millis(50)),
            ("/cgi-bin/slow", 3, Duration::from_millis(10)),
        ],
        Duration::from_secs(600),
    );
    for v in 1..=20 {
        let last = p.latest_deployment_id("bg").await;
        app(&repo, &v.to_string(), HEALTHY, SERVE);
        repo.push();
        let d = p
            .wait_deployment_done("bg", last + 1, Duration::from_secs(120))
            .await;
        assert_eq!(d["state"], "succeeded", "deployment {v}: {d}");
        assert!(p
            .body("bg", "/")
            .await
            .unwrap()
            .contains(&format!("version {v}")));
    }
    let tally = load.stop().await;
    let ok = tally.ok.load(std::sync::atomic::Ordering::Relaxed);
    assert!(ok > 1000, "the load ran: {}", tally.summary());
    assert_eq!(tally.failures(), 0, "{}", tally.summary());
    // The load was offered at its rate: fewer than 10% of the 200/s short requests were
    // missed or sent late.
    let (scheduled, missed) = tally.pacing("/");
    assert!(
        scheduled > 1000 && missed * 10 < scheduled,
        "offered load: {missed} of {scheduled} sends missed or late"
    );
    // Old instances were drained and stopped: one instance runs.
    support::wait_for("old instances to stop", Duration::from_secs(30), || async {
        p.containers().len() == 1
    })
    .await;
    // Only the newest 5 revisions' images are kept.
    let revs = p.get_json("/v1/services/bg/revisions").await;
    assert_eq!(revs.as_array().unwrap().len(), 5, "{revs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deployments_leave_the_old_version_serving() {
    let p = Platform::start().await;
    p.create(spec("safe")).await;
    let repo = Repo::new(&p, None, "safe");
    app(&repo, "good", HEALTHY, SERVE);
    repo.push();
    p.wait_content("safe", "version good", Duration::from_secs(120))
        .await;

    let sick_later = "#!/bin/sh\nstart=$(cat /tmp/started)\nnow=$(date +%s)\nif [ $((now - start)) -ge 1 ]; then printf 'Status: 500\\r\\nContent-Type: text/plain\\r\\n\\r\\nsick\\n'; else printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'; fi\n";
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "crash",
            HEALTHY,
            "echo 'fatal: DATABASE_URL is not set' && exit 3",
            "exited with code 3",
        ),
        (
            "deaf",
            HEALTHY,
            "echo 'starting, but never listening' && sleep 3600",
            "did not pass its health check within 8 s",
        ),
        (
            "http500",
            "#!/bin/sh\nprintf 'Status: 500\\r\\nContent-Type: text/plain\\r\\n\\r\\nbroken\\n'\n",
            SERVE,
            "answered 500",
        ),
        (
            "sick-later",
            sick_later,
            "date +%s > /tmp/started && httpd -f -p $PORT -h /www",
            "answered 500",
        ),
    ];
    let load = Load::start(
        &p.http,
        p.router_port,
        "safe",
        &[("/", 5, Duration::from_millis(50))],
        Duration::from_secs(300),
    );
    for (version, health, cmd, why) in cases {
        let last = p.latest_deployment_id("safe").await;
        app(&repo, version, health, cmd);
        repo.push();
        if version == "deaf" {
            // The failure explains itself while the deployment runs, in the API and the CLI.
            support::wait_for("a progress reason", Duration::from_secs(60), || async {
                let d = p.get_json("/v1/services/safe/deployments").await;
                d[0]["state"] == "health_checking"
                    && d[0]["reason"]
                        .as_str()
                        .unwrap_or("")
                        .contains("not healthy yet (check")
            })
            .await;
            let out = p.cli(&["status", "safe"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("health_checking") && text.contains("not healthy yet"),
                "{text}"
            );
        }
        let d = p
            .wait_deployment_done("safe", last + 1, Duration::from_secs(120))
            .await;
        assert_eq!(d["state"], "rolled_back", "{version}: {d}");
        // This case's own deployment explains itself: events of earlier cases do not count.
        let own = deployment_events(&p, "safe", d["id"].as_i64().unwrap()).await;
        assert!(
            own.contains(why),
            "{version}: deployment {} lacks {why:?}:\n{own}",
            d["id"]
        );
        assert!(own.contains("keeps serving"), "{version}: {own}");
        if version == "crash" {
            // The crash explains itself with the app's own last words.
            assert!(own.contains("fatal: DATABASE_URL is not set"), "{own}");
        }
        assert!(p.body("safe", "/").await.unwrap().contains("version good"));
        let svc = p.service("safe").await;
        assert_eq!(svc["active_revision"], 1, "{svc}");
    }
    let tally = load.stop().await;
    assert_eq!(tally.failures(), 0, "{}", tally.summary());
    assert_eq!(p.containers().len(), 1, "failed instances were removed");

    // Rollback: to revision 1 explicitly, with no rebuild.
    let builds_before = p
        .get_json("/v1/services/safe/builds")
        .await
        .as_array()
        .unwrap()
        .len();
    app(&repo, "second", HEALTHY, SERVE);
    let last = p.latest_deployment_id("safe").await;
    repo.push();
    p.wait_deployment_done("safe", last + 1, Duration::from_secs(120))
        .await;
    p.wait_content("safe", "version second", Duration::from_secs(10))
        .await;
    let out = p.cli(&["rollback", "safe", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It waited for the outcome, as `deploy` does.
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("revision 1 is live"), "{said}");
    p.wait_content("safe", "version good", Duration::from_secs(30))
        .await;
    let builds_after = p
        .get_json("/v1/services/safe/builds")
        .await
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        builds_after,
        builds_before + 1,
        "only the push built; the rollback reused the image"
    );
    let d = p
        .wait_deployment_done("safe", 0, Duration::from_secs(30))
        .await;
    assert_eq!(
        (d["kind"].as_str(), d["state"].as_str()),
        (Some("rollback"), Some("succeeded")),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_instances_that_turn_unhealthy_are_replaced() {
    let p = Platform::start().await;
    p.create(spec("heal")).await;
    let repo = Repo::new(&p, None, "heal");
    // Healthy until /tmp/sick exists; the test makes it exist.
    let health = "#!/bin/sh\nif [ -f /tmp/sick ]; then printf 'Status: 503\\r\\n\\r\\n'; else printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'; fi\n";
    // A request that is still running when the instance turns unhealthy.
    repo.write(
        "www/cgi-bin/slower",
        "#!/bin/sh\nsleep 7\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslower done\\n'\n",
    );
    app(&repo, "one", health, SERVE);
    repo.push();
    p.wait_content("heal", "version one", Duration::from_secs(120))
        .await;
    let first = p.containers();
    assert_eq!(first.len(), 1);
    let st = std::process::Command::new("docker")
        .args(["exec", &first[0], "touch", "/tmp/sick"])
        .status()
        .unwrap();
    assert!(st.success());
    // It leaves the route after two failed checks (~2 s), but its in-flight request gets
    // the drain timeout to finish before it is stopped.
    let in_flight = {
        let http = p.http.clone();
        let port = p.router_port;
        tokio::spawn(async move { support::get_via(&http, port, "heal", "/cgi-bin/slower").await })
    };
    support::wait_for(
        "the sick instance to be replaced",
        Duration::from_secs(60),
        || async {
            let now = p.containers();
            now.len() == 1 && now[0] != first[0]
        },
    )
    .await;
    p.wait_content("heal", "version one", Duration::from_secs(30))
        .await;
    let activity = p.activity("heal").await;
    assert!(activity.contains("failed 2 health checks in a row"));
    assert!(
        activity.contains("it stops once its in-flight requests finish"),
        "{activity}"
    );
    let reply = in_flight.await.unwrap();
    assert!(
        matches!(&reply, Ok((200, b)) if b.contains("slower done")),
        "the in-flight request was cut: {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_deployment_leaves_one_revision_and_no_orphans() {
    let mut p = Platform::start().await;
    p.create(spec("crashy")).await;
    let repo = Repo::new(&p, None, "crashy");
    app(&repo, "old", HEALTHY, SERVE);
    repo.push();
    p.wait_content("crashy", "version old", Duration::from_secs(120))
        .await;
    let old = p.containers();
    // The new version takes 3 s to listen: kill the server while it is health-checked.
    app(
        &repo,
        "new",
        HEALTHY,
        "sleep 3 && httpd -f -p $PORT -h /www",
    );
    repo.push();
    support::wait_for(
        "the deployment to reach health_checking",
        Duration::from_secs(120),
        || async {
            let d = p.get_json("/v1/services/crashy/deployments").await;
            d[0]["revision"] == 2 && d[0]["state"] == "health_checking"
        },
    )
    .await;
    let both = p.containers();
    assert_eq!(both.len(), 2, "old and new run side by side");
    let interrupted: Vec<_> = both.iter().filter(|c| !old.contains(c)).cloned().collect();
    p.kill9();
    p.spawn().await;
    // After the restart's reconcile pass the interrupted deployment's container is gone
    // (the redone deployment starts a fresh one) and the old instance still serves.
    let now = p.containers();
    assert!(
        interrupted.iter().all(|c| !now.contains(c)),
        "orphan left: {interrupted:?} in {now:?}"
    );
    assert!(
        now.contains(&old[0]),
        "the old instance was adopted: {now:?}"
    );
    assert!(p.body("crashy", "/").await.unwrap().contains("version old"));
    // The interrupted deployment is recorded and redone; the new revision then serves.
    let d = p
        .wait_deployment_done("crashy", 0, Duration::from_secs(60))
        .await;
    assert_eq!(d["state"], "succeeded", "{d}");
    p.wait_content("crashy", "version new", Duration::from_secs(10))
        .await;
    support::wait_for("one container", Duration::from_secs(30), || async {
        p.containers().len() == 1
    })
    .await;
    assert!(p
        .activity("crashy")
        .await
        .contains("interrupted in state health_checking by a server restart"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_a_deployment_supersedes_it() {
    let p = Platform::start().await;
    p.create(spec("race")).await;
    let repo = Repo::new(&p, None, "race");
    app(&repo, "one", HEALTHY, SERVE);
    repo.push();
    p.wait_content("race", "version one", Duration::from_secs(120))
        .await;
    // "two" takes 4 s to listen; "three" is pushed while "two" is being health-checked.
    app(
        &repo,
        "two",
        HEALTHY,
        "sleep 4 && httpd -f -p $PORT -h /www",
    );
    repo.push();
    support::wait_for(
        "two to be health-checked",
        Duration::from_secs(60),
        || async {
            let d = p.get_json("/v1/services/race/deployments").await;
            d[0]["revision"] == 2 && d[0]["state"] == "health_checking"
        },
    )
    .await;
    app(&repo, "three", HEALTHY, SERVE);
    repo.push();
    p.wait_content("race", "version three", Duration::from_secs(60))
        .await;
    let deps = p.get_json("/v1/services/race/deployments").await;
    let states: Vec<(i64, String)> = deps
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["revision"].as_i64().unwrap(),
                d["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(states.contains(&(2, "superseded".into())), "{states:?}");
    assert!(!p.body("race", "/").await.unwrap().contains("version two"));
    let d = p
        .wait_deployment_done("race", 0, Duration::from_secs(30))
        .await;
    assert_eq!(
        (d["revision"].as_i64(), d["state"].as_str()),
        (Some(3), Some("succeeded"))
    );
    support::wait_for("one container", Duration::from_secs(30), || async {
        p.containers().len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loops_back_off_instead_of_busy_looping() {
    let p = Platform::start().await;
    p.create(spec("loop")).await;
    let repo = Repo::new(&p, None, "loop");
    // Healthy long enough to deploy, then the container exits: every replacement dies young.
    app(
        &repo,
        "flaky",
        HEALTHY,
        "(httpd -f -p $PORT -h /www &) ; sleep 3 ; echo 'giving up' ; exit 9",
    );
    repo.push();
    let d = p
        .wait_deployment_done("loop", 0, Duration::from_secs(120))
        .await;
    assert_eq!(d["state"], "succeeded", "{d}");
    // Each death is followed by a start after the logged backoff: 2, 4 and 8 s, measured
    // between the events' own timestamps (with room for the start and health check).
    support::wait_for(
        "three replacements with backoffs of 2, 4 and 8 s",
        Duration::from_secs(90),
        || async { backoff_pairs(&p, "loop").await.len() >= 3 },
    )
    .await;
    let pairs = backoff_pairs(&p, "loop").await;
    let activity = p.activity("loop").await;
    let waits: Vec<u64> = pairs.iter().take(3).map(|(w, _)| *w).collect();
    assert_eq!(waits, vec![2, 4, 8], "{pairs:?}\n{activity}");
    for (wait, took_ms) in pairs.iter().take(3) {
        let want = *wait as i64 * 1000;
        assert!(
            *took_ms >= want - 250 && *took_ms <= want + 5000,
            "a {wait} s backoff took {took_ms} ms: {pairs:?}"
        );
    }
    assert!(
        activity.contains("exited with code 9") && activity.contains("giving up"),
        "{activity}"
    );
}

/// `PATCH` of `network` and `health_check` applies to the running service without a new
/// revision: the router redirects plain HTTP at once after `https_redirect`, and an HTTP
/// check of a path the app does not serve takes its instance out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_and_health_check_changes_apply_to_the_running_service() {
    let p = Platform::start().await;
    let tag = format!("slipway-test-patch:{}", p.platform_id);
    build_site_image(&p, &tag, "patched live");
    p.create(
        json!({"name": "live", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "image", "image": tag}, "health_check": {"interval_s": 1}}),
    )
    .await;
    p.wait_content("live", "patched live", Duration::from_secs(60))
        .await;
    let patch = |body: serde_json::Value| {
        let p = &p;
        async move {
            let (s, v) = p
                .call("PATCH", "/v1/services/live", Some(&body.to_string()), None)
                .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(
                v["revision"],
                serde_json::Value::Null,
                "a new revision: {v}"
            );
        }
    };
    patch(json!({"network": {"https_redirect": true}})).await;
    wait_for(
        "plain HTTP to be redirected",
        Duration::from_secs(10),
        || async { matches!(p.get("live", "/").await, Ok((308, _))) },
    )
    .await;
    patch(json!({"network": {"https_redirect": false}})).await;
    p.wait_content("live", "patched live", Duration::from_secs(10))
        .await;
    patch(
        json!({"health_check": {"protocol": "http", "path": "/no-such-page",
        "unhealthy_threshold": 1}}),
    )
    .await;
    p.wait_activity(
        "live",
        "failed 1 health checks in a row",
        Duration::from_secs(30),
    )
    .await;
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &tag])
        .output();
}
