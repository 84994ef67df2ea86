//! The CLI: each command is one or two API calls, printed for people (or as JSON with
//! `show`).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// Where the API is and how to authenticate.
#[derive(Args, Clone)]
pub struct Conn {
    /// The API's base URL (default: the one `slipway login` saved, else
    /// http://127.0.0.1:7070).
    #[arg(long, global = true, env = "SLIPWAY_API")]
    api: Option<String>,
    /// Print the API's JSON instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    /// The API token, from `$SLIPWAY_TOKEN` only (default: the `token` file in the data
    /// directory). There is no `--token` flag: process arguments are visible to every user
    /// of the machine in `ps`.
    #[arg(skip = std::env::var("SLIPWAY_TOKEN").ok().filter(|t| !t.is_empty()))]
    token: Option<String>,
    /// The data directory whose token to use.
    #[arg(long, global = true, env = "SLIPWAY_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
}

/// Where `slipway login` keeps the API address: `$XDG_CONFIG_HOME/slipway/cli.json`
/// (or `~/.config/...`).
fn cli_config() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("slipway").join("cli.json"))
}

impl Conn {
    /// The API's base URL: `--api`/`$SLIPWAY_API`, else the saved login, else the default.
    fn base(&self) -> String {
        let saved = || {
            let text = std::fs::read_to_string(cli_config()?).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            v["api"].as_str().map(str::to_string)
        };
        self.api
            .clone()
            .or_else(saved)
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_string())
            .trim_end_matches('/')
            .to_string()
    }
}

/// CLI commands.
#[derive(Subcommand)]
pub enum ClientCmd {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// List services.
    List(ConnOnly),
    /// Show a service (JSON).
    Show(NameArg),
    /// A service's status, URL and instances.
    Status(NameArg),
    /// Print a service's URL.
    Url(NameArg),
    /// Print the git remote to push to (run `slipway login` once so git can authenticate).
    Remote(NameArg),
    /// Let git authenticate to this platform: sets this binary up as git's credential
    /// helper for the API's URL (`git config --global credential.<api>.helper`).
    Login(ConnOnly),
    /// git's credential helper protocol (what `slipway login` configures; git runs it).
    #[command(hide = true)]
    GitCredential(GitCredentialArgs),
    /// Delete a service and its instances.
    Delete(NameArg),
    /// Wait for a service's build and deployment in progress (or its latest deployment)
    /// to end: exits 0 when it succeeded, non-zero with the reason when it did not.
    Wait(WaitArgs),
    /// Forget what `slipway login` set up: git's credential helper for the API and the
    /// saved API address.
    Logout(ConnOnly),
    /// Deploy again: an image service's image, or a git service's branch head (rebuilt).
    Deploy(DeployArgs),
    /// Roll back to an earlier revision (default: the one before the active one).
    Rollback(RollbackArgs),
    /// Change a service's settings with a JSON merge patch, e.g.
    /// `slipway update web '{"scaling": {"max_size": 5}}'`. env, port, CPU and memory
    /// changes deploy a new revision.
    Update(UpdateArgs),
    /// A service's environment variables: set or unset them (each change is a new
    /// revision, deployed blue/green), or list them.
    Env(EnvArgs),
    /// Pause a service: its instances stop, and requests get a 503 page saying it is
    /// paused, until `slipway resume`.
    Pause(NameArg),
    /// Resume a paused service: its active revision starts again.
    Resume(NameArg),
    /// A service's revisions.
    Revisions(NameArg),
    /// A service's deployments.
    Deployments(NameArg),
    /// The activity log, or with --build the latest build's output, --app the app's own
    /// output, --deployment N one deployment's steps.
    Logs(LogsArgs),
    /// A service's metrics over a period: requests, latency, status classes, instances.
    Metrics(MetricsArgs),
    /// A service's secrets: sealed at rest, given to its instances as environment
    /// variables, never shown again once set.
    Secrets(SecretsArgs),
    /// A service's custom domains: add one (and see the records to create), list them
    /// with their verification state, remove one.
    Domains(DomainsArgs),
}

