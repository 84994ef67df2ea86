//! Every way code and configuration arrive: secrets (sealed at rest, given to instances
//! only), against a real `slipway serve`, the real git client and the real engine.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn sha256_hex(s: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "printf %s \"$V\" | sha256sum"])
        .env("V", s)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A secret reaches the app's environment, a change is a new revision deployed
/// blue/green, and its value appears nowhere else: not in the image's history or metadata,
/// the build log, the activity log, any API answer, or the database's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_app_and_nothing_else() {
    let p = Platform::start().await;
    p.create(json!({"name": "vault", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "health_check": {"interval_s": 1}}))
        .await;
    let canary = format!("canary-{}", p.platform_id);
    // Set through the CLI, the value on stdin: before the first push (nothing to
    // redeploy yet).
    let set = |value: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(bin())
            .args(["secrets", "set", "vault", "DB_PASSWORD", "--api", &p.api])
            .env("SLIPWAY_TOKEN", &p.token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{value}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = set(&canary);
    assert!(said.contains("the first deploy picks it up"), "{said}");
    let repo = Repo::new(&p, None, "vault");
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nCMD mkdir -p /www && printf %s \"$DB_PASSWORD\" | sha256sum > /www/index.html && exec httpd -f -p $PORT -h /www\n",
    );
    repo.commit("app");
    repo.push();
    p.wait_content("vault", &sha256_hex(&canary), Duration::from_secs(120))
        .await;

    // A new value is a new revision, deployed blue/green.
    let second = format!("second-{canary}");
    let said = set(&second);
    assert!(said.contains("revision 2 deploys it"), "{said}");
    p.wait_content("vault", &sha256_hex(&second), Duration::from_secs(60))
        .await;
    let revs = p.get_json("/v1/services/vault/revisions").await;
    assert_eq!(revs.as_array().unwrap().len(), 2, "{revs}");
    let deps = p.get_json("/v1/services/vault/deployments").await;
    assert_eq!(deps[0]["kind"], "config", "{deps}");

    // The names are listed, never the values.
    let list = p.get_json("/v1/services/vault/secrets").await;
    assert_eq!(list[0]["name"], "DB_PASSWORD", "{list}");
    let mut seen = vec![list.to_string()];
    for path in ["", "/revisions", "/deployments", "/events?limit=1000", "/builds"] {
        seen.push(p.get_json(&format!("/v1/services/vault{path}")).await.to_string());
    }
    seen.push(p.get_json("/v1/services").await.to_string());
    let out = p.cli(&["secrets", "list", "vault"]);
    seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
    let image = revs[0]["image"].as_str().unwrap().to_string();
    seen.push(docker(&["history", "--no-trunc", &image]));
    seen.push(docker(&["image", "inspect", &image]));
    seen.push(p.log());
    for text in &seen {
        assert!(!text.contains(&canary), "the value leaked: {text}");
    }
    for f in ["slipway.db", "slipway.db-wal", "slipway.db-shm"] {
        let path = p.dir.join("data").join(f);
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{f} holds the value in plaintext"
            );
        }
    }

    // Bad names get a 422 naming the field; an unknown secret a 404.
    let (s, v) = p
        .call("PUT", "/v1/services/vault/secrets/1BAD", Some(r#"{"value":"x"}"#), None)
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = p
        .call("PUT", "/v1/services/vault/secrets/PORT", Some(r#"{"value":"x"}"#), None)
        .await;
    assert_eq!(s, 422);
    let (s, _) = p
        .call("PUT", "/v1/services/vault/secrets/K", Some(r#"{"nope":1}"#), None)
        .await;
    assert_eq!(s, 422);
    let (s, _) = p.call("DELETE", "/v1/services/vault/secrets/NOPE", None, None).await;
    assert_eq!(s, 404);
    let (s, v): (u16, Value) = p.call("DELETE", "/v1/services/vault/secrets/DB_PASSWORD", None, None).await;
    assert_eq!(s, 200, "{v}");
    p.wait_content("vault", &sha256_hex(""), Duration::from_secs(60))
        .await;
}
