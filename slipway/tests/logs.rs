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