/// `slipway wait`.
#[derive(Args)]
pub struct WaitArgs {
    /// The service.
    name: String,
    /// Give up (exit non-zero) after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway deploy`.
#[derive(Args)]
pub struct DeployArgs {
    /// The service.
    name: String,
    /// Return once the deployment is started instead of waiting for its outcome.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway update`.
#[derive(Args)]
pub struct UpdateArgs {
    /// The service.
    name: String,
    /// The settings to change, as JSON (a key set to null goes back to its default).
    patch: String,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway env`.
#[derive(Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    op: EnvOp,
}

/// `slipway env set|unset|list`.
#[derive(Subcommand)]
pub enum EnvOp {
    /// Set variables: `slipway env set web GREETING=hi MODE=prod`.
    Set(EnvSetArgs),
    /// Remove variables: `slipway env unset web GREETING`.
    Unset(EnvSetArgs),
    /// The service's variables (secrets are listed by `slipway secrets list`).
    List(NameArg),
}

/// A service and `K=V` pairs (or names, to unset).
#[derive(Args)]
pub struct EnvSetArgs {
    /// The service.
    name: String,
    /// `KEY=VALUE` to set, or `KEY` to unset.
    #[arg(required = true)]
    vars: Vec<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway domains`.
#[derive(Args)]
pub struct DomainsArgs {
    #[command(subcommand)]
    op: DomainsOp,
}

/// `slipway domains add|list|remove`.
#[derive(Subcommand)]
pub enum DomainsOp {
    /// Claim a domain for a service and print the DNS records to create.
    Add(DomainArgs),
    /// A service's domains, their state and their records.
    List(NameArg),
    /// Stop serving a domain; its certificate and key are deleted.
    Remove(DomainArgs),
}

/// A service and a domain.
#[derive(Args)]
pub struct DomainArgs {
    /// The service.
    name: String,
    /// The domain (`www.example.com`, `example.com`, `*.example.com`).
    domain: String,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway secrets`.
#[derive(Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    op: SecretsOp,
}

/// `slipway secrets set|unset|list`.
#[derive(Subcommand)]
pub enum SecretsOp {
    /// Set a secret. The value is read from stdin (or a prompt that does not echo), never
    /// from the command line; a change deploys the service again.
    Set(SecretKeyArgs),
    /// Remove a secret (deploys the service again without it).
    Unset(SecretKeyArgs),
    /// The names of a service's secrets and when each was set.
    List(NameArg),
}

/// A service and a secret's name.
#[derive(Args)]
pub struct SecretKeyArgs {
    /// The service.
    name: String,
    /// The secret's name (the environment variable it becomes).
    key: String,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway git-credential get|store|erase`.
#[derive(Args)]
pub struct GitCredentialArgs {
    /// The operation git asks for.
    operation: String,
    #[command(flatten)]
    conn: Conn,
}

/// Just the connection flags.
#[derive(Args)]
pub struct ConnOnly {
    #[command(flatten)]
    conn: Conn,
}

/// A service name.
#[derive(Args)]
pub struct NameArg {
    /// The service.
    name: String,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway rollback`.
#[derive(Args)]
pub struct RollbackArgs {
    /// The service.
    name: String,
    /// The revision to go back to.
    revision: Option<i64>,
    /// Return once the rollback is started instead of waiting for its outcome.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway metrics`.
#[derive(Args)]
pub struct MetricsArgs {
    /// The service.
    name: String,
    /// The period: 1h, 6h, 24h or 7d.
    #[arg(long, default_value = "1h")]
    period: String,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway logs`.
#[derive(Args)]
pub struct LogsArgs {
    /// The service.
    name: String,
    /// Show the latest build's output instead of the activity log.
    #[arg(long, conflicts_with_all = ["app", "deployment"])]
    build: bool,
    /// Show the steps of this deployment (`slipway deployments` lists them).
    #[arg(long, conflicts_with = "app")]
    deployment: Option<i64>,
    /// Show the app's own output (every instance's stdout and stderr) instead of the
    /// activity log.
    #[arg(long)]
    app: bool,
    /// With --app: only lines holding this text.
    #[arg(long, requires = "app")]
    grep: Option<String>,
    /// With --app: only lines of the last DURATION (`90s`, `15m`, `2h`, `1d`).
    #[arg(long, requires = "app")]
    since: Option<String>,
    /// With --app: only lines older than DURATION ago (with --since, a time range).
    #[arg(long, requires = "app")]
    until: Option<String>,
    /// With --app: only this instance's lines (the `instance` of each line; `slipway logs
    /// NAME --app --json` shows them).
    #[arg(long, requires = "app")]
    instance: Option<String>,
    /// Keep printing new lines (of the running build, or of the activity log) until
    /// interrupted; with --build, until the build ends.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `slipway create`.
#[derive(Args)]
pub struct CreateArgs {
    /// Service name (a DNS label: a-z, 0-9, '-').
    name: String,
    /// Deploy this image (already on the engine) instead of git pushes.
    #[arg(long)]
    image: Option<String>,
    /// The branch whose pushes deploy.
    #[arg(long, default_value = "main")]
    branch: String,
    /// The port the app listens on (also passed as PORT).
    #[arg(long)]
    port: Option<u32>,
    /// Environment variables, KEY=VALUE, repeatable.
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// CPU: 256, 512, 1024, 2048, 4096 or "0.25 vCPU".. "4 vCPU" (default 1 vCPU).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory: MB or "2 GB" (default 2 GB).
    #[arg(long)]
    memory: Option<String>,
    /// Fewest instances (0 scales to zero when idle).
    #[arg(long)]
    min_size: Option<u32>,
    /// Most instances.
    #[arg(long)]
    max_size: Option<u32>,
    /// Requests one instance serves at once (1 to 200).
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Idle mode when scaled to zero: stop or pause.
    #[arg(long)]
    idle_mode: Option<String>,
    /// Health check: tcp or http.
    #[arg(long)]
    health_protocol: Option<String>,
    /// Health check path (HTTP).
    #[arg(long)]
    health_path: Option<String>,
    /// Health check interval, seconds.
    #[arg(long)]
    health_interval: Option<u32>,
    /// The app speaks HTTP/2 without TLS (gRPC).
    #[arg(long)]
    http2: bool,
    /// Watch this repository's branch (https, http, ssh, user@host:path) instead of
    /// taking pushes.
    #[arg(long)]
    repo: Option<String>,
    /// Seconds between polls of --repo, or of a registry image.
    #[arg(long)]
    poll: Option<u32>,
    /// The Slipway secret with the credentials of --repo or of the image's registry.
    #[arg(long)]
    credentials: Option<String>,
    /// The Slipway secret that signs webhooks (`POST /hooks/NAME`).
    #[arg(long)]
    webhook_secret: Option<String>,
    /// New commits and tags wait for `slipway deploy`.
    #[arg(long)]
    no_auto_deploy: bool,
    /// Branches (a glob, e.g. "feature/*") that get preview services.
    #[arg(long)]
    previews: Option<String>,
    /// Build from apprunner.yaml even when there is a Dockerfile.
    #[arg(long)]
    apprunner: bool,
    /// The source directory inside the repository (monorepos).
    #[arg(long)]
    dir: Option<String>,
    /// Merge settings from a JSON file of the API's service shape.
    #[arg(long)]
    spec: Option<std::path::PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

struct Api {
    base: String,
    token: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// `--json`: print the API's answers as they are.
    json: bool,
}

impl Api {
    fn new(c: &Conn) -> Result<Api> {
        let token = match &c.token {
            Some(t) => t.clone(),
            None => {
                let dir = c.data_dir.clone().unwrap_or_else(crate::default_data_dir);
                let path = dir.join("token");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("$SLIPWAY_TOKEN is not set and {} cannot be read: set it, or point --data-dir at `slipway serve`'s data directory", path.display()))?
                    .trim()
                    .to_string()
            }
        };
        Ok(Api {
            base: c.base(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
            json: c.json,
        })
    }

