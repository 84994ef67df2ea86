//! Issue 13 on the real engine: nothing an app, a client or a crash can break. Panicking
//! workers and builds are supervised, a push git accepted survives kill -9, `slipway
//! deploy` rebuilds a git service's head, the data directory is private, the token stays
//! out of URLs and process arguments, and instances run with least privilege.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{Platform, Repo};

const SERVE: &str = "httpd -f -p $PORT -h /www";

fn site(repo: &Repo, version: &str) {
    repo.write(
        "Dockerfile",
        &format!("FROM busybox:latest\nCOPY www /www\nCMD {SERVE}\n"),
    );
    repo.write("www/index.html", &format!("version {version}\n"));
    repo.commit(version);
}

fn spec(name: &str) -> Value {
    json!({"name": name, "health_check": {"interval_s": 1}, "deploy_timeout_s": 30})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_builds_and_workers_are_supervised() {
    let p = Platform::start_with_env(&[("SLIPWAY_FAULTS", "build-panic:wedge,worker-panic:wedge")])
        .await;
    p.create(spec("wedge")).await;
    let repo = Repo::new(&p, None, "wedge");
    // The first build panics: it fails with an internal error, and later pushes build.
    site(&repo, "one");
    repo.push();
    p.wait_activity(
        "wedge",
        "internal error: build 1 of commit",
        Duration::from_secs(30),
    )
    .await;
    let builds = p.get_json("/v1/services/wedge/builds").await;
    assert_eq!(builds[0]["state"], "failed", "{builds}");
    // The second push builds; its deployment's worker panics after starting instances.
    site(&repo, "two");
    repo.push();
    p.wait_activity(
        "wedge",
        "internal error: the worker of service wedge panicked",
        Duration::from_secs(120),
    )
    .await;
    let d = p
        .wait_deployment_done("wedge", 0, Duration::from_secs(30))
        .await;
    assert_eq!(d["state"], "rolled_back", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("internal error"),
        "{d}"
    );
    // Within a second the worker is back and has swept the cut-short deployment's
    // containers away.
    p.wait_activity("wedge", "worker restarted: adopted", Duration::from_secs(5))
        .await;
    support::wait_for("no orphan instance", Duration::from_secs(10), || async {
        p.containers().is_empty()
    })
    .await;
    // A new push is not swallowed by the dead worker: it goes live.
    site(&repo, "three");
    repo.push();
    p.wait_content("wedge", "version three", Duration::from_secs(120))
        .await;
    assert_eq!(p.containers().len(), 1);
    // Nor is a delete: the instance goes with the service.
    let (status, _) = p.call("DELETE", "/v1/services/wedge", None, None).await;
    assert_eq!(status, 204);
    support::wait_for(
        "the instance to be removed",
        Duration::from_secs(20),
        || async { p.containers().is_empty() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_survives_kill9_during_its_build_and_deploy_rebuilds_the_head() {
    let mut p = Platform::start().await;
    p.create(spec("durable")).await;
    let repo = Repo::new(&p, None, "durable");
    // A build that takes a few seconds, so the kill lands inside it.
    repo.write(
        "Dockerfile",
        &format!("FROM busybox:latest\nRUN sleep 4\nCOPY www /www\nCMD {SERVE}\n"),
    );
    repo.write("www/index.html", "version durable\n");
    repo.commit("slow build");
    repo.push();
    p.wait_activity("durable", "build 1 of commit", Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.kill9();
    p.spawn().await;
    p.wait_content("durable", "version durable", Duration::from_secs(120))
        .await;
    let activity = p.activity("durable").await;
    assert!(
        activity.contains("build 1 of commit")
            && activity.contains("was interrupted by a restart; building again"),
        "{activity}"
    );
    let builds = p.get_json("/v1/services/durable/builds").await;
    let states: Vec<&str> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, vec!["succeeded", "interrupted"], "{builds}");
    // `slipway deploy` on a git service builds the branch head again: a new revision of
    // the same commit.
    let out = p.cli(&["deploy", "durable"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It waits for the outcome and says so.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("durable: revision 2 is live"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    support::wait_for("revision 2", Duration::from_secs(120), || async {
        p.service("durable").await["active_revision"] == 2
    })
    .await;
    let revs = p.get_json("/v1/services/durable/revisions").await;
    let commits: Vec<&str> = revs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["commit"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(commits.len(), 2, "{revs}");
    assert_eq!(commits[0], commits[1], "{revs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_base_image_is_explained_in_one_line() {
    let p = Platform::start().await;
    p.create(spec("nobase")).await;
    let repo = Repo::new(&p, None, "nobase");
    repo.write("Dockerfile", "FROM nosuchbase:1.0\nCMD true\n");
    repo.commit("no base");
    repo.push();
    let want = "base image nosuchbase:1.0 is not on this engine and no registry answered";
    p.wait_activity("nobase", want, Duration::from_secs(60))
        .await;
    let activity = p.activity("nobase").await;
    let line = activity.lines().find(|l| l.contains(want)).unwrap();
    assert!(!line.contains("registry-1.docker.io"), "{line}");
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_data_no_token_in_urls_or_args_and_metrics_behind_the_token() {
    let metrics_port = support::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let p = Platform::start_with_env(&[("SLIPWAY_METRICS_ADDR", &metrics_addr)]).await;
    let data = p.dir.join("data");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("repos")), 0o700);
    assert_eq!(mode(&data.join("token")), 0o600);
    for f in ["slipway.db", "slipway.db-wal", "slipway.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // A token of 64 hex digits.
    assert_eq!(p.token.len(), 64);
    assert!(p.token.bytes().all(|b| b.is_ascii_hexdigit()));
    // /metrics needs the token on the API address, not on the metrics address.
    let (status, _) = p.call("GET", "/metrics", None, Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = p.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(body.as_str().unwrap_or("").contains("slipway_"), "{body}");
    let (status, body) = support::get_via(&p.http, metrics_port, "metrics", "/metrics")
        .await
        .expect("the metrics address answers");
    assert_eq!(status, 200);
    assert!(body.contains("slipway_"));

    // The CLI prints remotes without the token, and git authenticates through `slipway
    // login`'s credential helper (a HOME of the test's own, for git's global config).
    p.create(spec("cred")).await;
    let home = p.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(support::bin())
            .args(args)
            .args(["--api", &p.api])
            .env("HOME", &home)
            .env("SLIPWAY_DATA_DIR", &data)
            .env_remove("SLIPWAY_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let remote = cli(&["remote", "cred"]).trim().to_string();
    assert_eq!(remote, format!("{}/git/cred.git", p.api));
    assert!(!cli(&["create", "cred2"]).contains(&p.token));
    cli(&["login"]);
    let src = p.dir.join("src-cred");
    std::fs::create_dir_all(&src).unwrap();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&src)
            .args(args)
            .env("HOME", &home)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap()
    };
    assert!(git(&["init", "-q", "-b", "main"]).status.success());
    std::fs::write(
        src.join("Dockerfile"),
        "FROM busybox:latest\nCMD httpd -f -p $PORT\n",
    )
    .unwrap();
    assert!(git(&["add", "-A"]).status.success());
    assert!(git(&["commit", "-q", "-m", "x"]).status.success());
    let push = git(&["push", "-q", &remote, "HEAD:main"]);
    assert!(
        push.status.success(),
        "push with the credential helper: {}",
        String::from_utf8_lossy(&push.stderr)
    );
    // No process of the platform carries the token in its arguments.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains(&p.token));
}

fn inspect(kind: &str, id: &str) -> Value {
    let out = Command::new("docker")
        .args([kind, "inspect", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_with_least_privilege_on_a_network_without_icc() {
    let p = Platform::start().await;
    p.create(spec("least")).await;
    let repo = Repo::new(&p, None, "least");
    // nginx-style: starts as root, chowns its files, then drops to a user.
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nRUN echo 'app:x:1000:1000::/www:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group\nCOPY www /www\nCMD chown -R app:app /www && exec su -s /bin/sh app -c \"httpd -f -p $PORT -h /www\"\n",
    );
    repo.write("www/index.html", "version least\n");
    repo.commit("least");
    repo.push();
    p.wait_content("least", "version least", Duration::from_secs(120))
        .await;
    let c = p.containers();
    assert_eq!(c.len(), 1);
    let info = inspect("container", &c[0]);
    let hc = &info["HostConfig"];
    assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges"]), "{hc}");
    assert_eq!(hc["CapDrop"], json!(["ALL"]), "{hc}");
    let caps: Vec<&str> = hc["CapAdd"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for dropped in ["NET_RAW", "MKNOD", "SYS_ADMIN", "SYS_CHROOT"] {
        assert!(!caps.iter().any(|c| c.ends_with(dropped)), "{caps:?}");
    }
    assert!(hc["PidsLimit"].as_i64().unwrap_or(0) > 0, "{hc}");
    let nets: Vec<&String> = info["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(nets, vec!["slipway"], "{info}");
    // The port is still published on loopback only.
    let ports = &info["NetworkSettings"]["Ports"];
    let binding = ports.as_object().unwrap().values().next().unwrap()[0].clone();
    assert_eq!(binding["HostIp"], "127.0.0.1", "{ports}");
    let net = inspect("network", "slipway");
    assert_eq!(
        net["Options"]["com.docker.network.bridge.enable_icc"], "false",
        "{net}"
    );
    assert_eq!(net["Driver"], "bridge");
}

/// `slipway serve` keeps the router's promise on SIGTERM: a request in flight gets the
/// drain deadline (30 s) to finish, not the 10 s serve used to give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_within_the_drain_deadline() {
    let mut p = Platform::start().await;
    p.create(spec("term")).await;
    let repo = Repo::new(&p, None, "term");
    repo.write(
        "www/cgi-bin/slow",
        "#!/bin/sh\nsleep 13\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow done\\n'\n",
    );
    site(&repo, "term");
    repo.push();
    p.wait_content("term", "version term", Duration::from_secs(120))
        .await;
    let in_flight = {
        let http = p.http.clone();
        let port = p.router_port;
        tokio::spawn(async move { support::get_via(&http, port, "term", "/cgi-bin/slow").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (took, exited) = tokio::task::block_in_place(|| p.terminate(Duration::from_secs(45)));
    let reply = in_flight.await.unwrap();
    assert!(
        matches!(&reply, Ok((200, b)) if b.contains("slow done")),
        "the request in flight was cut at shutdown after {took:?}: {reply:?}"
    );
    assert!(exited, "serve did not exit within 45 s of SIGTERM");
}
