//! The git remote the platform hosts: `http://<api>/git/<service>.git`, git's smart HTTP
//! protocol served by the real `git http-backend` run as a CGI program. The API checks the
//! token before a request gets here; this module only speaks CGI and notices when a push
//! moved the service's branch.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A smart-HTTP request, already authenticated.
pub struct GitRequest {
    /// GET or POST.
    pub method: String,
    /// The path below the repository, e.g. `/info/refs` or `/git-receive-pack`.
    pub path: String,
    /// The raw query string (`service=git-receive-pack`).
    pub query: String,
    /// The request's Content-Type.
    pub content_type: Option<String>,
    /// The request's Content-Encoding (git gzips large bodies).
    pub content_encoding: Option<String>,
    /// The request body.
    pub body: Vec<u8>,
    /// Who pushes (for the reflog).
    pub user: String,
}

/// The CGI program's answer.
pub struct GitResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl GitResponse {
    pub(crate) fn error(status: u16, msg: &str) -> Self {
        GitResponse {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: format!("{msg}\n").into_bytes(),
        }
    }
}

/// Creates the bare repository when missing, accepting pushes to `branch`.
pub async fn ensure_repo(path: &Path, branch: &str) -> std::io::Result<()> {
    if path.join("HEAD").exists() {
        return Ok(());
    }
    tokio::fs::create_dir_all(path).await?;
    run_git(path, &["init", "--bare", "--quiet"]).await?;
    run_git(path, &["config", "http.receivepack", "true"]).await?;
    run_git(path, &["config", "receive.denyNonFastForwards", "false"]).await?;
    run_git(
        path,
        &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
    )
    .await?;
    Ok(())
}

async fn run_git(dir: &Path, args: &[&str]) -> std::io::Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(std::io::Error::other(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The commit `branch` points at, or None when there is no such branch yet; an error
/// when git itself fails (the repository is unreadable, git cannot run).
pub async fn branch_commit(repo: &Path, branch: &str) -> std::io::Result<Option<String>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}^{{commit}}"),
        ])
        .stdin(Stdio::null())
        .output()
        .await?;
    // `--verify --quiet` says "no such ref" by exiting 1 and printing nothing.
    if out.status.code() == Some(1) && out.stdout.is_empty() {
        return Ok(None);
    }
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "git rev-parse of branch {branch}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((s.len() == 40 || s.len() == 64).then_some(s))
}

/// Every branch of `repo` and its commit.
pub async fn branches(repo: &Path) -> std::io::Result<std::collections::BTreeMap<String, String>> {
    if !repo.join("HEAD").exists() {
        return Ok(Default::default());
    }
    let out = run_git(
        repo,
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname:strip=2)",
            "refs/heads",
        ],
    )
    .await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(c, b)| (b.to_string(), c.to_string()))
        .collect())
}

/// The tree of `commit` as a tar archive (no `.git`).
pub async fn archive(repo: &Path, commit: &str) -> std::io::Result<Vec<u8>> {
    run_git(repo, &["archive", "--format=tar", commit]).await
}

/// Runs `git http-backend` for one request.
pub async fn http_backend(project_root: &Path, repo_name: &str, req: GitRequest) -> GitResponse {
    let allowed = matches!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/info/refs") | ("POST", "/git-upload-pack") | ("POST", "/git-receive-pack")
    );
    if !allowed {
        return GitResponse::error(404, "not a git smart-HTTP endpoint");
    }
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{repo_name}{}", req.path))
        .env("REQUEST_METHOD", &req.method)
        .env("QUERY_STRING", &req.query)
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .env("REMOTE_USER", &req.user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_COMMITTER_NAME", &req.user)
        .env("GIT_COMMITTER_EMAIL", format!("{}@slipway", req.user))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(ct) = &req.content_type {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(ce) = &req.content_encoding {
        cmd.env("HTTP_CONTENT_ENCODING", ce);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return GitResponse::error(500, &format!("cannot run git http-backend: {e}")),
    };
    let mut stdin = child.stdin.take();
    let body = req.body;
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // git stops reading when it refuses a request; its answer says why.
            if let Err(e) = stdin.write_all(&body).await {
                tracing::debug!("git http-backend took {} bytes less: {e}", body.len());
            } else if let Err(e) = stdin.shutdown().await {
                tracing::debug!("closing git http-backend's input: {e}");
            }
        }
        drop(stdin);
    };
    let run = async {
        let (_, out) = tokio::join!(feed, child.wait_with_output());
        out
    };
    let out = match tokio::time::timeout(Duration::from_secs(600), run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return GitResponse::error(500, &format!("git http-backend failed: {e}")),
        Err(_) => return GitResponse::error(504, "git http-backend timed out"),
    };
    parse_cgi(&out.stdout).unwrap_or_else(|| {
        GitResponse::error(
            502,
            &format!(
                "git http-backend gave no valid answer: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )
    })
}

fn parse_cgi(out: &[u8]) -> Option<GitResponse> {
    let (head_end, body_start) = find_head_end(out)?;
    let head = std::str::from_utf8(&out[..head_end]).ok()?;
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        let (k, v) = line.split_once(':')?;
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            status = v.split_whitespace().next()?.parse().ok()?;
        } else {
            headers.push((k.trim().to_string(), v.to_string()));
        }
    }
    Some(GitResponse {
        status,
        headers,
        body: out[body_start..].to_vec(),
    })
}

fn find_head_end(out: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        let j = out.windows(2).position(|w| w == b"\n\n");
        if j.is_none_or(|j| j > i) {
            return Some((i, i + 4));
        }
    }
    out.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

/// Where a service's repository lives under the repositories directory.
pub fn repo_dir(root: &Path, service: &str) -> PathBuf {
    root.join(format!("{service}.git"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgi_output() {
        let r = parse_cgi(b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nno").unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(
            r.headers,
            vec![("Content-Type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(r.body, b"no");
        let r = parse_cgi(b"Content-Type: x\n\nbody\r\n\r\nmore").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"body\r\n\r\nmore");
        assert!(parse_cgi(b"garbage").is_none());
    }

    #[tokio::test]
    async fn branch_heads_none_or_an_error() {
        let dir = std::env::temp_dir().join(format!("slipway-git-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = dir.join("web.git");
        ensure_repo(&repo, "main").await.unwrap();
        // A new repository has no branch yet: no commit, not an error.
        assert_eq!(branch_commit(&repo, "main").await.unwrap(), None);
        // A directory that is no repository is git failing: an error, not "no commit".
        let plain = dir.join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let e = branch_commit(&plain, "main").await.unwrap_err();
        assert!(e.to_string().contains("git rev-parse"), "{e}");
        // A commit on the branch is found.
        let work = dir.join("work");
        let git = |args: &[&str], cwd: &Path| {
            let ok = std::process::Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(cwd)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        std::fs::create_dir_all(&work).unwrap();
        git(&["init", "-q"], &work);
        std::fs::write(work.join("f"), "x").unwrap();
        git(&["add", "f"], &work);
        git(&["commit", "-qm", "one"], &work);
        git(&["push", "-q", repo.to_str().unwrap(), "HEAD:main"], &work);
        let head = branch_commit(&repo, "main").await.unwrap().unwrap();
        assert_eq!(head.len(), 40);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