    /// With `--json`, prints `v` and returns false; otherwise returns true (print for
    /// people).
    fn human(&self, v: &Value) -> bool {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        }
        !self.json
    }

    /// `GET /v1/services/{name}`.
    async fn service(&self, name: &str) -> Result<Value> {
        self.call("GET", &format!("/v1/services/{name}"), None)
            .await
    }

    /// A request to the API, with the token.
    fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.request(method, path);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(&v)?))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self.client.request(req.body(body)?).await.map_err(|e| {
            anyhow!(
                "cannot reach the API at {}: {e} (is `slipway serve` running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let v = answer(&resp.into_body().collect().await?.to_bytes());
        if !status.is_success() {
            return Err(self.error(status, &v));
        }
        Ok(v)
    }

    /// An API error as the CLI reports it. Scripts get the API's own error document on
    /// stdout; people get a line on stderr either way.
    fn error(&self, status: hyper::StatusCode, v: &Value) -> anyhow::Error {
        if self.json && v.get("error").is_some() {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        }
        let e = &v["error"];
        let msg = match (e["message"].as_str(), e["field"].as_str()) {
            (Some(m), Some(f)) if !m.contains(f) => format!("{m} (field {f})"),
            (Some(m), _) => m.to_string(),
            _ => v.to_string(),
        };
        anyhow!(
            "{} {}{}",
            status.as_u16(),
            msg,
            next_step(status.as_u16(), &msg)
        )
    }

    /// Follows the server-sent events at `path`, handing each to `on` until it answers
    /// `false`. A stream that breaks or ends is opened again where it left off
    /// (`Last-Event-ID`) a second later, at most 30 times in a row without an event in
    /// between; an API error (the service was deleted: 404) ends it.
    async fn follow(
        &self,
        path: &str,
        mut on: impl FnMut(&crate::sse::Event) -> Result<bool>,
    ) -> Result<()> {
        let mut last_id: Option<String> = None;
        let mut broke = 0;
        loop {
            let mut req = self
                .request("GET", path)
                .header("accept", "text/event-stream");
            if let Some(id) = &last_id {
                req = req.header("last-event-id", id);
            }
            let why = match self
                .client
                .request(req.body(Full::new(Bytes::new()))?)
                .await
            {
                Ok(resp) if !resp.status().is_success() => {
                    let status = resp.status();
                    let v = answer(&resp.into_body().collect().await?.to_bytes());
                    return Err(self.error(status, &v));
                }
                Ok(resp) => {
                    let mut body = resp.into_body();
                    let mut parser = crate::sse::Parser::default();
                    let mut events = Vec::new();
                    loop {
                        let frame = match body.frame().await {
                            Some(Ok(f)) => f,
                            Some(Err(e)) => break e.to_string(),
                            None => break "the stream ended".to_string(),
                        };
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        parser.push(&data, &mut events)?;
                        for ev in events.drain(..) {
                            broke = 0;
                            last_id = ev.id.clone().or(last_id);
                            if !on(&ev)? {
                                return Ok(());
                            }
                        }
                    }
                }
                Err(e) => format!("cannot reach the API at {}: {e}", self.base),
            };
            broke += 1;
            if broke > 30 {
                bail!("gave up following {path}: {why}");
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

/// An API answer's body: its JSON, its text when it is not JSON, null when empty.
fn answer(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// What to do about an API error, where its message alone does not say.
fn next_step(status: u16, msg: &str) -> &'static str {
    match status {
        401 => ": the token is wrong; `slipway login` saves the right one",
        404 if msg.starts_with("no service named") => ": `slipway list` shows the services",
        409 if msg.ends_with("already exists") => {
            ": choose another name, or change that service with `slipway update`"
        }
        _ => "",
    }
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn when(ms: &Value) -> String {
    let ms = ms.as_i64().unwrap_or(0);
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000)
}

pub async fn run(cmd: ClientCmd) -> Result<()> {
    match cmd {
        ClientCmd::Create(a) => create(*a).await,
        ClientCmd::List(c) => {
            let api = Api::new(&c.conn)?;
            let list = api.call("GET", "/v1/services", None).await?;
            if !api.human(&list) {
                return Ok(());
            }
            println!(
                "{:<24} {:<22} {:>8} {:>6}  URL",
                "NAME", "STATUS", "REVISION", "READY"
            );
            for v in list.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<22} {:>8} {:>6}  {}",
                    s(v, "name"),
                    s(v, "status"),
                    s(v, "active_revision"),
                    v["instances"]["ready"],
                    s(v, "url")
                );
            }
            Ok(())
        }
        ClientCmd::Show(a) => {
            let api = Api::new(&a.conn)?;
            let v = api.service(&a.name).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        ClientCmd::Status(a) => {
            let api = Api::new(&a.conn)?;
            let v = api.service(&a.name).await?;
            if !api.human(&v) {
                return Ok(());
            }
            println!("service:   {}", s(&v, "name"));
            println!("status:    {}", s(&v, "status"));
            println!("url:       {}", s(&v, "url"));
            if v["git_remote"].is_string() {
                println!("git:       {}", s(&v, "git_remote"));
            }
            println!(
                "revision:  {} (target {})",
                s(&v, "active_revision"),
                s(&v, "target_revision")
            );
            println!(
                "instances: {} ready, {} warm (idle), {} desired",
                v["instances"]["ready"], v["instances"]["paused"], v["desired_instances"]
            );
            if let Some(d) = v.get("latest_deployment").filter(|d| !d.is_null()) {
                println!(
                    "deployment {} of revision {}: {} {}",
                    d["id"],
                    d["revision"],
                    s(d, "state"),
                    s(d, "reason")
                );
            }
            Ok(())
        }
        ClientCmd::Url(a) => {
            let api = Api::new(&a.conn)?;
            let v = api.service(&a.name).await?;
            if api.human(&v) {
                println!("{}", s(&v, "url"));
            }
            Ok(())
        }
        ClientCmd::Remote(a) => {
            let api = Api::new(&a.conn)?;
            let v = api.service(&a.name).await?;
            let remote = v["git_remote"]
                .as_str()
                .ok_or_else(|| anyhow!("service {} deploys an image, not git pushes", a.name))?;
            if api.human(&json!({ "git_remote": remote })) {
                println!("{remote}");
            }
            Ok(())
        }
        ClientCmd::Login(a) => login(&a.conn).await,
        ClientCmd::Logout(a) => logout(&a.conn),
        ClientCmd::Wait(a) => {
            let api = Api::new(&a.conn)?;
            wait_for_outcome(&api, &a.name, a.timeout, None).await
        }
        ClientCmd::GitCredential(a) => git_credential(&a),
        ClientCmd::Delete(a) => {
            let api = Api::new(&a.conn)?;
            api.call("DELETE", &format!("/v1/services/{}", a.name), None)
                .await?;
            if api.human(&json!({ "deleted": a.name })) {
                println!("deleted {}", a.name);
            }
            Ok(())
        }
        ClientCmd::Deploy(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call("POST", &format!("/v1/services/{}/deploy", a.name), None)
                .await?;
            if a.no_wait {
                if !api.human(&v) {
                } else if v["build"].is_number() {
                    println!(
                        "building commit {} again (build {}); `slipway wait {}` waits for it",
                        s(&v, "commit").get(..12).unwrap_or_default(),
                        v["build"],
                        a.name
                    );
                } else {
                    println!("deploying revision {}", v["revision"]);
                }
                return Ok(());
            }
            wait_for_outcome(&api, &a.name, a.timeout, v["build"].as_i64()).await
        }
        ClientCmd::Secrets(a) => secrets(a.op).await,
        ClientCmd::Domains(a) => domains(a.op).await,
        ClientCmd::Update(a) => {
            let patch: Value = serde_json::from_str(&a.patch)
                .map_err(|e| anyhow::anyhow!("the settings are not JSON: {e}"))?;
            let api = Api::new(&a.conn)?;
            let v = api
                .call("PATCH", &format!("/v1/services/{}", a.name), Some(patch))
                .await?;
            if api.human(&v) {
                updated(&a.name, &v);
            }
            Ok(())
        }
        ClientCmd::Env(a) => env(a.op).await,
        ClientCmd::Pause(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call("POST", &format!("/v1/services/{}/pause", a.name), None)
                .await?;
            if !api.human(&v) {
            } else if v["changed"] == json!(true) {
                println!(
                    "{} paused: its instances stop; requests get 503 until `slipway resume {}`",
                    a.name, a.name
                );
            } else {
                println!("{} was already paused", a.name);
            }
            Ok(())
        }
        ClientCmd::Resume(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call("POST", &format!("/v1/services/{}/resume", a.name), None)
                .await?;
            if !api.human(&v) {
            } else if v["changed"] == json!(true) {
                println!("{} resumed: its revision starts again", a.name);
            } else {
                println!("{} was not paused", a.name);
            }
            Ok(())
        }
        ClientCmd::Rollback(a) => {
            let api = Api::new(&a.conn)?;
            let body = a.revision.map(|r| json!({ "revision": r }));
            let v = api
                .call("POST", &format!("/v1/services/{}/rollback", a.name), body)
                .await?;
            if a.no_wait {
                if api.human(&v) {
                    println!(
                        "rolling back to revision {} (deployment {}); `slipway wait {}` waits for it",
                        v["revision"], v["deployment"], a.name
                    );
                }
                return Ok(());
            }
            if !api.json {
                println!(
                    "rolling back to revision {} (deployment {})",
                    v["revision"], v["deployment"]
                );
            }
            // Like `deploy`: a spinner until the outcome, non-zero if it fails; its own
            // deployment's, whatever a build in progress does.
            wait_for(&api, &a.name, a.timeout, None, v["deployment"].as_i64()).await
        }
        ClientCmd::Revisions(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call("GET", &format!("/v1/services/{}/revisions", a.name), None)
                .await?;
            if !api.human(&v) {
                return Ok(());
            }
            println!(
                "{:>8}  {:<14} {:<14} CREATED",
                "REVISION", "COMMIT", "IMAGE"
            );
            for r in v.as_array().into_iter().flatten() {
                let commit: String = s(r, "commit").chars().take(12).collect();
                let image: String = s(r, "image")
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect();
                println!(
                    "{:>8}  {:<14} {:<14} {}",
                    r["number"],
                    commit,
                    image,
                    when(&r["created_ms"])
                );
            }
            Ok(())
        }
        ClientCmd::Deployments(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call("GET", &format!("/v1/services/{}/deployments", a.name), None)
                .await?;
            if !api.human(&v) {
                return Ok(());
            }
            for d in v.as_array().into_iter().flatten() {
                println!(
                    "{} {:>5} rev {:>4} {:<8} {:<18} {}",
                    when(&d["updated_ms"]),
                    d["id"],
                    d["revision"],
                    s(d, "kind"),
                    s(d, "state"),
                    s(d, "reason")
                );
            }
            Ok(())
        }
        ClientCmd::Logs(a) => logs(a).await,
        ClientCmd::Metrics(a) => metrics(a).await,
    }
}

/// `slipway metrics`: the history's totals over the period and its latest point.
async fn metrics(a: MetricsArgs) -> Result<()> {
    let api = Api::new(&a.conn)?;
    let v = api
        .call(
            "GET",
            &format!(
                "/v1/services/{}/metrics?period={}",
                a.name,
                url_encode(&a.period)
            ),
            None,
        )
        .await?;
    if !api.human(&v) {
        return Ok(());
    }
    let points = v["points"].as_array().cloned().unwrap_or_default();
    let res = v["resolution_s"].as_i64().unwrap_or(10).max(1);
    let sum = |k: &str| {
        points
            .iter()
            .map(|p| p[k].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    println!(
        "{}: {} point(s) at {res} s over {}",
        a.name,
        points.len(),
        a.period
    );
    println!(
        "requests:  {} ({} 2xx, {} 4xx, {} 5xx)",
        sum("requests"),
        sum("s2xx"),
        sum("s4xx"),
        sum("s5xx")
    );
    match points.last() {
        Some(p) => println!(
            "latest:    {} {:.1} req/s, p50 {} ms, p99 {} ms, {} instance(s)",
            when(&p["at_ms"]),
            p["requests"].as_f64().unwrap_or(0.0) / res as f64,
            p["p50_ms"],
            p["p99_ms"],
            p["instances"]
        ),
        None => println!("latest:    no points yet (the history samples every {res} s)"),
    }
    Ok(())
}

/// With `--json`, one JSON value per line (what a follower prints as rows arrive).
fn json_line(v: &Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

async fn logs(a: LogsArgs) -> Result<()> {
    let api = Api::new(&a.conn)?;
    if a.build {
        return build_logs(&api, &a).await;
    }
    if a.app {
        let mut query = String::from("limit=10000");
        if let Some(g) = &a.grep {
            query.push_str(&format!("&q={}", url_encode(g)));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if let Some(d) = &a.since {
            query.push_str(&format!("&since={}", now - duration_ms("--since", d)?));
        }
        if let Some(d) = &a.until {
            query.push_str(&format!("&until={}", now - duration_ms("--until", d)?));
        }
        if let Some(i) = &a.instance {
            query.push_str(&format!("&instance={}", url_encode(i)));
        }
        let print = |l: &Value| {
            if api.json {
                json_line(l);
                return;
            }
            let inst: String = s(l, "instance").chars().take(8).collect();
            let err = if l["stream"] == "stderr" { " !" } else { "" };
            println!(
                "{} r{} {inst}{err} {}",
                when(&l["at_ms"]),
                l["revision"],
                s(l, "line")
            );
        };
        // The stream gives the same first page, then each line as it is kept.
        return rows(
            &api,
            a.follow,
            &format!("/v1/services/{}/logs/stream?{query}", a.name),
            &format!("/v1/services/{}/logs?{query}", a.name),
            print,
        )
        .await;
    }
    if let Some(d) = a.deployment {
        let v = api
            .call(
                "GET",
                &format!("/v1/services/{}/events?deployment={d}&limit=1000", a.name),
                None,
            )
            .await?;
        if !api.human(&v) {
            return Ok(());
        }
        let steps = v.as_array().cloned().unwrap_or_default();
        if steps.is_empty() {
            bail!(
                "deployment {d} of {} has no steps recorded (`slipway deployments {}` lists its deployments)",
                a.name,
                a.name
            );
        }
        for e in &steps {
            println!("{} {}", when(&e["at_ms"]), s(e, "message"));
        }
        return Ok(());
    }
    let print = |e: &Value| {
        if api.json {
            json_line(e);
        } else {
            println!(
                "{} {:<10} {}",
                when(&e["at_ms"]),
                s(e, "kind"),
                s(e, "message")
            );
        }
    };
    rows(
        &api,
        a.follow,
        &format!("/v1/services/{}/events/stream", a.name),
        &format!("/v1/services/{}/events?after=0", a.name),
        print,
    )
    .await
}

/// A list's rows: with `follow`, each row of its event stream (`stream`) as it comes;
/// otherwise the list (`list`) once, and with --json the API's one array as it is.
async fn rows(
    api: &Api,
    follow: bool,
    stream: &str,
    list: &str,
    print: impl Fn(&Value),
) -> Result<()> {
    if follow {
        return api
            .follow(stream, |ev| {
                print(&serde_json::from_str(&ev.data).context("a row of the stream")?);
                Ok(true)
            })
            .await;
    }
    let v = api.call("GET", list, None).await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        v.as_array().into_iter().flatten().for_each(print);
    }
    Ok(())
}

/// `slipway logs NAME --build [-f]`: the latest build's output; following a running one,
/// its stream until it ends.
async fn build_logs(api: &Api, a: &LogsArgs) -> Result<()> {
    let path = format!("/v1/services/{}/builds", a.name);
    let latest = |v: &Value| -> Result<Value> {
        v.as_array()
            .and_then(|b| b.first())
            .cloned()
            .ok_or_else(|| anyhow!("service {} has no builds yet", a.name))
    };
    let b = latest(&api.call("GET", &path, None).await?)?;
    let state = s(&b, "state");
    let running = state == "running" || state == "queued";
    if !(a.follow && running) {
        if api.json {
            println!("{}", serde_json::to_string_pretty(&b)?);
        } else {
            println!("build {} of commit {}", b["id"], s(&b, "commit"));
            print!("{}", b["log"].as_str().unwrap_or(""));
            println!("({state})");
        }
        return Ok(());
    }
    let id = b["id"].as_i64().unwrap_or(0);
    if !api.json {
        println!("build {id} of commit {}", s(&b, "commit"));
    }
    let mut ended = None;
    api.follow(
        &format!("/v1/services/{}/builds/{id}/stream", a.name),
        |ev| {
            let v: Value = serde_json::from_str(&ev.data).context("a build event")?;
            if ev.event == "end" {
                ended = Some(s(&v, "state"));
                return Ok(false);
            }
            if !api.json {
                use std::io::Write;
                print!("{}", v["text"].as_str().unwrap_or(""));
                std::io::stdout().flush().ok();
            }
            Ok(true)
        },
    )
    .await?;
    if api.json {
        // The build as the API gives it, once it is over.
        let all = api.call("GET", &path, None).await?;
        let b = all
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["id"].as_i64() == Some(id)))
            .cloned()
            .unwrap_or(Value::Null);
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        println!("({})", ended.unwrap_or_default());
    }
    Ok(())
}

/// `90s`, `15m`, `2h`, `1d` (or plain seconds) in ms; `flag` names it in errors.
fn duration_ms(flag: &str, d: &str) -> Result<i64> {
    let d = d.trim();
    let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| anyhow!("{flag} {d:?}: write a number and s, m, h or d, like 15m"))?;
    let per = match unit {
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{flag} {d:?}: the unit is s, m, h or d"),
    };
    Ok(n.saturating_mul(per))
}

/// Percent-encodes a query value.
fn url_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

async fn create(a: CreateArgs) -> Result<()> {
    let api = Api::new(&a.conn)?;
    let mut spec: serde_json::Map<String, Value> = match &a.spec {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )
        .with_context(|| format!("{} is not a JSON object", p.display()))?,
        None => serde_json::Map::new(),
    };
    spec.insert("name".into(), json!(a.name));
    if let Some(img) = &a.image {
        spec.insert("source".into(), json!({ "type": "image", "image": img }));
    } else if !spec.contains_key("source") {
        spec.insert(
            "source".into(),
            json!({ "type": "git", "branch": a.branch }),
        );
    }
    if let Some(src) = spec.get_mut("source").and_then(|s| s.as_object_mut()) {
        let git = src.get("type").and_then(|t| t.as_str()) == Some("git");
        if let Some(u) = &a.repo {
            if !git {
                bail!("--repo is for git sources, not --image");
            }
            src.insert("url".into(), json!(u));
        }
        if let Some(p) = a.poll {
            src.insert("poll_s".into(), json!(p));
        }
        if let Some(c) = &a.credentials {
            src.insert("credentials".into(), json!(c));
        }
        if let Some(w) = &a.webhook_secret {
            src.insert("webhook_secret".into(), json!(w));
        }
    }
    if a.no_auto_deploy {
        spec.insert("auto_deploy".into(), json!(false));
    }
    if let Some(p) = &a.previews {
        spec.insert("previews".into(), json!({ "branches": p }));
    }
    if let Some(p) = a.port {
        spec.insert("port".into(), json!(p));
    }
    if !a.env.is_empty() {
        let mut env = BTreeMap::new();
        for kv in &a.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--env {kv:?}: write KEY=VALUE"))?;
            env.insert(k.to_string(), v.to_string());
        }
        spec.insert("env".into(), json!(env));
    }
    if let Some(c) = &a.cpu {
        spec.insert("cpu".into(), json!(c));
    }
    if let Some(m) = &a.memory {
        spec.insert("memory".into(), json!(m));
    }
    let mut section = |key: &str, field: &str, v: Value| {
        let obj = spec.entry(key.to_string()).or_insert_with(|| json!({}));
        if let Some(o) = obj.as_object_mut() {
            o.insert(field.into(), v);
        }
    };
    if a.apprunner {
        section("build", "config", json!("apprunner"));
    }
    if let Some(d) = &a.dir {
        section("build", "dir", json!(d));
    }
    if let Some(v) = a.min_size {
        section("scaling", "min_size", json!(v));
    }
    if let Some(v) = a.max_size {
        section("scaling", "max_size", json!(v));
    }
    if let Some(v) = a.max_concurrency {
        section("scaling", "max_concurrency", json!(v));
    }
    if let Some(v) = &a.idle_mode {
        section("scaling", "idle_mode", json!(v));
    }
    if let Some(v) = &a.health_protocol {
        section("health_check", "protocol", json!(v));
    }
    if let Some(v) = &a.health_path {
        section("health_check", "path", json!(v));
    }
    if let Some(v) = a.health_interval {
        section("health_check", "interval_s", json!(v));
    }
    if a.http2 {
        section("network", "http2", json!(true));
    }
    let v = api
        .call("POST", "/v1/services", Some(Value::Object(spec)))
        .await?;
    if !api.human(&v) {
        return Ok(());
    }
    println!("created {}", s(&v, "name"));
    println!("  url: {}", s(&v, "url"));
    if v["git_remote"].is_string() {
        let remote = s(&v, "git_remote");
        println!("  deploy with (after `slipway login`, once per machine):");
        println!("    git remote add slipway {remote}");
        println!("    git push slipway {}", a.branch);
    }
    Ok(())
}

/// `slipway login`: checks the token against the API, then tells git to ask this binary
/// for credentials for the API's URL, so no token is ever written into a remote URL.
async fn login(conn: &Conn) -> Result<()> {
    let api = Api::new(conn)?;
    api.call("GET", "/v1/services", None)
        .await
        .context("the API refused the token")?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    // The helper finds the token where this command did: the same API and data
    // directory (never the token itself, which stays in the data directory).
    let mut helper = format!("'{}' git-credential --api '{}'", exe.display(), api.base);
    // `--data-dir` or `$SLIPWAY_DATA_DIR` (clap reads both into `data_dir`).
    if let Some(dir) = conn.data_dir.clone() {
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        helper.push_str(&format!(" --data-dir '{}'", dir.display()));
    }
    let key = format!("credential.{}.helper", api.base);
    // git runs a helper that starts with `!` through the shell, with the operation last.
    let helper = format!("!{helper}");
    // Idempotent: the URL's helpers are replaced. An empty helper first resets any helper
    // list git inherited (a global `credential.helper`) for this URL.
    // Exit code 5 means there was nothing to unset.
    let unset = std::process::Command::new("git")
        .args(["config", "--global", "--unset-all", &key])
        .status()
        .context("cannot run git")?;
    if !unset.success() && unset.code() != Some(5) {
        bail!("git config --global --unset-all {key} failed ({unset})");
    }
    git_config(&["--add", &key, ""])?;
    git_config(&["--add", &key, &helper])?;
    git_config(&[&format!("credential.{}.username", api.base), "slipway"])?;
    // The API address, for later commands without --api.
    if let Some(path) = cli_config() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, json!({ "api": api.base }).to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if api.human(&json!({ "api": api.base, "git_credential_helper": helper })) {
        println!(
            "git now asks `{helper}` for the token when it talks to {}",
            api.base
        );
    }
    Ok(())
}

/// Waits for `build` (or a build in progress) and then the service's latest deployment
/// to end, with a spinner on a terminal; Ok when it succeeded, an error with the reason
/// when the build or the deployment failed.
async fn wait_for_outcome(api: &Api, name: &str, timeout_s: u64, build: Option<i64>) -> Result<()> {
    wait_for(api, name, timeout_s, build, None).await
}

/// Waits for a build (the one given, or one in progress) and then the deployment it makes,
/// or, with `deployment`, for that deployment alone (a rollback's).
async fn wait_for(
    api: &Api,
    name: &str,
    timeout_s: u64,
    build: Option<i64>,
    deployment: Option<i64>,
) -> Result<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
    let poll = std::time::Duration::from_millis(300);
    let before = api
        .call("GET", &format!("/v1/services/{name}/deployments"), None)
        .await?
        .as_array()
        .and_then(|d| d.first())
        .and_then(|d| d["id"].as_i64());
    // The build first: the one asked for, or one in progress when we started. A build
    // that had already failed before is not this wait's business.
    let mut watching = build.is_some();
    while deployment.is_none() && std::time::Instant::now() < deadline {
        let builds = api
            .call("GET", &format!("/v1/services/{name}/builds"), None)
            .await?;
        let b = builds.as_array().and_then(|b| match build {
            Some(id) => b.iter().find(|x| x["id"].as_i64() == Some(id)),
            None => b.first(),
        });
        let Some(b) = b.cloned() else { break };
        let state = s(&b, "state");
        match state.as_str() {
            "queued" | "running" => {
                watching = true;
                bar.set_message(format!(
                    "{name}: build {} of {} {state}",
                    b["id"],
                    s(&b, "commit").get(..12).unwrap_or_default()
                ));
                tokio::time::sleep(poll).await;
            }
            // A build that failed after the latest deployment began (before this wait
            // first looked) is this push's outcome too.
            "failed"
                if watching || {
                    let deps = api
                        .call("GET", &format!("/v1/services/{name}/deployments"), None)
                        .await?;
                    let newest = deps
                        .as_array()
                        .and_then(|d| d.first())
                        .and_then(|d| d["created_ms"].as_i64())
                        .unwrap_or(0);
                    b["created_ms"].as_i64().unwrap_or(0) > newest
                } =>
            {
                bar.finish_and_clear();
                let last = b["log"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
                    .to_string();
                api.human(&b);
                bail!(
                    "build {} of {} failed: {last}\n(`slipway logs {name} --build` has its output)",
                    b["id"],
                    s(&b, "commit")
                );
            }
            _ => break,
        }
    }
    while std::time::Instant::now() < deadline {
        let deps = api
            .call("GET", &format!("/v1/services/{name}/deployments"), None)
            .await?;
        let picked = deps.as_array().and_then(|d| match deployment {
            Some(id) => d.iter().find(|x| x["id"].as_i64() == Some(id)),
            None => d.first(),
        });
        let Some(d) = picked.cloned() else {
            bar.finish_and_clear();
            bail!("{name} has no deployment to wait for: push or `slipway deploy {name}` first");
        };
        // A build just ended: its deployment may be a moment behind.
        if watching && d["id"].as_i64() == before {
            tokio::time::sleep(poll).await;
            continue;
        }
        let state = s(&d, "state");
        match state.as_str() {
            "succeeded" => {
                bar.finish_and_clear();
                if api.human(&d) {
                    println!(
                        "{name}: revision {} is live (deployment {})",
                        d["revision"], d["id"]
                    );
                }
                return Ok(());
            }
            "failed" | "rolled_back" | "superseded" => {
                bar.finish_and_clear();
                api.human(&d);
                // A rollback's own reason says what happened after; the failure that
                // caused it is the deployment's `failed` step in the activity log.
                let events = api
                    .call(
                        "GET",
                        &format!("/v1/services/{name}/events?limit=1000"),
                        None,
                    )
                    .await
                    .unwrap_or(Value::Null);
                let prefix = format!(
                    "deployment {} (revision {}): failed: ",
                    d["id"], d["revision"]
                );
                let cause = events
                    .as_array()
                    .into_iter()
                    .flatten()
                    .rev()
                    .filter_map(|e| e["message"].as_str())
                    .find_map(|m| m.strip_prefix(&prefix))
                    .map(|c| format!("\nwhy: {c}"))
                    .unwrap_or_default();
                bail!(
                    "deployment {} of revision {} {}: {}{cause}",
                    d["id"],
                    d["revision"],
                    state.replace('_', " "),
                    s(&d, "reason")
                );
            }
            _ => {
                bar.set_message(format!(
                    "{name}: deployment {} of revision {} {state}: {}",
                    d["id"],
                    d["revision"],
                    s(&d, "reason")
                ));
                tokio::time::sleep(poll).await;
            }
        }
    }
    bar.finish_and_clear();
    bail!("gave up waiting for {name} after {timeout_s} s (`slipway status {name}` shows where it is)")
}

/// Undoes `slipway login`: git's helper for the API and the saved address.
fn logout(conn: &Conn) -> Result<()> {
    let base = conn.base();
    for key in [
        format!("credential.{base}.helper"),
        format!("credential.{base}.username"),
    ] {
        let st = std::process::Command::new("git")
            .args(["config", "--global", "--unset-all", &key])
            .status()
            .context("cannot run git")?;
        if !st.success() && st.code() != Some(5) {
            bail!("git config --global --unset-all {key} failed ({st})");
        }
    }
    if let Some(path) = cli_config() {
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()));
            }
        }
    }
    if conn.json {
        println!("{}", json!({ "api": base, "logged_out": true }));
    } else {
        println!("logged out of {base}: git no longer gets the token from slipway, and the API address is forgotten");
    }
    Ok(())
}

/// `git config --global ARGS...`, failing unless git succeeds.
fn git_config(args: &[&str]) -> Result<()> {
    let st = std::process::Command::new("git")
        .args(["config", "--global"])
        .args(args)
        .status()
        .context("cannot run git")?;
    if !st.success() {
        bail!("git config --global {} failed", args.join(" "));
    }
    Ok(())
}

/// git's credential helper protocol: for `get`, answer the token for a request to this
/// platform's API (git sends `protocol`, `host` and maybe `path` lines); `store` and
/// `erase` have nothing to do, since the token lives in the data directory.
fn git_credential(a: &GitCredentialArgs) -> Result<()> {
    use std::io::BufRead;
    if a.operation != "get" {
        return Ok(());
    }
    let mut fields = BTreeMap::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    let api = Api::new(&a.conn)?;
    let asked = format!(
        "{}://{}",
        fields.get("protocol").map_or("", String::as_str),
        fields.get("host").map_or("", String::as_str)
    );
    if asked != api.base {
        // Not ours: say nothing, and git asks its next helper.
        return Ok(());
    }
    println!("username=slipway\npassword={}", api.token);
    Ok(())
}

/// Reads a secret's value: a prompt without echo on a terminal, otherwise all of stdin
/// (one trailing newline dropped, as `echo value |` adds it).
fn read_secret_value(key: &str) -> Result<String> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("value of {key}: "))
            .context("cannot read the value from the terminal");
    }
    let mut v = String::new();
    std::io::stdin()
        .read_to_string(&mut v)
        .context("cannot read the value from stdin (it must be UTF-8)")?;
    if v.ends_with('\n') {
        v.pop();
        if v.ends_with('\r') {
            v.pop();
        }
    }
    Ok(v)
}

