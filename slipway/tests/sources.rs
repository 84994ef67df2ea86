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

/// A secret reaches the app's environment, a change is a new revision deployed
/// blue/green, and its value appears nowhere else: not in the image's history or metadata,
/// the build log, the activity log, any API answer, or the database's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_app_and_nothing_else() {
    let p = Platform::start().await;
    p.create(
        json!({"name": "vault", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "health_check": {"interval_s": 1}}),
    )
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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
    for path in [
        "",
        "/revisions",
        "/deployments",
        "/events?limit=1000",
        "/builds",
        "/logs",
        "/metrics?period=1h",
        "/domains",
    ] {
        seen.push(
            p.get_json(&format!("/v1/services/vault{path}"))
                .await
                .to_string(),
        );
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
        .call(
            "PUT",
            "/v1/services/vault/secrets/1BAD",
            Some(r#"{"value":"x"}"#),
            None,
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = p
        .call(
            "PUT",
            "/v1/services/vault/secrets/PORT",
            Some(r#"{"value":"x"}"#),
            None,
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = p
        .call(
            "PUT",
            "/v1/services/vault/secrets/K",
            Some(r#"{"nope":1}"#),
            None,
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = p
        .call("DELETE", "/v1/services/vault/secrets/NOPE", None, None)
        .await;
    assert_eq!(s, 404);
    let (s, v): (u16, Value) = p
        .call(
            "DELETE",
            "/v1/services/vault/secrets/DB_PASSWORD",
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    p.wait_content("vault", &sha256_hex(""), Duration::from_secs(60))
        .await;
}

const PY_APP: &str = r#"import os, http.server
import six
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = open('/app/ready').read().strip() if os.path.exists('/app/ready') else 'no pre-run'
        body = f"six {six.__version__}; {os.environ.get('GREETING', '')}; {ready}".encode()
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(('', int(os.environ['PORT'])), H).serve_forever()
"#;

/// A base image whose trust store lacks the host's TLS-intercepting CA: what any public
/// image looks like to this machine.
fn image_without_the_ca(p: &Platform) -> String {
    let dir = p.dir.join("noca");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM python:3.11-slim\nRUN rm -f /usr/local/share/ca-certificates/*.crt && update-ca-certificates --fresh >/dev/null\n",
    )
    .unwrap();
    let tag = format!("slipway-test-noca:{}", p.platform_id);
    docker(&["build", "-q", "-t", &tag, dir.to_str().unwrap()]);
    tag
}

fn pip_repo(p: &Platform, service: &str, yaml: &str) -> Repo {
    let repo = Repo::new(p, None, service);
    repo.write("apprunner.yaml", yaml);
    repo.write("requirements.txt", "six==1.17.0\n");
    repo.write("app.py", PY_APP);
    repo.commit("app");
    repo
}

const ORIGINAL: &str = "version: 1.0\nruntime: python3\nbuild:\n  commands:\n    build:\n      - pip install --no-cache-dir -r requirements.txt\nrun:\n  command: python app.py\n  network:\n    port: 8000\n  env:\n    - name: GREETING\n      value: original build\n";

/// apprunner.yaml's original build, `pip install` of a real package from the index on a
/// base image without the host's CA: it fails without the injected CA and serves with it,
/// on the file's port (8000, while the service's setting is the default 8080). The CA is
/// not left in the final image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apprunner_yaml_builds_with_pip_through_the_injected_ca() {
    let bare = Platform::start().await;
    let noca = image_without_the_ca(&bare);
    drop(bare);
    let runtime = format!("python3={noca}");
    let without = Platform::start_with_env(&[("SLIPWAY_RUNTIME_IMAGES", &runtime)]).await;
    without
        .create(json!({"name": "pip", "cpu": "0.25 vCPU", "memory": "0.5 GB"}))
        .await;
    pip_repo(&without, "pip", ORIGINAL).push();
    without
        .wait_activity("pip", "failed", Duration::from_secs(240))
        .await;
    let builds = without.get_json("/v1/services/pip/builds").await;
    let log = builds[0]["log"].as_str().unwrap_or_default().to_string();
    assert!(log.contains("building from apprunner.yaml"), "{log}");
    assert!(
        log.contains("CERTIFICATE_VERIFY_FAILED") || log.contains("SSL"),
        "the build failed for another reason than the CA: {log}"
    );
    drop(without);

    let bundle =
        std::env::var("SSL_CERT_FILE").unwrap_or("/etc/ssl/certs/ca-certificates.crt".into());
    let with = Platform::start_with_env(&[
        ("SLIPWAY_RUNTIME_IMAGES", &runtime),
        ("SLIPWAY_BUILD_CA_FILE", &bundle),
    ])
    .await;
    with.create(
        json!({"name": "pip", "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "health_check": {"interval_s": 1}}),
    )
    .await;
    pip_repo(&with, "pip", ORIGINAL).push();
    with.wait_content(
        "pip",
        "six 1.17.0; original build; no pre-run",
        Duration::from_secs(300),
    )
    .await;
    let revs = with.get_json("/v1/services/pip/revisions").await;
    assert_eq!(revs[0]["spec"]["port"], 8000, "{revs}");
    let image = revs[0]["image"].as_str().unwrap();
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "ls",
            image,
            "/usr/local/share/",
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !listing.contains("slipway-build-ca"),
        "{listing}"
    );
    let config = docker(&["image", "inspect", "-f", "{{json .Config}}", image]);
    assert!(!config.contains("slipway-build-ca"), "{config}");
    let _ = std::process::Command::new("docker")
        .args(["rmi", &noca])
        .output();
}

/// The revised build (python311): built in one image, `/app` copied into a clean run
/// image where `pre-run` runs, then `run.command` exec'd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apprunner_revised_build_runs_pre_run() {
    let bundle =
        std::env::var("SSL_CERT_FILE").unwrap_or("/etc/ssl/certs/ca-certificates.crt".into());
    let p = Platform::start_with_env(&[("SLIPWAY_BUILD_CA_FILE", &bundle)]).await;
    let yaml = "version: 1.0\nruntime: python311\nbuild:\n  commands:\n    build:\n      - pip install --no-cache-dir -r requirements.txt\nrun:\n  runtime-version: 3.11\n  pre-run:\n    - pip install --no-cache-dir -r requirements.txt\n    - echo pre-run ran > /app/ready\n  command: python app.py\n  network:\n    port: 8000\n  env:\n    - name: GREETING\n      value: revised build\n";
    let repo = pip_repo(&p, "rev", yaml);
    // A Dockerfile beside it does not win unless the service says so.
    repo.write("Dockerfile", "FROM busybox:latest\nCMD exit 3\n");
    repo.commit("both");
    p.create(
        json!({"name": "rev", "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "build": {"config": "apprunner"}, "health_check": {"interval_s": 1}}),
    )
    .await;
    repo.push();
    p.wait_content(
        "rev",
        "six 1.17.0; revised build; pre-run ran",
        Duration::from_secs(300),
    )
    .await;
    // The command is exec'd: the app is the container's main process (under init).
    let id = &p.containers()[0];
    let top = docker(&["top", id]);
    assert!(
        top.contains("python app.py") && !top.contains("sh -c"),
        "{top}"
    );
}

/// A malformed apprunner.yaml fails its build with the file's line and field, and the
/// running version keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_apprunner_yaml_fails_with_its_line() {
    let p = Platform::start().await;
    p.create(json!({"name": "bad", "cpu": "0.25 vCPU", "memory": "0.5 GB"}))
        .await;
    let repo = Repo::new(&p, None, "bad");
    repo.write(
        "apprunner.yaml",
        "version: 1.0\nruntime: nodejs20\nrun:\n  command: node a.js\n",
    );
    repo.commit("bad");
    repo.push();
    p.wait_activity(
        "bad",
        "apprunner.yaml line 2: runtime: \"nodejs20\" is not a runtime (did you mean \"nodejs22\"?",
        Duration::from_secs(60),
    )
    .await;
}

fn site_repo(dir: &std::path::Path, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    if !dir.join(".git").exists() {
        git(dir, &["init", "-q", "-b", "main"]);
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox:latest\nCOPY index.html /www/\nCMD exec httpd -f -p $PORT -h /www\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.html"), text).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", text]);
}

fn head(dir: &std::path::Path) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A watched local repository (file URL, which the operator allows): each commit deploys
/// within one poll interval; with auto-deploy off a commit waits for `slipway deploy`.
/// Without the operator's permission a file URL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_branch_deploys_each_new_commit() {
    let refused = Platform::start().await;
    let (s, v) = refused
        .call(
            "POST",
            "/v1/services",
            Some(
                &json!({"name": "w", "source": {"type": "git", "url": "file:///tmp/x"}})
                    .to_string(),
            ),
            None,
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("--allow-file-urls"), "{v}");
    let (s, v) = refused
        .call(
            "POST",
            "/v1/services",
            Some(
                &json!({"name": "w", "source": {"type": "git", "url": "ext::sh -c id"}})
                    .to_string(),
            ),
            None,
        )
        .await;
    assert_eq!(s, 422, "{v}");
    drop(refused);

    let p = Platform::start_with_env(&[("SLIPWAY_ALLOW_FILE_URLS", "true")]).await;
    let src = p.dir.join("upstream");
    site_repo(&src, "first commit");
    let url = format!("file://{}", src.display());
    p.create(
        json!({"name": "watched", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "git", "url": url, "poll_s": 2}, "health_check": {"interval_s": 1}}),
    )
    .await;
    p.wait_content("watched", "first commit", Duration::from_secs(60))
        .await;
    site_repo(&src, "second commit");
    // One poll interval (2 s) plus a busybox build and a blue/green swap: seconds alone,
    // longer beside the other tests on two cores (30 s timed out once).
    p.wait_content("watched", "second commit", Duration::from_secs(90))
        .await;
    assert!(p.activity("watched").await.contains("poll: new commit"));
    // Pushes to the hosted remote are refused for a watched service.
    let repo = Repo::new(&p, None, "watched");
    repo.commit("x");
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo.dir)
        .args(["push", "-q", "slipway", "HEAD:main"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Auto-deploy off: a commit is fetched but not built until `slipway deploy`.
    let manual_src = p.dir.join("manual-upstream");
    site_repo(&manual_src, "manual one");
    let murl = format!("file://{}", manual_src.display());
    p.create(
        json!({"name": "manual", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "auto_deploy": false, "source": {"type": "git", "url": murl, "poll_s": 2},
        "health_check": {"interval_s": 1}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let builds = p.get_json("/v1/services/manual/builds").await;
    assert_eq!(builds.as_array().unwrap().len(), 0, "{builds}");
    let out = p.cli(&["deploy", "manual"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.wait_content("manual", "manual one", Duration::from_secs(60))
        .await;
    let builds = p.get_json("/v1/services/manual/builds").await;
    assert_eq!(builds[0]["commit"], head(&manual_src), "{builds}");
}

/// Over http, with credentials from a Slipway secret: a service watches another
/// service's hosted remote on 127.0.0.1 (git smart HTTP behind Basic auth). The URL and
/// activity log never show the credentials. A signed webhook deploys at once; a wrong or
/// missing signature is 401 and builds nothing; GitLab's token works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_watch_with_credentials_and_signed_webhooks() {
    let p = Platform::start().await;
    // The upstream: a hosted repository of this same platform, never deployed itself
    // (auto-deploy off).
    p.create(json!({"name": "upstream", "auto_deploy": false}))
        .await;
    let up = Repo::new(&p, None, "upstream");
    site_repo(&up.dir, "over http");
    up.push();
    let url = format!("{}/git/upstream.git", p.api);
    p.create(
        json!({"name": "mirror", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "git", "url": url, "poll_s": 3600, "credentials": "GIT_TOKEN",
            "webhook_secret": "HOOK_SECRET"},
        "health_check": {"interval_s": 1}}),
    )
    .await;
    // Without the credentials secret, the first poll says what is missing.
    p.wait_activity(
        "mirror",
        "source.credentials names the secret GIT_TOKEN",
        Duration::from_secs(30),
    )
    .await;
    for (k, v) in [
        ("GIT_TOKEN", format!("slipway:{}", p.token)),
        ("HOOK_SECRET", "hook-s3cret".into()),
    ] {
        let body = json!({ "value": v }).to_string();
        let (s, v) = p
            .call(
                "PUT",
                &format!("/v1/services/mirror/secrets/{k}"),
                Some(&body),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    let hook = |headers: Vec<(&'static str, String)>, body: String| {
        let http = p.http.clone();
        let uri = format!("{}/hooks/mirror", p.api);
        async move {
            let mut req = hyper::Request::post(uri);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = http
                .request(
                    req.body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .unwrap(),
                )
                .await
                .unwrap();
            resp.status().as_u16()
        }
    };
    let body = json!({"ref": "refs/heads/main"}).to_string();
    let sign = |secret: &str, body: &str| {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "printf %s \"$B\" | openssl dgst -sha256 -hmac \"$K\" -r",
            ])
            .env("B", body)
            .env("K", secret)
            .output()
            .unwrap();
        format!(
            "sha256={}",
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap()
        )
    };
    assert_eq!(hook(vec![], body.clone()).await, 401);
    assert_eq!(
        hook(
            vec![("x-hub-signature-256", sign("wrong", &body))],
            body.clone()
        )
        .await,
        401
    );
    assert_eq!(
        hook(vec![("x-gitlab-token", "wrong".into())], body.clone()).await,
        401
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let builds = p.get_json("/v1/services/mirror/builds").await;
    assert_eq!(
        builds.as_array().unwrap().len(),
        0,
        "refused hooks built: {builds}"
    );

    assert_eq!(
        hook(
            vec![("x-hub-signature-256", sign("hook-s3cret", &body))],
            body.clone()
        )
        .await,
        202
    );
    // At once: the poll interval is an hour.
    p.wait_content("mirror", "over http", Duration::from_secs(60))
        .await;
    assert!(p.activity("mirror").await.contains("webhook: new commit"));

    site_repo(&up.dir, "second over http");
    up.push();
    assert_eq!(
        hook(vec![("x-gitlab-token", "hook-s3cret".into())], body.clone()).await,
        202
    );
    p.wait_content("mirror", "second over http", Duration::from_secs(60))
        .await;
    let everything = format!(
        "{}{}",
        p.activity("mirror").await,
        p.get_json("/v1/services/mirror").await
    );
    assert!(!everything.contains(&p.token), "credentials echoed");
}

async fn revisions(p: &Platform, service: &str) -> usize {
    p.get_json(&format!("/v1/services/{service}/revisions"))
        .await
        .as_array()
        .unwrap()
        .len()
}

/// An image on the engine is followed by the engine's tag events: re-tagging it to a new
/// image deploys that, and a tag that still names the deployed image deploys nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retagging_an_image_on_the_engine_deploys_it() {
    let p = Platform::start().await;
    let tag = format!("slipway-test-tagwatch:{}", p.platform_id);
    build_site_image(&p, &tag, "tag one");
    p.create(
        json!({"name": "tagged", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "image", "image": tag}, "health_check": {"interval_s": 1}}),
    )
    .await;
    p.wait_content("tagged", "tag one", Duration::from_secs(60))
        .await;
    build_site_image(&p, &tag, "tag two");
    p.wait_content("tagged", "tag two", Duration::from_secs(60))
        .await;
    assert_eq!(revisions(&p, "tagged").await, 2);
    assert!(p.activity("tagged").await.contains("tag event"));
    // The same image tagged again: nothing new.
    docker(&["tag", &tag, &tag]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(revisions(&p, "tagged").await, 2);
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
}

struct Registry {
    child: std::process::Child,
    pub host: String,
    /// The CA that signed the registry's certificate (PEM).
    pub ca: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's `docker-registry` (distribution) on a loopback port, serving HTTPS with a
/// certificate for 127.0.0.1 from a CA made here (the engine, which treats loopback
/// registries as insecure, pushes and pulls without it; Slipway's digest poll verifies
/// it through the CA bundle it is given).
fn tls_registry() -> Registry {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("slipway-registry-{port}-{}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    make_test_ca(&dir, "reg", "IP:127.0.0.1");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {d}/reg.pem\n    key: {d}/reg.key\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (Debian's docker-registry package)");
    let host = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&host).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Registry {
        child,
        host,
        ca: dir.join("ca.pem"),
        dir,
    }
}

/// A registry image is followed by its manifest digest over HTTPS: pointing the tag at a
/// new image in the registry (not on the engine) is pulled and deployed; an unchanged
/// digest deploys nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_a_new_image_to_the_registry_deploys_it() {
    let reg = tls_registry();
    let ca = reg.ca.to_str().unwrap().to_string();
    let p = Platform::start_with_env(&[("SLIPWAY_BUILD_CA_FILE", &ca)]).await;
    let latest = format!("{}/site:latest", reg.host);
    let v2 = format!("{}/site:v2", reg.host);
    build_site_image(&p, &latest, "registry one");
    docker(&["push", &latest]);
    p.create(json!({"name": "reg", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "image", "image": latest, "poll_s": 2}, "health_check": {"interval_s": 1}}))
        .await;
    p.wait_content("reg", "registry one", Duration::from_secs(60))
        .await;
    // Polls that see the same digest deploy nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(revisions(&p, "reg").await, 1);
    assert!(
        !p.activity("reg").await.contains("registry poll:"),
        "the digest poll failed: {}",
        p.activity("reg").await
    );

    // A new image pushed as :v2, then :latest moved to it inside the registry (its
    // manifest put again under the tag), so only the registry knows.
    build_site_image(&p, &v2, "registry two");
    docker(&["push", &v2]);
    let accept = "application/vnd.docker.distribution.manifest.v2+json";
    let manifest = std::process::Command::new("curl")
        .args(["-sf", "--cacert", &ca, "-H", &format!("Accept: {accept}")])
        .arg(format!("https://{}/v2/site/manifests/v2", reg.host))
        .output()
        .unwrap();
    assert!(manifest.status.success());
    let mut put = std::process::Command::new("curl")
        .args([
            "-sf",
            "--cacert",
            &ca,
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {accept}"),
            "--data-binary",
            "@-",
        ])
        .arg(format!("https://{}/v2/site/manifests/latest", reg.host))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        put.stdin
            .take()
            .unwrap()
            .write_all(&manifest.stdout)
            .unwrap();
    }
    assert!(put.wait().unwrap().success());
    p.wait_content("reg", "registry two", Duration::from_secs(60))
        .await;
    assert!(p.activity("reg").await.contains("registry digest sha256:"));
    assert_eq!(revisions(&p, "reg").await, 2);
    for t in [&latest, &v2] {
        let _ = std::process::Command::new("docker")
            .args(["rmi", t])
            .output();
    }
}

/// A build past its timeout is stopped on the engine too: its container is gone and
/// nothing of it keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_past_its_timeout_leaves_nothing_running() {
    let p = Platform::start().await;
    p.create(json!({"name": "slow", "build_timeout_s": 10}))
        .await;
    let repo = Repo::new(&p, None, "slow");
    let marker = format!("sleep {}", 3000 + fastrand::u32(..1000));
    repo.write(
        "Dockerfile",
        &format!("FROM busybox:latest\nRUN {marker}\n"),
    );
    repo.commit("slow");
    repo.push();
    p.wait_activity("slow", "took longer than 10 s", Duration::from_secs(60))
        .await;
    let running = || docker(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]);
    wait_for(
        "the build's container to go",
        Duration::from_secs(15),
        || {
            let gone = !running().contains(&marker);
            async move { gone }
        },
    )
    .await;
}

/// A pushed branch matching the pattern gets its own service and URL
/// (`<branch-slug>--<service>`), built from that branch with the parent's settings and
/// scaling to zero; deleting the branch deletes it. A name already taken is refused and
/// said in the parent's activity log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_branch_gets_its_url_and_goes_away_with_the_branch() {
    let p = Platform::start().await;
    p.create(
        json!({"name": "site", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "previews": {"branches": "feature/*", "idle_s": 0}, "health_check": {"interval_s": 1}}),
    )
    .await;
    let repo = Repo::new(&p, None, "site");
    site_repo(&repo.dir, "main branch");
    repo.push();
    p.wait_content("site", "main branch", Duration::from_secs(60))
        .await;
    git(&repo.dir, &["checkout", "-q", "-b", "feature/Login"]);
    site_repo(&repo.dir, "login preview");
    git(&repo.dir, &["push", "-q", "slipway", "feature/Login"]);
    p.wait_content(
        "feature-login--site",
        "login preview",
        Duration::from_secs(60),
    )
    .await;
    let preview = p.service("feature-login--site").await;
    assert_eq!(preview["spec"]["preview_of"], "site", "{preview}");
    assert_eq!(preview["spec"]["scaling"]["min_size"], 0, "{preview}");
    assert_eq!(preview["spec"]["port"], 8000);
    // The parent still serves its own branch.
    p.wait_content("site", "main branch", Duration::from_secs(5))
        .await;
    assert!(p
        .activity("site")
        .await
        .contains("preview feature-login--site created for branch feature/Login"));

    // Another branch with the same slug is refused, and the parent says why.
    git(&repo.dir, &["checkout", "-q", "-b", "feature/login"]);
    site_repo(&repo.dir, "same slug");
    git(&repo.dir, &["push", "-q", "slipway", "feature/login"]);
    p.wait_activity(
        "site",
        "branch feature/login gets no preview: its name feature-login--site is taken",
        Duration::from_secs(20),
    )
    .await;

    git(
        &repo.dir,
        &["push", "-q", "slipway", "--delete", "feature/Login"],
    );
    wait_for("the preview to go", Duration::from_secs(30), || async {
        p.call("GET", "/v1/services/feature-login--site", None, None)
            .await
            .0
            == 404
    })
    .await;
    assert!(matches!(
        p.get("feature-login--site", "/").await,
        Ok((404, _))
    ));
    p.wait_content("site", "main branch", Duration::from_secs(5))
        .await;
}

/// A Dockerfile's `FROM` that names an image this host has under another name builds
/// through the operator's alias (no registry is reachable here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_aliases_resolve_from_lines() {
    let p = Platform::start_with_env(&[(
        "SLIPWAY_IMAGE_ALIASES",
        "python:3.9-alpine=python:3.11-slim,node:20-alpine=busybox:latest",
    )])
    .await;
    p.create(
        json!({"name": "aliased", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "health_check": {"interval_s": 1}}),
    )
    .await;
    let repo = Repo::new(&p, None, "aliased");
    repo.write("index.html", "built on an alias");
    repo.write(
        "Dockerfile",
        "FROM node:20-alpine\nCOPY index.html /www/\nCMD exec httpd -f -p $PORT -h /www\n",
    );
    repo.commit("alias");
    repo.push();
    p.wait_content("aliased", "built on an alias", Duration::from_secs(60))
        .await;
}

/// Previews of a watched repository: a matching branch upstream gets its preview at the
/// next poll, and loses it when the branch is deleted upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_repository_gets_previews_of_its_branches() {
    let p = Platform::start_with_env(&[("SLIPWAY_ALLOW_FILE_URLS", "true")]).await;
    let src = p.dir.join("upstream");
    site_repo(&src, "watched main");
    let url = format!("file://{}", src.display());
    p.create(
        json!({"name": "up", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "git", "url": url, "poll_s": 2},
        "previews": {"branches": "feature/*", "idle_s": 0},
        "health_check": {"interval_s": 1}}),
    )
    .await;
    p.wait_content("up", "watched main", Duration::from_secs(60))
        .await;
    git(&src, &["checkout", "-q", "-b", "feature/cart"]);
    site_repo(&src, "cart preview");
    git(&src, &["checkout", "-q", "main"]);
    p.wait_content("feature-cart--up", "cart preview", Duration::from_secs(60))
        .await;
    git(&src, &["branch", "-q", "-D", "feature/cart"]);
    wait_for("the preview to go", Duration::from_secs(30), || async {
        p.call("GET", "/v1/services/feature-cart--up", None, None)
            .await
            .0
            == 404
    })
    .await;
    p.wait_content("up", "watched main", Duration::from_secs(5))
        .await;
}

/// A preview with no push for `previews.idle_s` is deleted, and the parent says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_preview_is_deleted() {
    let p = Platform::start().await;
    p.create(
        json!({"name": "idle", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "previews": {"branches": "feature/*", "idle_s": 3}}),
    )
    .await;
    let repo = Repo::new(&p, None, "idle");
    site_repo(&repo.dir, "main");
    repo.push();
    git(&repo.dir, &["checkout", "-q", "-b", "feature/old"]);
    site_repo(&repo.dir, "old preview");
    git(&repo.dir, &["push", "-q", "slipway", "feature/old"]);
    p.wait_activity(
        "idle",
        "preview feature-old--idle created",
        Duration::from_secs(20),
    )
    .await;
    p.wait_activity(
        "idle",
        "preview feature-old--idle deleted: no push for 3 s",
        Duration::from_secs(30),
    )
    .await;
    let (s, _) = p
        .call("GET", "/v1/services/feature-old--idle", None, None)
        .await;
    assert_eq!(s, 404);
}

/// Debian's sshd on a 127.0.0.1 port of its own, with a host key and an authorized key
/// made for the test; killed when dropped.
struct Sshd {
    _child: KillOnDrop,
    port: u16,
    host_pub: String,
    user_key: String,
}

impl Sshd {
    fn start(dir: &std::path::Path) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        // sshd's privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        for key in ["host", "user"] {
            let out = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(dir.join(key))
                .output()
                .expect("ssh-keygen (scripts/install-sshd.sh installs it)");
            assert!(out.status.success(), "{out:?}");
        }
        std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("/usr/sbin/sshd (scripts/install-sshd.sh installs it)");
        wait_listening(port, "sshd");
        Sshd {
            _child: KillOnDrop(child),
            port,
            host_pub: std::fs::read_to_string(dir.join("host.pub")).unwrap(),
            user_key: std::fs::read_to_string(dir.join("user")).unwrap(),
        }
    }
}

/// Over ssh, with the key a Slipway secret: a service watches a bare repository served by
/// a real sshd on 127.0.0.1. The host key is checked against `~/.ssh/known_hosts` of the
/// user running `slipway serve`: while the host is unknown the poll fails with that reason
/// in the activity log; once it is known the branch deploys, and a new commit follows. The
/// private key never appears in the activity log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_watch_with_a_key_secret() {
    let home = std::env::temp_dir().join(format!(
        "slipway-ssh-home-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let p = Platform::start_with_env(&[("HOME", home.to_str().unwrap())]).await;
    let sshd = Sshd::start(&p.dir.join("sshd"));

    let bare = p.dir.join("upstream.git");
    git(
        &p.dir,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    let work = p.dir.join("work");
    site_repo(&work, "over ssh");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);

    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, bare.display());
    let body = json!({ "value": sshd.user_key }).to_string();
    p.create(
        json!({"name": "viassh", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "git", "url": url, "poll_s": 2, "credentials": "GIT_KEY"},
        "health_check": {"interval_s": 1}}),
    )
    .await;
    let (s, v) = p
        .call(
            "PUT",
            "/v1/services/viassh/secrets/GIT_KEY",
            Some(&body),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The host is not in known_hosts yet: refused, and the log says why.
    p.wait_activity(
        "viassh",
        "unknown remote ssh hostkey",
        Duration::from_secs(30),
    )
    .await;
    assert!(
        p.activity("viassh").await.contains("~/.ssh/known_hosts"),
        "no hint"
    );
    let builds = p.get_json("/v1/services/viassh/builds").await;
    assert_eq!(builds.as_array().unwrap().len(), 0, "{builds}");

    // `ssh-keyscan -p PORT 127.0.0.1 >> ~/.ssh/known_hosts` would write this line.
    let mut parts = sshd.host_pub.split_whitespace();
    let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
    std::fs::write(
        home.join(".ssh/known_hosts"),
        format!("[127.0.0.1]:{} {kind} {key}\n", sshd.port),
    )
    .unwrap();
    p.wait_content("viassh", "over ssh", Duration::from_secs(90))
        .await;
    site_repo(&work, "second over ssh");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);
    p.wait_content("viassh", "second over ssh", Duration::from_secs(60))
        .await;
    let builds = p.get_json("/v1/services/viassh/builds").await;
    assert_eq!(builds[0]["commit"], head(&work), "{builds}");

    let activity = p.activity("viassh").await;
    let key_line = sshd.user_key.lines().nth(1).unwrap();
    assert!(!activity.contains(key_line), "the key leaked: {activity}");
    let sshd_log = std::fs::read_to_string(p.dir.join("sshd/sshd.log")).unwrap();
    assert!(
        sshd_log.contains("Accepted publickey for root"),
        "{sshd_log}"
    );
    drop(sshd);
    let _ = std::fs::remove_dir_all(&home);
}

/// A webhook for a push to a preview branch polls at once (the poll interval here is an
/// hour): the preview appears without waiting. A push to a branch that gets no preview is
/// acknowledged and ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_for_a_preview_branch_polls_at_once() {
    let p = Platform::start_with_env(&[("SLIPWAY_ALLOW_FILE_URLS", "true")]).await;
    let src = p.dir.join("upstream");
    site_repo(&src, "hooked main");
    let url = format!("file://{}", src.display());
    p.create(
        json!({"name": "hooked", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "git", "url": url, "poll_s": 3600, "webhook_secret": "HOOK"},
        "previews": {"branches": "feature/*", "idle_s": 0},
        "health_check": {"interval_s": 1}}),
    )
    .await;
    let (s, v) = p
        .call(
            "PUT",
            "/v1/services/hooked/secrets/HOOK",
            Some(&json!({"value": "hook-s3cret"}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    p.wait_content("hooked", "hooked main", Duration::from_secs(60))
        .await;
    git(&src, &["checkout", "-q", "-b", "feature/fast"]);
    site_repo(&src, "fast preview");
    git(&src, &["checkout", "-q", "main"]);
    let hook = |r: &str| {
        let req = hyper::Request::post(format!("{}/hooks/hooked", p.api))
            .header("x-gitlab-token", "hook-s3cret")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({ "ref": r }).to_string(),
            )))
            .unwrap();
        let http = p.http.clone();
        async move {
            let resp = http.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (s, body) = hook("refs/heads/other").await;
    assert_eq!(s, 202, "{body}");
    assert!(body.contains("ignored"), "{body}");
    let (s, body) = hook("refs/heads/feature/fast").await;
    assert_eq!(s, 202, "{body}");
    assert!(body.contains("polling"), "{body}");
    p.wait_content(
        "feature-fast--hooked",
        "fast preview",
        Duration::from_secs(60),
    )
    .await;
}

/// A watched remote that accepts connections and never answers holds only its own
/// service's polls: another watched service's new commit still deploys at its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_never_answers_holds_only_its_own_polls() {
    // Accepts and keeps every connection open, saying nothing (bounded: 64 connections).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 64 {
            match silent.accept().await {
                Ok((s, _)) => held.push(s),
                Err(_) => break,
            }
        }
        std::future::pending::<()>().await;
    });
    let mut p = Platform::start_with_env(&[("SLIPWAY_ALLOW_FILE_URLS", "true")]).await;
    // First in the store's order, so the old serial loop reached it first.
    p.create(json!({"name": "aaa-silent", "port": 8000,
        "source": {"type": "git", "url": format!("http://127.0.0.1:{silent_port}/r.git"), "poll_s": 2}}))
        .await;
    let src = p.dir.join("upstream");
    site_repo(&src, "first answer");
    let url = format!("file://{}", src.display());
    p.create(
        json!({"name": "zzz-fine", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "git", "url": url, "poll_s": 2}, "health_check": {"interval_s": 1}}),
    )
    .await;
    p.wait_content("zzz-fine", "first answer", Duration::from_secs(60))
        .await;
    site_repo(&src, "second answer");
    p.wait_content("zzz-fine", "second answer", Duration::from_secs(45))
        .await;
    // The fetch that never ends does not hold the server's exit either.
    let (took, exited) = p.terminate(Duration::from_secs(45));
    assert!(
        exited,
        "slipway serve did not exit within {took:?} of SIGTERM"
    );
    holder.abort();
}

/// With the build CA injected, the bundle is removed at the end as root; an image whose
/// base runs as a user of its own (and whose Dockerfile says no `USER`) still runs as
/// that user, not as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_clean_up_keeps_the_base_images_user() {
    let bundle =
        std::env::var("SSL_CERT_FILE").unwrap_or("/etc/ssl/certs/ca-certificates.crt".into());
    let p = Platform::start_with_env(&[("SLIPWAY_BUILD_CA_FILE", &bundle)]).await;
    let base_dir = p.dir.join("nobody-base");
    std::fs::create_dir_all(&base_dir).unwrap();
    std::fs::write(
        base_dir.join("Dockerfile"),
        "FROM busybox:latest\nUSER nobody\n",
    )
    .unwrap();
    let base = format!("slipway-test-nobody:{}", p.platform_id);
    docker(&["build", "-q", "-t", &base, base_dir.to_str().unwrap()]);
    p.create(
        json!({"name": "asuser", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "health_check": {"interval_s": 1}}),
    )
    .await;
    let repo = Repo::new(&p, None, "asuser");
    repo.write(
        "Dockerfile",
        &format!(
            "FROM {base}\nRUN id -un\nCOPY index.html /www/\nCMD exec httpd -f -p $PORT -h /www\n"
        ),
    );
    repo.write("index.html", "served as nobody");
    repo.commit("as nobody");
    repo.push();
    p.wait_content("asuser", "served as nobody", Duration::from_secs(120))
        .await;
    let revs = p.get_json("/v1/services/asuser/revisions").await;
    let image = revs[0]["image"].as_str().unwrap().to_string();
    let user = docker(&["image", "inspect", "-f", "{{.Config.User}}", &image]);
    assert_eq!(user.trim(), "nobody", "the final image's user");
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "ls",
            &image,
            "/usr/local/share/",
        ])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("slipway-build-ca"),
        "the CA stayed"
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", &base])
        .output();
}

/// A preview inherits its parent's secrets with the rest of its settings: its instances
/// get the parent's value, and its secrets list shows the name (never the value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_inherits_its_parents_secrets() {
    let p = Platform::start().await;
    p.create(
        json!({"name": "par", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "previews": {"branches": "feature/*", "idle_s": 0}, "health_check": {"interval_s": 1}}),
    )
    .await;
    let canary = format!("inherited-{}", p.platform_id);
    let (s, v) = p
        .call(
            "PUT",
            "/v1/services/par/secrets/PARENT_TOKEN",
            Some(&json!({ "value": canary }).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let repo = Repo::new(&p, None, "par");
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nCMD mkdir -p /www && printf %s \"$PARENT_TOKEN\" | sha256sum > /www/index.html && exec httpd -f -p $PORT -h /www\n",
    );
    repo.commit("app");
    repo.push();
    p.wait_content("par", &sha256_hex(&canary), Duration::from_secs(120))
        .await;
    git(&repo.dir, &["checkout", "-q", "-b", "feature/inherit"]);
    repo.write("extra.txt", "a change on the branch");
    repo.commit("branch");
    git(&repo.dir, &["push", "-q", "slipway", "feature/inherit"]);
    p.wait_content(
        "feature-inherit--par",
        &sha256_hex(&canary),
        Duration::from_secs(120),
    )
    .await;
    let listed = p
        .get_json("/v1/services/feature-inherit--par/secrets")
        .await;
    assert!(listed.to_string().contains("PARENT_TOKEN"), "{listed}");
    assert!(!listed.to_string().contains(&canary), "{listed}");
    // Deleting the parent deletes its previews: nothing is left pointing at its name.
    let (s, v) = p.call("DELETE", "/v1/services/par", None, None).await;
    assert!(s < 300, "{s}: {v}");
    let (s, _) = p
        .call("GET", "/v1/services/feature-inherit--par", None, None)
        .await;
    assert_eq!(s, 404);
}

/// git's smart HTTP over HTTPS on 127.0.0.1 (`git http-backend` behind a small Python
/// server with a certificate from a test CA, which `slipway serve` trusts through
/// OpenSSL's `SSL_CERT_FILE`, as an operator's CA store would): the watched branch
/// deploys, and a new commit follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_watch_against_a_git_server_on_loopback() {
    let dir = std::env::temp_dir().join(format!(
        "slipway-https-git-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    make_test_ca(&dir, "git", "DNS:localhost,IP:127.0.0.1");
    std::fs::write(dir.join("serve.py"), HTTPS_GIT_SERVER).unwrap();
    let port = free_port();
    let _server = KillOnDrop(
        std::process::Command::new("python3")
            .arg(dir.join("serve.py"))
            .arg(port.to_string())
            .arg(dir.join("git.pem"))
            .arg(dir.join("git.key"))
            .env("GIT_PROJECT_ROOT", dir.join("repos"))
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_listening(port, "the https git server");

    let bare = dir.join("repos/up.git");
    git(
        &dir,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    let work = dir.join("work");
    site_repo(&work, "over https");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);

    let ca = dir.join("ca.pem");
    let p = Platform::start_with_env(&[("SSL_CERT_FILE", ca.to_str().unwrap())]).await;
    let url = format!("https://127.0.0.1:{port}/up.git");
    p.create(
        json!({"name": "tls", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "source": {"type": "git", "url": url, "poll_s": 2}, "health_check": {"interval_s": 1}}),
    )
    .await;
    p.wait_content("tls", "over https", Duration::from_secs(90))
        .await;
    site_repo(&work, "second over https");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);
    p.wait_content("tls", "second over https", Duration::from_secs(60))
        .await;
    let builds = p.get_json("/v1/services/tls/builds").await;
    assert_eq!(builds[0]["commit"], head(&work), "{builds}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTPS server for `git http-backend` (standard library only): each request runs
/// the backend as a CGI and is answered with a Content-Length (chunked request bodies are
/// read), on HTTP/1.1 keep-alive connections.
const HTTPS_GIT_SERVER: &str = r#"import http.server, ssl, subprocess, sys, os
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.backend()

    def do_POST(self):
        self.backend()

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            for _ in range(100000):
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def backend(self):
        path, _, query = self.path.partition("?")
        data = self.body()
        env = dict(os.environ, REQUEST_METHOD=self.command, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), CONTENT_LENGTH=str(len(data)),
                   GIT_PROTOCOL=self.headers.get("Git-Protocol", ""), REMOTE_ADDR="127.0.0.1")
        if self.headers.get("Content-Encoding", "") == "gzip":
            env["HTTP_CONTENT_ENCODING"] = "gzip"
        out = subprocess.run(["git", "http-backend"], input=data, env=env, capture_output=True).stdout
        sep = min((i for i in (out.find(b"\r\n\r\n"), out.find(b"\n\n")) if i >= 0), default=len(out))
        head, rest = out[:sep], out[sep:].lstrip(b"\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
"#;

/// A running build's output streams as server-sent events as it is written, then an
/// `end` event gives its state; an unknown build is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_builds_output_streams() {
    let p = Platform::start().await;
    p.create(
        json!({"name": "streamed", "port": 8000, "cpu": "0.25 vCPU", "memory": "0.5 GB",
        "health_check": {"interval_s": 1}}),
    )
    .await;
    let repo = Repo::new(&p, None, "streamed");
    let marker = format!("{}", fastrand::u32(..));
    repo.write(
        "Dockerfile",
        &format!("FROM busybox:latest\nRUN echo stream-begin-{marker} && sleep 3 && echo stream-finish-{marker}\nCMD exec httpd -f -p $PORT -h /\n"),
    );
    repo.commit("slow build");
    repo.push();
    // Bounded: 600 looks, 100 ms apart.
    let mut id = None;
    for _ in 0..600 {
        let b = p.get_json("/v1/services/streamed/builds").await;
        if b[0]["state"] == "running" || b[0]["state"] == "queued" {
            id = b[0]["id"].as_i64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = id.expect("the build never ran");
    let url = format!("{}/v1/services/streamed/builds/{id}/stream", p.api);
    let out = std::process::Command::new("curl")
        .args(["-sSN", "--max-time", "120", "-H"])
        .arg(format!("authorization: Bearer {}", p.token))
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let begin = text.find(&format!("stream-begin-{marker}"));
    let finish = text.find(&format!("stream-finish-{marker}"));
    let end = text.find("event: end");
    assert!(
        begin.is_some() && finish.is_some() && end.is_some() && begin < finish && finish < end,
        "{text}"
    );
    assert!(text[end.unwrap()..].contains("succeeded"), "{text}");
    // More than one data event: it arrived while the build ran, not in one piece.
    assert!(text.matches("data: ").count() >= 3, "{text}");
    let (s, v) = p
        .call(
            "GET",
            "/v1/services/streamed/builds/999999/stream",
            None,
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
}
