//! Test harness: a real `slipway serve` process on ephemeral ports with its own data
//! directory, the real git client, the real Docker engine. Every wait is bounded.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub mod load;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_slipway")
}

/// A running platform.
pub struct Platform {
    pub dir: PathBuf,
    pub api: String,
    pub router_port: u16,
    pub api_port: u16,
    /// The DNS server's port (UDP and TCP, on 127.0.0.1).
    pub dns_port: u16,
    /// The router's HTTPS port.
    pub https_port: u16,
    pub token: String,
    pub platform_id: String,
    child: Option<Child>,
    pub http: HttpClient,
    /// Extra environment of `slipway serve`.
    pub env: Vec<(String, String)>,
}

impl Platform {
    pub async fn start() -> Platform {
        Platform::start_with_env(&[]).await
    }

    /// A platform whose `slipway serve` has these extra environment variables.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Platform {
        let dir = std::env::temp_dir().join(format!(
            "slipway-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Platform {
            dir,
            api: String::new(),
            router_port: free_port(),
            api_port: free_port(),
            dns_port: free_port(),
            https_port: free_port(),
            token: String::new(),
            platform_id: String::new(),
            child: None,
            http: client(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        p.api = format!("http://127.0.0.1:{}", p.api_port);
        p.spawn().await;
        let info = p.get_json("/v1/platform").await;
        p.platform_id = info["platform_id"].as_str().unwrap().to_string();
        p
    }

    /// Starts (or restarts) the server process and waits for its API.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .unwrap();
        let child = Command::new(bin())
            .args([
                "serve",
                "--api-addr",
                &format!("127.0.0.1:{}", self.api_port),
            ])
            .args(["--router-addr", &format!("127.0.0.1:{}", self.router_port)])
            .env("SLIPWAY_DATA_DIR", self.dir.join("data"))
            .env("SLIPWAY_SCALER_TICK_MS", "500")
            .env("SLIPWAY_DNS_ADDR", format!("127.0.0.1:{}", self.dns_port))
            .env(
                "SLIPWAY_HTTPS_ADDR",
                format!("127.0.0.1:{}", self.https_port),
            )
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn slipway serve");
        self.child = Some(child);
        let api = self.api.clone();
        let http = self.http.clone();
        wait_for("the API to answer", Duration::from_secs(60), || {
            let api = api.clone();
            let http = http.clone();
            async move {
                let req = hyper::Request::get(format!("{api}/healthz"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                matches!(http.request(req).await, Ok(r) if r.status() == 200)
            }
        })
        .await;
        self.token = std::fs::read_to_string(self.dir.join("data/token"))
            .unwrap()
            .trim()
            .to_string();
    }

    /// SIGTERM, then waits (bounded) for the process to exit; returns how long it took
    /// and whether it exited.
    pub fn terminate(&mut self, within: Duration) -> (Duration, bool) {
        let Some(mut c) = self.child.take() else {
            return (Duration::ZERO, true);
        };
        let started = Instant::now();
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        while started.elapsed() < within {
            if let Ok(Some(_)) = c.try_wait() {
                return (started.elapsed(), true);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        (started.elapsed(), false)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api));
        if let Some(t) = token.or(Some(&self.token)).filter(|t| !t.is_empty()) {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
            .await
            .expect("API call timed out")
            .expect("API call failed");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let (s, v) = self.call("GET", path, None, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    pub async fn create(&self, spec: Value) -> Value {
        let (s, v) = self
            .call("POST", "/v1/services", Some(&spec.to_string()), None)
            .await;
        assert_eq!(s, 201, "create {spec}: {v}");
        v
    }

    pub fn remote(&self, service: &str) -> String {
        format!(
            "http://slipway:{}@127.0.0.1:{}/git/{service}.git",
            self.token, self.api_port
        )
    }

    /// GET through the router with `Host: <service>.slipway.localhost`.
    pub async fn get(&self, service: &str, path: &str) -> Result<(u16, String), String> {
        get_via(&self.http, self.router_port, service, path).await
    }

    pub async fn body(&self, service: &str, path: &str) -> Option<String> {
        match self.get(service, path).await {
            Ok((200, b)) => Some(b),
            _ => None,
        }
    }

    /// Waits until the service's page contains `needle`.
    pub async fn wait_content(&self, service: &str, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            let r = self.get(service, "/").await;
            if matches!(&r, Ok((200, b)) if b.contains(needle)) {
                return;
            }
            last = Some(r);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{service} never served {needle:?} within {within:?}; last: {last:?}\nactivity: {}\nlog tail: {}", self.activity(service).await, tail(&self.log(), 30));
    }

    /// Runs the CLI against this platform: `--api` given, the token in `$SLIPWAY_TOKEN`.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .args(["--api", &self.api])
            .env("SLIPWAY_TOKEN", &self.token)
            .output()
            .unwrap()
    }

    /// Waits until the service's activity log holds `needle`.
    pub async fn wait_activity(&self, service: &str, needle: &str, within: Duration) {
        wait_for(
            &format!("{service}'s activity log to say {needle:?}"),
            within,
            || async { self.activity(service).await.contains(needle) },
        )
        .await;
    }

    pub async fn activity(&self, service: &str) -> String {
        let (_, v) = self
            .call(
                "GET",
                &format!("/v1/services/{service}/events?limit=1000"),
                None,
                None,
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["kind"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    pub async fn service(&self, service: &str) -> Value {
        self.get_json(&format!("/v1/services/{service}")).await
    }

    /// Waits until the service's latest deployment is over and returns it.
    pub async fn wait_deployment_done(
        &self,
        service: &str,
        min_id: i64,
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let deps = self
                .get_json(&format!("/v1/services/{service}/deployments"))
                .await;
            if let Some(d) = deps.as_array().and_then(|a| a.first()) {
                let st = d["state"].as_str().unwrap_or("");
                if d["id"].as_i64().unwrap_or(0) >= min_id
                    && matches!(st, "succeeded" | "rolled_back" | "superseded")
                {
                    return d.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no finished deployment >= {min_id} of {service} within {within:?}: {deps}\n{}",
                self.activity(service).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn latest_deployment_id(&self, service: &str) -> i64 {
        let deps = self
            .get_json(&format!("/v1/services/{service}/deployments"))
            .await;
        deps.as_array()
            .and_then(|a| a.first())
            .and_then(|d| d["id"].as_i64())
            .unwrap_or(0)
    }

    /// Containers of this platform the engine runs (any state).
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=slipway.platform={}", self.platform_id),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.kill9();
        if !self.platform_id.is_empty() {
            let ids = self.containers();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
            // The images this platform built or tagged: `slipway/<platform>/<service>:...`.
            let prefix = format!("slipway/{}/", self.platform_id);
            if let Ok(out) = Command::new("docker")
                .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
                .output()
            {
                let refs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|r| r.starts_with(&prefix))
                    .map(str::to_string)
                    .collect();
                if !refs.is_empty() {
                    let _ = Command::new("docker")
                        .arg("rmi")
                        .arg("-f")
                        .args(&refs)
                        .output();
                }
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "kept {} for inspection; server log tail:\n{}",
                self.dir.display(),
                tail(&self.log(), 40)
            );
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub async fn get_via(
    http: &HttpClient,
    port: u16,
    service: &str,
    path: &str,
) -> Result<(u16, String), String> {
    get_host_via(http, port, &format!("{service}.slipway.localhost"), path).await
}

/// GET `path` from the router on `port` with `Host: host`.
pub async fn get_host_via(
    http: &HttpClient,
    port: u16,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let req = hyper::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A child process killed when dropped, so a failing test leaves no server behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most 5 s) until something accepts TCP connections on 127.0.0.1:`port`;
/// panics naming `what` otherwise.
pub fn wait_listening(port: u16, what: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port}");
}

/// Polls `cond` until it holds; panics with `what` after `within`.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// A git working tree with a `slipway` remote.
pub struct Repo {
    pub dir: PathBuf,
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Repo {
    /// A new repository holding a copy of `examples/<example>` (or empty when None).
    pub fn new(p: &Platform, example: Option<&str>, remote_service: &str) -> Repo {
        let dir = p.dir.join(format!("src-{remote_service}"));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(ex) = example {
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(ex);
            let st = Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success());
        }
        git(&dir, &["init", "-q", "-b", "main"]);
        git(
            &dir,
            &["remote", "add", "slipway", &p.remote(remote_service)],
        );
        Repo { dir }
    }

    pub fn write(&self, path: &str, content: &str) {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        if path.contains("cgi-bin/") || path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    pub fn commit(&self, msg: &str) {
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "--allow-empty", "-m", msg]);
    }

    pub fn push(&self) {
        git(&self.dir, &["push", "-q", "slipway", "HEAD:main"]);
    }
}

/// Runs `docker` and returns its stdout; panics with its stderr if it fails.
pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds a busybox httpd image serving `text` as `tag`.
pub fn build_site_image(p: &Platform, tag: &str, text: &str) {
    let dir = p.dir.join(format!("img-{}", text.replace(' ', "-")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), text).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox:latest\nCOPY index.html /www/\nCMD exec httpd -f -p $PORT -h /www\n",
    )
    .unwrap();
    docker(&["build", "-q", "-t", tag, dir.to_str().unwrap()]);
}

/// A test CA in `dir` (`ca.pem`, `ca.key`) and a certificate it signed for `san`
/// (`IP:127.0.0.1`, `DNS:localhost,IP:127.0.0.1`): `<stem>.pem` and `<stem>.key`.
pub fn make_test_ca(dir: &Path, stem: &str, san: &str) {
    let sh = format!(
        "set -e; cd {d}; \
         [ -f ca.pem ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=slipway-test-ca 2>/dev/null; \
         openssl req -newkey rsa:2048 -nodes -keyout {stem}.key -out {stem}.csr -subj /CN={stem} 2>/dev/null; \
         printf 'subjectAltName={san}\\nbasicConstraints=CA:FALSE\\n' > {stem}.ext; \
         openssl x509 -req -in {stem}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {stem}.pem -days 2 -extfile {stem}.ext 2>/dev/null",
        d = dir.display()
    );
    let made = Command::new("bash")
        .args(["-c", &sh])
        .status()
        .expect("openssl");
    assert!(made.success(), "making a test certificate for {san}");
}
