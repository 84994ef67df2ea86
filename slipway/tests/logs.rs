//! Application logs end to end on the real engine: collected as written, searchable,
//! streamed, and kept after a crash removes the container.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const APP: &str = "FROM busybox:latest\nCOPY www /www\nCMD sh -c 'echo \"booting on $PORT\"; echo \"a warning\" >&2; exec httpd -f -p $PORT -h /www'\n";
// The last line has no newline: it is kept all the same.
const CRASH: &str =
    "FROM busybox:latest\nCMD sh -c 'printf \"last words before the crash\"; exit 3'\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_logs_are_kept_searchable_streamed_and_survive_a_crash() {
    let p = Platform::start().await;
    p.create(json!({"name": "talky", "health_check": {"interval_s": 1}}))
        .await;
    let repo = Repo::new(&p, None, "talky");
    repo.write("Dockerfile", APP);
    repo.write("www/index.html", "talky\n");
    repo.commit("app");
    repo.push();
    p.wait_content("talky", "talky", Duration::from_secs(60))
        .await;
    let logs = |extra: &'static str| {
        let p = &p;
        async move { p.get_json(&format!("/v1/services/talky/logs{extra}")).await }
    };
    wait_for("both lines", Duration::from_secs(20), || async {
        logs("").await.as_array().is_some_and(|a| a.len() >= 2)
    })
    .await;
    let all = logs("").await;
    let lines: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_string(),
                l["line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        lines.contains(&("stdout".into(), "booting on 8080".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "a warning".into())),
        "{lines:?}"
    );
    assert_eq!(all[0]["revision"], 1);
    assert!(all[0]["instance"].as_str().is_some_and(|i| !i.is_empty()));
    let found = logs("?q=WARNING").await;
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let later = logs("?since=99999999999999").await;
    assert!(later.as_array().unwrap().is_empty());

    // The CLI, and the stream (server-sent events).
    let out = p.cli(&["logs", "talky", "--app", "--grep", "booting"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("booting on 8080") && !text.contains("a warning"),
        "{text}"
    );
    let sse = std::process::Command::new("curl")
        .args(["-sN", "--max-time", "2", "-H"])
        .arg(format!("Authorization: Bearer {}", p.token))
        .arg(format!("{}/v1/services/talky/logs/stream", p.api))
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&sse.stdout).into_owned();
    assert!(
        events.contains("data: {")
            && events.contains("booting on 8080")
            && events.contains("\nid: "),
        "{events}"
    );

    // A revision that crashes at once: the deployment fails, its container is removed,
    // and what it printed stays readable.
    repo.write("Dockerfile", CRASH);
    repo.commit("crash");
    repo.push();
    wait_for("the crash's lines", Duration::from_secs(90), || async {
        logs("?q=last%20words")
            .await
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let crash = logs("?q=last%20words").await;
    let rev = crash[0]["revision"].as_i64().unwrap();
    assert!(rev >= 2, "{crash}");
    wait_for(
        "the crashed containers to go",
        Duration::from_secs(60),
        || async {
            !p.activity("talky").await.is_empty()
                && p.service("talky").await["latest_deployment"]["state"] == "rolled_back"
        },
    )
    .await;
    let still = logs("?q=last%20words").await;
    assert!(
        !still.as_array().unwrap().is_empty(),
        "kept after the container went"
    );
    // The first revision's lines are still there too.
    assert!(logs("?q=booting")
        .await
        .as_array()
        .is_some_and(|a| !a.is_empty()));
}

/// The metrics history: requests, status classes, latency and instances per interval,
/// kept in the store and served for a period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_history_records_requests_latency_and_instances() {
    let p = Platform::start_with_env(&[("SLIPWAY_HISTORY_SAMPLE_S", "1")]).await;
    p.create(json!({"name": "graph", "health_check": {"interval_s": 1}}))
        .await;
    let repo = Repo::new(&p, None, "graph");
    repo.write("Dockerfile", APP);
    repo.write("www/index.html", "graph\n");
    repo.commit("app");
    repo.push();
    p.wait_content("graph", "graph", Duration::from_secs(60))
        .await;
    for _ in 0..20 {
        assert_eq!(p.get("graph", "/").await.unwrap().0, 200);
    }
    for _ in 0..5 {
        assert_eq!(p.get("graph", "/nope").await.unwrap().0, 404);
    }
    let totals = || async {
        let v = p.get_json("/v1/services/graph/metrics?period=1h").await;
        let pts = v["points"].as_array().cloned().unwrap_or_default();
        let sum = |k: &str| pts.iter().map(|x| x[k].as_i64().unwrap_or(0)).sum::<i64>();
        (v["resolution_s"].clone(), sum("s2xx"), sum("s4xx"), pts)
    };
    wait_for(
        "the requests in the history",
        Duration::from_secs(20),
        || async {
            let (_, ok, notfound, _) = totals().await;
            ok >= 20 && notfound >= 5
        },
    )
    .await;
    let (res, _, _, pts) = totals().await;
    assert_eq!(res, 1);
    let busy = pts
        .iter()
        .find(|x| x["requests"].as_i64() > Some(0))
        .unwrap();
    assert!(busy["p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{busy}");
    assert!(pts.iter().any(|x| x["instances"] == 1), "{pts:?}");
    let (s, v) = p
        .call("GET", "/v1/services/graph/metrics?period=2y", None, None)
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["field"], "period");
}

