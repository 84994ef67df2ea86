//! The CLI's main commands in both output modes, and its exit codes.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_print_for_people_or_json_and_fail_with_the_reason() {
    let p = Platform::start().await;
    p.create(json!({"name": "cli", "health_check": {"interval_s": 1}}))
        .await;
    let repo = Repo::new(&p, None, "cli");
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nCOPY www /www\nCMD sh -c 'echo hello-from-cli; exec httpd -f -p $PORT -h /www'\n",
    );
    repo.write("www/index.html", "cli one\n");
    repo.commit("one");
    repo.push();
    // `wait` follows the build and the deployment to the end.
    let waited = ok(&p.cli(&["wait", "cli"]));
    assert!(waited.contains("cli: revision 1 is live"), "{waited}");

    let human = ok(&p.cli(&["list"]));
    assert!(
        human.starts_with("NAME") && human.contains("cli"),
        "{human}"
    );
    let listed: Value = serde_json::from_str(&ok(&p.cli(&["list", "--json"]))).unwrap();
    assert_eq!(listed[0]["name"], "cli");
    let status = ok(&p.cli(&["status", "cli"]));
    assert!(status.contains("status:    running"), "{status}");
    let status: Value = serde_json::from_str(&ok(&p.cli(&["status", "cli", "--json"]))).unwrap();
    assert_eq!(status["active_revision"], 1);
    let revs: Value = serde_json::from_str(&ok(&p.cli(&["revisions", "cli", "--json"]))).unwrap();
    assert_eq!(revs.as_array().unwrap().len(), 1);
    let deps = ok(&p.cli(&["deployments", "cli"]));
    assert!(deps.contains("succeeded"), "{deps}");
    let url = ok(&p.cli(&["url", "cli"]));
    assert!(url.trim().starts_with("http://cli."), "{url}");

    // Logs in both modes: the activity log, one deployment's steps, the build, the app.
    let events: Value = serde_json::from_str(&ok(&p.cli(&["logs", "cli", "--json"]))).unwrap();
    let dep = events
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["deployment"].as_i64())
        .expect("a deployment's step in the activity log");
    let dep_s = dep.to_string();
    let steps = ok(&p.cli(&["logs", "cli", "--deployment", &dep_s]));
    let at = |w: &str| steps.find(w).unwrap_or(usize::MAX);
    assert!(
        at("starting") < at("health_checking") && at("health_checking") < at("succeeded"),
        "{steps}"
    );
    let steps: Value = serde_json::from_str(&ok(&p.cli(&[
        "logs",
        "cli",
        "--deployment",
        &dep_s,
        "--json",
    ])))
    .unwrap();
    assert!(steps
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["deployment"] == json!(dep)));
    let out = p.cli(&["logs", "cli", "--deployment", "999999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("slipway deployments cli"));
    let build: Value =
        serde_json::from_str(&ok(&p.cli(&["logs", "cli", "--build", "--json"]))).unwrap();
    assert_eq!(build["state"], "succeeded", "{build}");
    wait_for("the app's first line", Duration::from_secs(20), || async {
        ok(&p.cli(&["logs", "cli", "--app"])).contains("hello-from-cli")
    })
    .await;
    let lines: Value = serde_json::from_str(&ok(
        &p.cli(&["logs", "cli", "--app", "--json", "--since", "1h"])
    ))
    .unwrap();
    assert!(lines
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["line"] == "hello-from-cli"));
    // A time range that ends before the app started holds none of its lines.
    let none: Value = serde_json::from_str(&ok(&p.cli(&[
        "logs", "cli", "--app", "--json", "--since", "2d", "--until", "1d",
    ])))
    .unwrap();
    assert_eq!(none, json!([]));
    // One instance's lines: the instance that printed it, or none for another.
    let instance = lines[0]["instance"].as_str().unwrap().to_string();
    let mine: Value = serde_json::from_str(&ok(&p.cli(&[
        "logs",
        "cli",
        "--app",
        "--json",
        "--instance",
        &instance,
    ])))
    .unwrap();
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .any(|l| l["line"] == "hello-from-cli"),
        "{mine}"
    );
    let other: Value = serde_json::from_str(&ok(&p.cli(&[
        "logs",
        "cli",
        "--app",
        "--json",
        "--instance",
        "no-such-instance",
    ])))
    .unwrap();
    assert_eq!(other, json!([]));
    let out = p.cli(&["logs", "cli", "--app", "--until", "soon"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--until \"soon\""));
    // Metrics in both modes.
    let m = ok(&p.cli(&["metrics", "cli"]));
    assert!(m.contains("requests:") && m.contains("point(s)"), "{m}");
    let m: Value =
        serde_json::from_str(&ok(&p.cli(&["metrics", "cli", "--json", "--period", "24h"])))
            .unwrap();
    assert!(
        m["points"].is_array() && m["resolution_s"].is_number(),
        "{m}"
    );
    let out = p.cli(&["metrics", "cli", "--period", "3y"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use 1h, 6h, 24h or 7d"));
    // `logs --app -f --json` follows: one JSON line per new line, as it is written
    // (here by the push below, whose revision prints and exits).
    let mut follower = std::process::Command::new(bin())
        .args(["logs", "cli", "--app", "-f", "--json", "--api", &p.api])
        .env("SLIPWAY_TOKEN", &p.token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // A push that fails to start: `wait` exits non-zero with the reason.
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nCMD sh -c 'echo cannot start; exit 4'\n",
    );
    repo.commit("broken");
    repo.push();
    let out = p.cli(&["wait", "cli", "--timeout", "120"]);
    assert!(!out.status.success(), "a failed deployment exited 0");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("rolled back") || err.contains("failed"),
        "{err}"
    );
    assert!(
        err.contains("exit") || err.contains("exited"),
        "the reason: {err}"
    );
    // The old revision still serves.
    p.wait_content("cli", "cli one", Duration::from_secs(10))
        .await;
    // The follower printed the failed revision's line as it came.
    tokio::time::sleep(Duration::from_secs(2)).await;
    follower.kill().unwrap();
    let followed = follower.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout).into_owned();
    let rows: Vec<Value> = followed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        rows.iter().any(|r| r["line"] == "cannot start")
            && rows.iter().any(|r| r["line"] == "hello-from-cli"),
        "{followed}"
    );

    // `slipway deploy` builds the same broken head again and waits: it exits non-zero
    // with the reason too.
    let out = p.cli(&["deploy", "cli"]);
    assert!(!out.status.success(), "a failed deploy exited 0");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        (err.contains("rolled back") || err.contains("failed")) && err.contains("exit"),
        "{err}"
    );

    // Errors say what to do, in both modes.
    let out = p.cli(&["status", "nosuch"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("no service named nosuch") && err.contains("`slipway list` shows"),
        "{err}"
    );
    // With --json the API's error document is on stdout for scripts.
    let out = p.cli(&["status", "nosuch", "--json"]);
    assert!(!out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(doc["error"]["message"], "no service named nosuch", "{doc}");
    let out = p.cli(&["create", "cli"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("already exists") && err.contains("choose another name"),
        "{err}"
    );
    let out = p.cli(&["update", "cli", r#"{"scaling": {"max_size": 0}}"#]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("422") && err.contains("scaling.max_size"),
        "{err}"
    );

    // JSON for mutations too.
    let v: Value = serde_json::from_str(&ok(&p.cli(&[
        "update",
        "cli",
        r#"{"scaling": {"max_size": 3}}"#,
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["service"]["spec"]["scaling"]["max_size"], 3);
    let v: Value = serde_json::from_str(&ok(&p.cli(&[
        "create",
        "made-by-json",
        "--image",
        "busybox:latest",
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["name"], "made-by-json");
    let v: Value = serde_json::from_str(&ok(&p.cli(&["pause", "cli", "--json"]))).unwrap();
    assert_eq!(v["paused"], true);
    let v: Value = serde_json::from_str(&ok(&p.cli(&["resume", "cli", "--json"]))).unwrap();
    assert_eq!(v["paused"], false);
    let json_of = |args: &[&str]| -> Value {
        let out = ok(&p.cli(args));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let v = json_of(&["env", "set", "cli", "MODE=json", "--json"]);
    assert_eq!(v["service"]["spec"]["env"]["MODE"], "json", "{v}");
    assert!(v["revision"].is_number(), "{v}");
    let v = json_of(&["env", "list", "cli", "--json"]);
    assert_eq!(v["MODE"], "json", "{v}");
    let v = json_of(&["secrets", "list", "cli", "--json"]);
    assert!(v.is_array(), "{v}");
    let v = json_of(&["domains", "add", "cli", "www.cli.test", "--json"]);
    assert_eq!(v["domain"], "www.cli.test", "{v}");
    let v = json_of(&["domains", "list", "cli", "--json"]);
    assert_eq!(v[0]["domain"], "www.cli.test", "{v}");
    // rollback waits and prints the deployment it waited for.
    let v = json_of(&["rollback", "cli", "1", "--json"]);
    assert_eq!(
        (v["kind"].as_str(), v["state"].as_str()),
        (Some("rollback"), Some("succeeded")),
        "{v}"
    );
    let v = json_of(&["delete", "made-by-json", "--json"]);
    assert_eq!(v["deleted"], "made-by-json", "{v}");
}

/// `login` saves the API address (later commands need no --api) and sets git up;
/// `logout` undoes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_remembers_the_api_and_logout_forgets_it() {
    let p = Platform::start().await;
    let home = p.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: &[&str], with_api: bool| {
        let mut c = std::process::Command::new(bin());
        c.args(args)
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env("SLIPWAY_TOKEN", &p.token)
            .env_remove("SLIPWAY_API");
        if with_api {
            c.args(["--api", &p.api]);
        }
        c.output().unwrap()
    };
    let v: Value = serde_json::from_str(&ok(&run(&["login", "--json"], true))).unwrap();
    assert_eq!(v["api"], json!(p.api));
    assert!(v["git_credential_helper"]
        .as_str()
        .is_some_and(|h| h.contains("git-credential")));
    ok(&run(&["login"], true));
    let saved = std::fs::read_to_string(home.join(".config/slipway/cli.json")).unwrap();
    assert!(saved.contains(&p.api), "{saved}");
    // No --api: the saved address is used.
    let listed = ok(&run(&["list", "--json"], false));
    assert!(listed.trim().starts_with('['), "{listed}");
    let gitconfig = std::fs::read_to_string(home.join(".gitconfig")).unwrap();
    assert!(gitconfig.contains("git-credential"), "{gitconfig}");
    let v: Value = serde_json::from_str(&ok(&run(&["logout", "--json"], false))).unwrap();
    assert_eq!(v["logged_out"], true);
    assert!(!home.join(".config/slipway/cli.json").exists());
    let gitconfig = std::fs::read_to_string(home.join(".gitconfig")).unwrap_or_default();
    assert!(!gitconfig.contains("git-credential"), "{gitconfig}");
    // Without the saved address the default is used, which is not this platform.
    let out = run(&["list"], false);
    assert!(!out.status.success());
}

/// The followers read the API's event streams: `logs --build -f` prints a running build
/// as it goes and exits with its end, `logs -f` prints the activity log as it is
/// written, and a follower of a deleted service exits non-zero with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_stream_a_build_the_activity_log_and_end_with_the_service() {
    let p = Platform::start().await;
    p.create(json!({"name": "follow", "health_check": {"interval_s": 1}}))
        .await;
    let follower = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .args(["--api", &p.api])
            .env("SLIPWAY_TOKEN", &p.token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let _activity = KillOnDrop(follower(&["logs", "follow", "-f"]));
    let repo = Repo::new(&p, None, "follow");
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nRUN echo step-one && sleep 3 && echo step-two\nCOPY www /www\nCMD httpd -f -p $PORT -h /www\n",
    );
    repo.write("www/index.html", "followed\n");
    repo.commit("one");
    repo.push();
    wait_for("the build to run", Duration::from_secs(60), || async {
        let (_, v) = p
            .call("GET", "/v1/services/follow/builds", None, None)
            .await;
        v[0]["state"] == "running"
    })
    .await;
    // Each bounded to 120 s: a follower that never ends fails the test.
    let within = |args: &'static [&'static str]| {
        let (api, token) = (p.api.clone(), p.token.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("timeout")
                .arg("120")
                .arg(bin())
                .args(args)
                .args(["--api", &api])
                .env("SLIPWAY_TOKEN", token)
                .output()
                .unwrap()
        })
    };
    let (built, human) = tokio::join!(
        within(&["logs", "follow", "--build", "-f", "--json"]),
        within(&["logs", "follow", "--build", "-f"])
    );
    let text = ok(&human.unwrap());
    assert!(
        text.starts_with("build ")
            && text.contains("step-one")
            && text.contains("step-two")
            && text.trim_end().ends_with("(succeeded)"),
        "{text}"
    );
    let b: Value = serde_json::from_str(&ok(&built.unwrap())).unwrap();
    assert_eq!(b["state"], "succeeded", "{b}");
    assert!(b["log"].as_str().unwrap().contains("step-two"), "{b}");
    p.wait_content("follow", "followed", Duration::from_secs(60))
        .await;

    // The app follower ends when its service goes: a 404, not a wait for ever.
    let mut app = KillOnDrop(follower(&["logs", "follow", "--app", "-f"]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = p.call("DELETE", "/v1/services/follow", None, None).await;
    assert!(status < 300, "{status}");
    let mut exited = None;
    for _ in 0..200 {
        if let Some(s) = app.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exited = exited.expect("the follower of a deleted service exited within 20 s");
    assert!(!exited.success());
    let mut err = String::new();
    std::io::Read::read_to_string(app.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("404"), "{err}");

    // The activity follower printed the deployment as it happened.
    let mut activity = _activity;
    activity.0.kill().ok();
    let mut out = String::new();
    std::io::Read::read_to_string(activity.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(
        out.contains("queued for build") && out.contains("serves all traffic"),
        "{out}"
    );
}
