//! Issue 2, end to end on the real engine: push with the real git client, get the page
//! through the router by Host, push again, push a broken Dockerfile, kill -9 and restart,
//! and bad input.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Platform, Repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_serves_updates_survives_bad_builds_and_kill9() {
    let mut p = Platform::start().await;
    p.create(json!({"name": "site", "health_check": {"interval_s": 1}}))
        .await;
    let repo = Repo::new(&p, Some("static-site"), "site");
    repo.write("debug.log", "must not reach the image");
    repo.commit("first");
    repo.push();
    p.wait_content("site", "Hello from Slipway", Duration::from_secs(120))
        .await;
    // .dockerignore is honoured and .git never ships.
    assert!(matches!(p.get("site", "/.git/HEAD").await, Ok((404, _))));
    assert!(matches!(p.get("site", "/debug.log").await, Ok((404, _))));
    let build = p.get_json("/v1/services/site/builds").await;
    assert_eq!(build[0]["state"], "succeeded");
    assert!(
        build[0]["log"].as_str().unwrap().contains("Step"),
        "build output is kept: {build}"
    );

    // A second commit replaces the content.
    let index = std::fs::read_to_string(repo.dir.join("public/index.html")).unwrap();
    repo.write(
        "public/index.html",
        &index.replace("Hello from Slipway", "Second version"),
    );
    repo.commit("second");
    repo.push();
    p.wait_content("site", "Second version", Duration::from_secs(120))
        .await;

    // A Dockerfile that fails leaves the running version serving and says why.
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nRUN echo about to fail && exit 7\n",
    );
    repo.commit("broken");
    repo.push();
    support::wait_for("the failed build", Duration::from_secs(120), || async {
        let b = p.get_json("/v1/services/site/builds").await;
        b[0]["state"] == "failed"
    })
    .await;
    let b = p.get_json("/v1/services/site/builds").await;
    let log = b[0]["log"].as_str().unwrap();
    assert!(
        log.contains("about to fail") && log.contains("non-zero code: 7"),
        "{log}"
    );
    assert!(p
        .activity("site")
        .await
        .contains("the running version keeps serving"));
    for _ in 0..10 {
        assert!(p
            .body("site", "/")
            .await
            .unwrap()
            .contains("Second version"));
    }
    // `slipway logs --build` shows it.
    let out = p.cli(&["logs", "site", "--build", "--follow"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("(failed)") && text.contains("about to fail"),
        "{text}"
    );

    // kill -9 the server; start it again; the URL answers and nothing was lost.
    let before = p.service("site").await;
    p.kill9();
    p.spawn().await;
    p.wait_content("site", "Second version", Duration::from_secs(60))
        .await;
    let after = p.service("site").await;
    assert_eq!(before["active_revision"], after["active_revision"]);
    assert_eq!(after["status"], "running");
    // Exactly the serving instance runs: nothing orphaned, nothing duplicated.
    assert_eq!(p.containers().len(), 1, "{:?}", p.containers());
    // Deleting removes the instance and the route.
    let (s, _) = p.call("DELETE", "/v1/services/site", None, None).await;
    assert_eq!(s, 204);
    assert!(p.containers().is_empty());
    assert!(matches!(p.get("site", "/").await, Ok((404, _))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_deploys_by_push_with_env() {
    let p = Platform::start().await;
    p.create(json!({"name": "py", "env": {"GREETING": "Hi from a test"},
        "health_check": {"protocol": "http", "path": "/healthz", "interval_s": 1}}))
        .await;
    let repo = Repo::new(&p, Some("python-app"), "py");
    repo.commit("python");
    repo.push();
    p.wait_content("py", "Hi from a test", Duration::from_secs(180))
        .await;
    let v = p.service("py").await;
    assert_eq!(v["spec"]["cpu"], 1024);
    assert_eq!(v["spec"]["memory"], 2048);
    // Limits are applied to the container.
    let id = &p.containers()[0];
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.Init}}",
            id,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1000000000 2147483648 true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_source_deploys_an_image_on_the_engine() {
    let p = Platform::start().await;
    let ctx = p.dir.join("img");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("index.html"), "from an image\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest\nCOPY index.html /www/\nCMD httpd -f -p $PORT -h /www\n",
    )
    .unwrap();
    let tag = format!("slipway-test-image:{}", p.platform_id);
    let st = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    p.create(
        json!({"name": "img", "source": {"type": "image", "image": tag}, "port": 8000,
        "cpu": "0.25 vCPU", "memory": "0.5 GB", "health_check": {"interval_s": 1}}),
    )
    .await;
    p.wait_content("img", "from an image", Duration::from_secs(60))
        .await;
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_4xx() {
    let p = Platform::start().await;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"Bad_Name"}"#),
            422,
            "lower-case letters",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"-x"}"#),
            422,
            "must start with a lower-case letter",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"console"}"#),
            422,
            "reserved",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"#),
            400,
            "invalid body",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"[1,2]"#),
            422,
            "invalid body",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"a","colour":"red"}"#),
            422,
            "unknown field",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"a","cpu":256,"memory":4096}"#),
            422,
            "choose 0.5 GB, 1 GB, 2 GB",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"a","cpu":"3 vCPU"}"#),
            422,
            "choose 256",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"a","source":{"type":"svn"}}"#),
            422,
            "unknown variant",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"a","source":{"type":"image","image":"nope:missing"}}"#),
            422,
            "not on the Docker engine",
        ),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"a","scaling":{"max_size":99}}"#),
            422,
            "scaling.max_size: 99 is out of range: choose 1 to 25",
        ),
        (
            "GET",
            "/v1/services/nosuch",
            None,
            404,
            "no service named nosuch",
        ),
        ("GET", "/v1/services/NoSuch", None, 400, "lower-case"),
        ("DELETE", "/v1/services/nosuch", None, 404, "no service"),
        (
            "POST",
            "/v1/services/nosuch/rollback",
            None,
            404,
            "no service",
        ),
        ("GET", "/v1/nothing", None, 404, "no such endpoint"),
    ];
    for (method, path, body, want, msg) in cases {
        let (status, v) = p.call(method, path, *body, None).await;
        assert_eq!(status, *want, "{method} {path} {body:?}: {v}");
        let err = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            err.contains(msg),
            "{method} {path} {body:?}: {err:?} lacks {msg:?}"
        );
    }
    // Wrong content type, no token, wrong token.
    let (s, _) = p.call("GET", "/v1/services", None, Some("wrong")).await;
    assert_eq!(s, 401);
    p.create(json!({"name": "dup"})).await;
    let (s, v) = p
        .call("POST", "/v1/services", Some(r#"{"name":"dup"}"#), None)
        .await;
    assert_eq!(
        (
            s,
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already exists")
        ),
        (409, true)
    );
    let (s, v) = p
        .call("POST", "/v1/services/dup/rollback", None, None)
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = p
        .call(
            "POST",
            "/v1/services/dup/rollback",
            Some(r#"{"revision":"x"}"#),
            None,
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = p
        .call("GET", "/v1/services/dup/events?after=abc", None, None)
        .await;
    assert_eq!(s, 400);
    // A push with no token is refused; so is a push to an unknown service.
    let repo = Repo::new(&p, Some("static-site"), "dup");
    repo.commit("x");
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo.dir)
        .args([
            "push",
            "-q",
            &format!("http://127.0.0.1:{}/git/dup.git", p.api_port),
            "HEAD:main",
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo.dir)
        .args(["push", "-q", &p.remote("ghost"), "HEAD:main"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The router: an unknown host is Slipway's own 404.
    assert!(matches!(p.get("ghost", "/").await, Ok((404, _))));
    // The CLI refuses an invalid size pair with the choices listed.
    let out = p.cli(&["create", "c1", "--cpu", "0.25", "--memory", "4 GB"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("422") && err.contains("0.5 GB, 1 GB, 2 GB"),
        "{err}"
    );
}

#[test]
fn serve_says_what_to_do_when_no_engine_answers() {
    let dir = std::env::temp_dir().join(format!("slipway-noengine-{}", std::process::id()));
    let out = std::process::Command::new(support::bin())
        .args([
            "serve",
            "--api-addr",
            "127.0.0.1:0",
            "--router-addr",
            "127.0.0.1:0",
        ])
        .env("SLIPWAY_DATA_DIR", &dir)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no Docker engine answers at unix:///nonexistent/docker.sock")
            && err.contains("scripts/install-engine.sh"),
        "{err}"
    );
}