// Serves, then dies ten seconds in: a running instance that crashes (the worker replaces
// it, and the replacement crashes the same way).
const DIES_LATER: &str = "FROM busybox:latest\nCOPY www /www\nCMD sh -c 'echo \"instance up\"; httpd -p $PORT -h /www; sleep 10; echo \"dying after serving\" >&2; exit 1'\n";
const STEADY: &str = "FROM busybox:latest\nCOPY www /www\nCMD sh -c 'echo \"steady up\"; exec httpd -f -p $PORT -h /www'\n";

/// The lines holding `needle`: (instance, line).
async fn lines_with(p: &Platform, service: &str, needle: &str) -> Vec<(String, String)> {
    let v = p
        .get_json(&format!(
            "/v1/services/{service}/logs?limit=10000&q={}",
            needle.replace(' ', "%20")
        ))
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["instance"].as_str().unwrap().to_string(),
                l["line"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// App logs outlive what happens to their instances: a running instance that crashes
/// (its last line and its replacement's), scale to zero (the container is removed), and a
/// kill -9 of the server (kept in the store, and not read twice when following resumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_logs_survive_a_running_crash_scale_to_zero_and_a_restart() {
    let mut p = Platform::start().await;
    p.create(json!({"name": "flaky", "health_check": {"interval_s": 1},
        "scaling": {"min_size": 1, "max_size": 1}}))
        .await;
    let repo = Repo::new(&p, None, "flaky");
    repo.write("Dockerfile", DIES_LATER);
    repo.write("www/index.html", "flaky\n");
    repo.commit("dies later");
    repo.push();
    p.wait_content("flaky", "flaky", Duration::from_secs(60))
        .await;
    // The first instance dies after serving; the worker replaces it, and its replacement
    // comes up (and writes its own first line).
    wait_for(
        "a crash's last line and a replacement's first",
        Duration::from_secs(60),
        || async {
            let died = lines_with(&p, "flaky", "dying after serving").await;
            let up = lines_with(&p, "flaky", "instance up").await;
            let instances: std::collections::HashSet<_> = up.iter().map(|(i, _)| i).collect();
            !died.is_empty() && instances.len() >= 2
        },
    )
    .await;
    let died = lines_with(&p, "flaky", "dying after serving").await;
    let gone = &died[0].0;
    assert!(
        !p.containers()
            .iter()
            .any(|c| c.starts_with(gone.as_str()) || gone.starts_with(c.as_str())),
        "the crashed instance {gone} is gone: {:?}",
        p.containers()
    );

    // A steady revision that scales to zero: the container goes, its lines stay.
    repo.write("Dockerfile", STEADY);
    repo.commit("steady");
    repo.push();
    p.wait_content("flaky", "flaky", Duration::from_secs(60))
        .await;
    wait_for("the steady line", Duration::from_secs(20), || async {
        !lines_with(&p, "flaky", "steady up").await.is_empty()
    })
    .await;
    let (s, v) = p
        .call(
            "PATCH",
            "/v1/services/flaky",
            Some(r#"{"scaling": {"min_size": 0, "scale_to_zero_grace_s": 1}}"#),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    wait_for("scale to zero", Duration::from_secs(60), || async {
        p.service("flaky").await["instances"]["ready"] == 0 && p.containers().is_empty()
    })
    .await;
    let steady = lines_with(&p, "flaky", "steady up").await;
    assert!(!steady.is_empty(), "kept at zero");
    assert!(!lines_with(&p, "flaky", "dying after serving")
        .await
        .is_empty());

    // Woken again, then the server is killed and started: nothing is lost, and the
    // follower that resumes on the adopted instance does not read its lines twice.
    p.wait_content("flaky", "flaky", Duration::from_secs(30))
        .await;
    wait_for(
        "the woken instance's line",
        Duration::from_secs(20),
        || async { lines_with(&p, "flaky", "steady up").await.len() > steady.len() },
    )
    .await;
    let before = lines_with(&p, "flaky", "up").await;
    p.kill9();
    p.spawn().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = lines_with(&p, "flaky", "up").await;
    assert_eq!(
        before, after,
        "the same lines, once each, after the restart"
    );
    assert!(!lines_with(&p, "flaky", "dying after serving")
        .await
        .is_empty());
}
