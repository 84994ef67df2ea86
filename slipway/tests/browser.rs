//! The web console: a real browser run (headless Chromium through playwright-core, see
//! browser/console.cjs), and its sign-in and CSRF rules over plain HTTP.

mod support;

use std::path::PathBuf;
use support::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let modules = repo_root().join("target/browser/node_modules");
    assert!(
        modules.join("playwright-core").exists(),
        "playwright-core is not installed: run `bash scripts/install-browser.sh` (scripts/test.sh does)"
    );
    let p = Platform::start_with_env(&[("SLIPWAY_HISTORY_SAMPLE_S", "1")]).await;
    let image = format!("slipway-example-python:{}", p.platform_id);
    docker(&[
        "build",
        "-q",
        "-t",
        &image,
        repo_root().join("examples/python-app").to_str().unwrap(),
    ]);
    // A service built from a git push, for the build log's page.
    p.create(serde_json::json!({"name": "built", "health_check": {"interval_s": 1}}))
        .await;
    let repo = Repo::new(&p, None, "built");
    repo.write(
        "Dockerfile",
        "FROM busybox:latest\nRUN echo build-marker-$((6*7))\nCOPY www /www\nCMD httpd -f -p $PORT -h /www\n",
    );
    repo.write("www/index.html", "built\n");
    repo.commit("app");
    repo.push();
    p.wait_content("built", "built", std::time::Duration::from_secs(90))
        .await;
    let artifacts = repo_root().join("target/test-artifacts/browser");
    let canary = format!("canary-{}", fastrand::u64(..));
    let out = tokio::task::spawn_blocking({
        let (api, token, image, canary) = (
            p.api.clone(),
            p.token.clone(),
            image.clone(),
            canary.clone(),
        );
        let artifacts = artifacts.clone();
        move || {
            std::process::Command::new("timeout")
                .arg("600")
                .arg("node")
                .arg(repo_root().join("slipway/tests/browser/console.cjs"))
                .env("NODE_PATH", &modules)
                .env("CONSOLE", format!("{api}/"))
                .env("TOKEN", token)
                .env("IMAGE", image)
                .env("ARTIFACTS", &artifacts)
                .env("CANARY", canary)
                .env("BUILT", "built")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains("browser test passed"),
        "{stdout}\n{stderr}\nscreenshots in {}\nserve log: {}",
        artifacts.display(),
        tail(&p.log(), 40)
    );
    for shot in [
        "03-service-running",
        "05-logs-and-metrics",
        "08-rolled-back",
        "09-phone",
    ] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "{shot}");
    }
    // The canary the browser set appears in no log either.
    assert!(!p.log().contains(&canary));
    let _ = std::process::Command::new("docker")
        .args(["rmi", &image])
        .output();
}

fn curl(args: &[&str]) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    (
        code.trim().parse().unwrap_or(0),
        head.to_string(),
        body.to_string(),
    )
}

/// Sign-in sets an HttpOnly, SameSite=Strict session cookie; a cross-site POST with it is
/// refused, as is one without the session's CSRF token; sign-out ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_csrf() {
    let p = Platform::start().await;
    p.create(
        serde_json::json!({"name": "web", "source": {"type": "image", "image": "busybox:latest"}}),
    )
    .await;
    let (code, page, _) = curl(&[&format!("{}/", p.api)]);
    assert_eq!(code, 200);
    assert!(
        page.to_ascii_lowercase()
            .contains("content-security-policy"),
        "{page}"
    );
    let login = |origin: &str, token: &str| {
        curl(&[
            "-H",
            "content-type: application/json",
            "-H",
            &format!("origin: {origin}"),
            "--data",
            &format!("{{\"token\":\"{token}\"}}"),
            &format!("{}/console/login", p.api),
        ])
    };
    let (code, _, _) = login("http://evil.example", &p.token);
    assert_eq!(code, 403, "a sign-in from another site");
    let (code, _, _) = login(&p.api, "wrong");
    assert_eq!(code, 401);
    let (code, head, body) = login(&p.api, &p.token);
    assert_eq!(code, 200, "{head}{body}");
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap()
        .to_string();
    assert!(
        cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"),
        "{cookie_line}"
    );
    assert!(!cookie_line.contains("Secure"), "plain HTTP: {cookie_line}");
    let cookie = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let csrf = serde_json::from_str::<serde_json::Value>(&body).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let pause = format!("{}/v1/services/web/pause", p.api);
    // Reading with the cookie works.
    let (code, _, _) = curl(&[
        "-H",
        &format!("cookie: {cookie}"),
        &format!("{}/v1/services", p.api),
    ]);
    assert_eq!(code, 200);
    // A cross-site form POST: the cookie, no token, another Origin.
    let (code, _, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("cookie: {cookie}"),
        "-H",
        "origin: http://evil.example",
        &pause,
    ]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    // The token but another Origin; the right Origin but no token.
    let (code, _, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("cookie: {cookie}"),
        "-H",
        &format!("x-csrf-token: {csrf}"),
        "-H",
        "origin: http://evil.example",
        &pause,
    ]);
    assert_eq!(code, 403);
    let (code, _, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("cookie: {cookie}"),
        "-H",
        &format!("origin: {}", p.api),
        &pause,
    ]);
    assert_eq!(code, 403);
    assert_eq!(
        p.service("web").await["paused"],
        false,
        "nothing was paused"
    );
    // Both: allowed.
    let (code, _, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("cookie: {cookie}"),
        "-H",
        &format!("x-csrf-token: {csrf}"),
        "-H",
        &format!("origin: {}", p.api),
        &pause,
    ]);
    assert_eq!(code, 200, "{body}");
    // Through the router over HTTPS (console.<zone>), the cookie is Secure.
    let (code, head, _) = curl(&[
        "-k",
        "--resolve",
        &format!("console.slipway.localhost:{}:127.0.0.1", p.https_port),
        "-H",
        "content-type: application/json",
        "-H",
        &format!("origin: https://console.slipway.localhost:{}", p.https_port),
        "--data",
        &format!("{{\"token\":\"{}\"}}", p.token),
        &format!(
            "https://console.slipway.localhost:{}/console/login",
            p.https_port
        ),
    ]);
    assert_eq!(code, 200, "{head}");
    let secure = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(secure.contains("; Secure"), "{head}");
    // And the console on plain HTTP through the router is sent to HTTPS.
    let (code, head, _) = curl(&[
        "-H",
        "host: console.slipway.localhost",
        &format!("http://127.0.0.1:{}/", p.router_port),
    ]);
    assert_eq!(code, 308, "{head}");
    // Sign-out ends the session.
    let (code, _, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("cookie: {cookie}"),
        "-H",
        &format!("x-csrf-token: {csrf}"),
        &format!("{}/console/logout", p.api),
    ]);
    assert_eq!(code, 204);
    let (code, _, _) = curl(&[
        "-H",
        &format!("cookie: {cookie}"),
        &format!("{}/v1/services", p.api),
    ]);
    assert_eq!(code, 401);
}