fn updated(name: &str, v: &Value) {
    match v["revision"].as_i64() {
        Some(r) => println!(
            "{name} updated; revision {r} deploys it (`slipway deployments {name}` shows it)"
        ),
        None => println!("{name} updated"),
    }
}

async fn env(op: EnvOp) -> Result<()> {
    // Set and unset are one merge patch of `env`: a value sets a variable, null removes it.
    let (a, vars) = match op {
        EnvOp::Set(a) => {
            let mut vars = serde_json::Map::new();
            for kv in &a.vars {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("{kv:?}: write KEY=VALUE"))?;
                vars.insert(k.to_string(), Value::String(v.to_string()));
            }
            (a, vars)
        }
        EnvOp::Unset(a) => {
            let vars = a.vars.iter().map(|k| (k.clone(), Value::Null)).collect();
            (a, vars)
        }
        EnvOp::List(a) => return env_list(a).await,
    };
    let api = Api::new(&a.conn)?;
    let v = api
        .call(
            "PATCH",
            &format!("/v1/services/{}", a.name),
            Some(json!({ "env": vars })),
        )
        .await?;
    if api.human(&v) {
        updated(&a.name, &v);
    }
    Ok(())
}

async fn env_list(a: NameArg) -> Result<()> {
    let api = Api::new(&a.conn)?;
    let v = api
        .call("GET", &format!("/v1/services/{}", a.name), None)
        .await?;
    if api.human(&v["spec"]["env"]) {
        for (k, val) in v["spec"]["env"].as_object().into_iter().flatten() {
            println!("{k}={}", val.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

fn print_domain(d: &Value) {
    println!(
        "{}  {}{}",
        d["domain"].as_str().unwrap_or_default(),
        d["state"].as_str().unwrap_or_default(),
        match d["reason"].as_str() {
            Some(r) if !r.is_empty() => format!(" ({r})"),
            _ => String::new(),
        }
    );
    println!(
        "  certificate: {}",
        d["certificate"].as_str().unwrap_or_default()
    );
    println!("  records:");
    for r in d["records"].as_array().into_iter().flatten() {
        println!(
            "    {:<6} {:<44} {}",
            r["type"].as_str().unwrap_or_default(),
            r["name"].as_str().unwrap_or_default(),
            r["value"].as_str().unwrap_or_default()
        );
    }
}

async fn domains(op: DomainsOp) -> Result<()> {
    match op {
        DomainsOp::Add(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call(
                    "POST",
                    &format!("/v1/services/{}/domains", a.name),
                    Some(json!({ "domain": a.domain })),
                )
                .await?;
            if !api.human(&v) {
                return Ok(());
            }
            println!("Create these records at your DNS provider; the domain goes active once they verify:");
            print_domain(&v);
        }
        DomainsOp::List(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call("GET", &format!("/v1/services/{}/domains", a.name), None)
                .await?;
            if !api.human(&v) {
                return Ok(());
            }
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("{} has no custom domains", a.name);
            }
            for d in &list {
                print_domain(d);
            }
        }
        DomainsOp::Remove(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call(
                    "DELETE",
                    &format!("/v1/services/{}/domains/{}", a.name, a.domain),
                    None,
                )
                .await?;
            if api.human(&v) {
                println!("domain {} of {} removed", a.domain, a.name);
            }
        }
    }
    Ok(())
}

async fn secrets(op: SecretsOp) -> Result<()> {
    let redeployed = |v: &Value| match v["revision"].as_i64() {
        Some(r) => format!("; revision {r} deploys it"),
        None => "; the first deploy picks it up".into(),
    };
    match op {
        SecretsOp::Set(a) => {
            let value = read_secret_value(&a.key)?;
            let api = Api::new(&a.conn)?;
            let v = api
                .call(
                    "PUT",
                    &format!("/v1/services/{}/secrets/{}", a.name, a.key),
                    Some(json!({ "value": value })),
                )
                .await?;
            if api.human(&v) {
                println!("secret {} of {} set{}", a.key, a.name, redeployed(&v));
            }
        }
        SecretsOp::Unset(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call(
                    "DELETE",
                    &format!("/v1/services/{}/secrets/{}", a.name, a.key),
                    None,
                )
                .await?;
            if api.human(&v) {
                println!("secret {} of {} removed{}", a.key, a.name, redeployed(&v));
            }
        }
        SecretsOp::List(a) => {
            let api = Api::new(&a.conn)?;
            let v = api
                .call("GET", &format!("/v1/services/{}/secrets", a.name), None)
                .await?;
            if !api.human(&v) {
                return Ok(());
            }
            println!("{:<32} SET (unix ms)", "NAME");
            for s in v.as_array().into_iter().flatten() {
                println!(
                    "{:<32} {}",
                    s["name"].as_str().unwrap_or_default(),
                    s["set_ms"]
                );
            }
        }
    }
    Ok(())
}
