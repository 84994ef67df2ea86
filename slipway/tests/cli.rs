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
        "FROM busybox:latest\nCOPY www /www\nCMD httpd -f -p $PORT -h /www\n",
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

    // Errors say what to do, in both modes.
    let out = p.cli(&["status", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named nosuch"));
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
    ok(&run(&["login"], true));
    let saved = std::fs::read_to_string(home.join(".config/slipway/cli.json")).unwrap();
    assert!(saved.contains(&p.api), "{saved}");
    // No --api: the saved address is used.
    let listed = ok(&run(&["list", "--json"], false));
    assert!(listed.trim().starts_with('['), "{listed}");
    let gitconfig = std::fs::read_to_string(home.join(".gitconfig")).unwrap();
    assert!(gitconfig.contains("git-credential"), "{gitconfig}");
    ok(&run(&["logout"], false));
    assert!(!home.join(".config/slipway/cli.json").exists());
    let gitconfig = std::fs::read_to_string(home.join(".gitconfig")).unwrap_or_default();
    assert!(!gitconfig.contains("git-credential"), "{gitconfig}");
    // Without the saved address the default is used, which is not this platform.
    let out = run(&["list"], false);
    assert!(!out.status.success());
}
