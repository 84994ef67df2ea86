//! Watched repositories: a service whose git source has a `url` is fetched with git2 into
//! its own bare repository (the same one pushes go to), polled every `poll_s` seconds or
//! at once by a webhook, and each new head of its branch builds like a push.

use std::path::Path;

/// How git2 authenticates to a watched repository.
#[derive(Clone)]
pub enum Credentials {
    /// None: a public repository or a local path.
    None,
    /// `user:password`, or a token (user `x-access-token`), for https; a private key (the
    /// user from the URL, else `git`) for ssh.
    Secret(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Secret(_) => f.write_str("Secret(..)"),
        }
    }
}

/// Why a watched repository could not be read. The message never holds credentials.
#[derive(Debug, thiserror::Error)]
#[error("fetching branch {branch} of {url}: {message}")]
pub struct FetchError {
    /// The URL as the user gave it (it holds no credentials: see `check_repo_url`).
    pub url: String,
    /// The branch.
    pub branch: String,
    /// What git2 said.
    pub message: String,
}

/// git2's message, with what to do where libgit2's own says only what went wrong.
fn with_hint(e: &git2::Error) -> String {
    let message = e.message();
    if e.class() == git2::ErrorClass::Ssh && message.contains("hostkey") {
        // libgit2 checks the host key against the known_hosts of the user running us.
        format!(
            "{message}: add the host's key to ~/.ssh/known_hosts of the user running \
             `slipway serve` (for example `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts`)"
        )
    } else {
        message.to_string()
    }
}

/// Whether `url` is a local repository (`file://` or an absolute path).
pub fn is_local(url: &str) -> bool {
    url.to_ascii_lowercase().starts_with("file://") || url.starts_with('/')
}

/// Fetches `branch` of `url` into the bare repository at `repo` (made if missing) as
/// `refs/heads/<branch>`, and returns its head. Blocking: run it on a blocking thread.
pub fn fetch(
    repo: &Path,
    url: &str,
    branch: &str,
    creds: &Credentials,
    all_branches: bool,
) -> Result<String, FetchError> {
    let fail = |e: git2::Error| FetchError {
        url: url.to_string(),
        branch: branch.to_string(),
        message: with_hint(&e),
    };
    let r = match git2::Repository::open_bare(repo) {
        Ok(r) => r,
        Err(_) => {
            std::fs::create_dir_all(repo).map_err(|e| FetchError {
                url: url.to_string(),
                branch: branch.to_string(),
                message: e.to_string(),
            })?;
            git2::Repository::init_bare(repo).map_err(fail)?
        }
    };
    let mut callbacks = git2::RemoteCallbacks::new();
    let creds = creds.clone();
    let mut tries = 0;
    callbacks.credentials(move |_url, username, allowed| {
        tries += 1;
        if tries > 3 {
            return Err(git2::Error::from_str("the credentials were refused"));
        }
        match &creds {
            Credentials::None => Err(git2::Error::from_str(
                "the repository asks for credentials: set source.credentials to a Slipway secret",
            )),
            Credentials::Secret(value) => {
                if allowed.contains(git2::CredentialType::SSH_MEMORY) {
                    git2::Cred::ssh_key_from_memory(username.unwrap_or("git"), None, value, None)
                } else {
                    let (user, pass) = value
                        .split_once(':')
                        .unwrap_or(("x-access-token", value.as_str()));
                    git2::Cred::userpass_plaintext(user, pass)
                }
            }
        }
    });
    let mut opts = git2::FetchOptions::new();
    opts.remote_callbacks(callbacks);
    opts.download_tags(git2::AutotagOption::None);
    let mut remote = r.remote_anonymous(url).map_err(fail)?;
    // With previews, every branch (and branches deleted upstream go here too).
    let refspec = if all_branches {
        opts.prune(git2::FetchPrune::On);
        "+refs/heads/*:refs/heads/*".to_string()
    } else {
        format!("+refs/heads/{branch}:refs/heads/{branch}")
    };
    remote
        .fetch(&[refspec.as_str()], Some(&mut opts), None)
        .map_err(fail)?;
    let head = r
        .find_reference(&format!("refs/heads/{branch}"))
        .and_then(|h| h.peel_to_commit())
        .map_err(fail)?;
    Ok(head.id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_host_key_says_what_to_do() {
        let e = git2::Error::new(
            git2::ErrorCode::Certificate,
            git2::ErrorClass::Ssh,
            "invalid or unknown remote ssh hostkey",
        );
        let m = with_hint(&e);
        assert!(
            m.starts_with("invalid or unknown remote ssh hostkey: add"),
            "{m}"
        );
        assert!(m.contains("ssh-keyscan"), "{m}");
        let other = git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Ssh,
            "authentication failed",
        );
        assert_eq!(with_hint(&other), "authentication failed");
    }

    fn git(dir: &Path, args: &[&str]) {
        let st = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }

    #[test]
    fn fetches_a_local_branch_and_follows_it() {
        let dir = std::env::temp_dir().join(format!("slipway-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "-q", "-b", "main"]);
        git(&src, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let bare = dir.join("mirror.git");
        let url = format!("file://{}", src.display());
        let one = fetch(&bare, &url, "main", &Credentials::None, false).unwrap();
        git(&src, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let two = fetch(&bare, &url, "main", &Credentials::None, false).unwrap();
        assert_ne!(one, two);
        // Force-pushed history is followed too.
        git(&src, &["reset", "-q", "--hard", &one]);
        assert_eq!(
            fetch(&bare, &url, "main", &Credentials::None, false).unwrap(),
            one
        );
        let e = fetch(&bare, &url, "nope", &Credentials::None, false).unwrap_err();
        assert!(e.to_string().contains("fetching branch nope"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
