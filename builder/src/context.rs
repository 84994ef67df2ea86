//! From a pushed tree to what the engine builds: the service's source directory (a
//! subfolder for monorepos), filtered through its `.dockerignore` and without `.git`; the
//! Dockerfile it has, or one made from its `apprunner.yaml`; base images resolved
//! through the operator's aliases; and the operator's CA bundle injected, so that
//! `pip install` and `npm install` work behind a TLS-intercepting proxy on any base
//! image.

use std::collections::BTreeMap;
use std::io::Read;

use slipway_core::{BuildConfig, BuildSettings};

use crate::apprunner::{self, AppRunnerConfig, ConfigError};
use crate::dockerignore::DockerIgnore;

/// Where the injected CA bundle is, inside each build stage.
pub const CA_PATH: &str = "/usr/local/share/slipway-build-ca.pem";
/// Its name in the context.
const CA_FILE: &str = ".slipway-build-ca.pem";
/// The variables that point TLS clients at the bundle during `RUN`: exported by the
/// stage's shell (which overrides a base image's `ENV` of the same name) and given as
/// build arguments for exec-form `RUN`s, so none is in the image's configuration.
/// `PIP_CERT` is unset instead: pip reads `REQUESTS_CA_BUNDLE` without it, and a base
/// image's `PIP_CERT` pointing at its own bundle would win.
const CA_VARS: [&str; 6] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "NPM_CONFIG_CAFILE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
];

/// The operator's build settings.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Base image of each apprunner.yaml runtime (defaults: [`apprunner::DEFAULT_IMAGES`]).
    pub runtime_images: BTreeMap<String, String>,
    /// Names that Dockerfiles use, mapped to images this engine has.
    pub aliases: BTreeMap<String, String>,
    /// A CA bundle (PEM) to trust during builds.
    pub ca: Option<Vec<u8>>,
    /// Whether services may watch local repositories (`file://`, absolute paths).
    pub allow_file_urls: bool,
}

impl BuildOptions {
    /// The image an apprunner.yaml runtime builds on.
    pub fn runtime_image(&self, runtime: &str) -> String {
        self.runtime_images
            .get(runtime)
            .cloned()
            .or_else(|| {
                apprunner::DEFAULT_IMAGES
                    .iter()
                    .find(|(r, _)| *r == runtime)
                    .map(|(_, i)| i.to_string())
            })
            .unwrap_or_else(|| runtime.to_string())
    }
}

/// What to build.
#[derive(Debug)]
pub struct Context {
    /// The tar the engine builds.
    pub tar: Vec<u8>,
    /// The file it was made from (`Dockerfile`, `apprunner.yaml`), with the directory.
    pub from: String,
    /// The apprunner.yaml, when that is what builds.
    pub apprunner: Option<AppRunnerConfig>,
    /// The image whose user the final stage runs as, when the CA bundle is removed at
    /// the end (as root) and no `USER` of the Dockerfile says who to switch back to: the
    /// caller reads that image's user and builds the context again with it (see
    /// [`build_context`]'s `base_user`).
    pub user_from: Option<String>,
}

/// Why a pushed tree cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The tree's archive could not be read or written again.
    #[error("the pushed tree could not be read as an archive: {0}")]
    Archive(#[from] std::io::Error),
    /// There is nothing to build.
    #[error("no Dockerfile and no apprunner.yaml in {0} of the pushed tree: add one")]
    NoBuildFile(String),
    /// The apprunner.yaml is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

struct Entry {
    header: tar::Header,
    path: String,
    data: Vec<u8>,
}

/// Builds the context of `tree` (a `git archive` tar) for a service built as `settings`
/// say, with the operator's `opts`.
pub fn build_context(
    tree: &[u8],
    settings: &BuildSettings,
    opts: &BuildOptions,
    base_user: Option<&str>,
) -> Result<Context, ContextError> {
    let dir = settings.dir.trim_matches('/');
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let shown_dir = if dir.is_empty() {
        "the root".to_string()
    } else {
        format!("directory {dir}")
    };
    let mut entries = Vec::new();
    let mut ar = tar::Archive::new(tree);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue; // pax headers and the like
        }
        let path = entry.path()?.to_string_lossy().to_string();
        let Some(rel) = path.strip_prefix(&prefix) else {
            continue;
        };
        let rel = rel.to_string();
        if rel.trim_end_matches('/').is_empty() {
            continue;
        }
        let header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        entries.push(Entry {
            header,
            path: rel,
            data,
        });
    }
    let file = |name: &str| entries.iter().find(|e| e.path == name);
    let ignore = file(".dockerignore")
        .map(|e| DockerIgnore::parse(&String::from_utf8_lossy(&e.data)))
        .unwrap_or_default();
    let yaml = apprunner::FILE_NAMES
        .iter()
        .find_map(|n| file(n).map(|e| (*n, e)));
    let dockerfile = file("Dockerfile");
    let use_yaml = match (settings.config, dockerfile.is_some(), yaml.is_some()) {
        (_, false, false) => return Err(ContextError::NoBuildFile(shown_dir)),
        (BuildConfig::Apprunner, _, true) | (_, false, true) => true,
        _ => false,
    };
    let shown = |name: &str| format!("{prefix}{name}");
    let (text, from, config) = if use_yaml {
        let (name, e) = yaml.expect("checked above");
        let config = apprunner::parse(&shown(name), &String::from_utf8_lossy(&e.data))?;
        let text = config.dockerfile(&opts.runtime_image(&config.runtime));
        (text, shown(name), Some(config))
    } else {
        let e = dockerfile.expect("checked above");
        (
            String::from_utf8_lossy(&e.data).into_owned(),
            shown("Dockerfile"),
            None,
        )
    };
    let user_from = if opts.ca.is_some() && !settings.keep_ca {
        inherited_user_image(&text, opts)
    } else {
        None
    };
    let text = rewrite_dockerfile(&text, opts, settings.keep_ca, base_user);

    let mut out = tar::Builder::new(Vec::new());
    for e in &entries {
        let rel = e.path.trim_end_matches('/');
        if rel == ".git"
            || rel.starts_with(".git/")
            || rel == "Dockerfile"
            || rel == CA_FILE
            || (ignore.excludes(rel) && rel != ".dockerignore")
        {
            continue;
        }
        let mut header = e.header.clone();
        out.append_data(&mut header, &e.path, e.data.as_slice())?;
    }
    append_file(&mut out, "Dockerfile", text.as_bytes())?;
    if let Some(ca) = &opts.ca {
        append_file(&mut out, CA_FILE, ca)?;
    }
    Ok(Context {
        tar: out.into_inner()?,
        from,
        apprunner: config,
        user_from,
    })
}

fn append_file(out: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    out.append_data(&mut h, path, data)
}

/// The image of a `FROM` line and the rest of it: `FROM [--platform=P] IMAGE [AS NAME]`.
fn from_image(line: &str) -> Option<(usize, usize)> {
    let t = line.trim_start();
    let lead = line.len() - t.len();
    let keyword = t.get(..4).filter(|k| k.eq_ignore_ascii_case("FROM"))?;
    if !t[keyword.len()..].starts_with([' ', '\t']) {
        return None;
    }
    let mut pos = lead + 4;
    for word in line[pos..].split_whitespace() {
        let at = line[pos..].find(word)? + pos;
        if word.starts_with("--") {
            pos = at + word.len();
            continue;
        }
        return Some((at, at + word.len()));
    }
    None
}

/// Where the last stage's user comes from when it sets none itself.
enum Inherited {
    /// The last `USER` line of an earlier stage it is built `FROM`.
    Line(String),
    /// The configured user of this image (through the aliases).
    Image(String),
}

/// Walks from the last stage through the earlier stages it is built `FROM`; None when the
/// last stage sets its own `USER` or the chain starts from `scratch`.
fn inherited_user(text: &str, opts: &BuildOptions) -> Option<Inherited> {
    // Per stage: its base image (or the earlier stage it names), its name, its last USER.
    let mut stages: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for l in text.lines() {
        if let Some((a, b)) = from_image(l) {
            let mut rest = l[b..].split_whitespace();
            let name = match (rest.next(), rest.next()) {
                (Some(k), Some(n)) if k.eq_ignore_ascii_case("AS") => Some(n.to_ascii_lowercase()),
                _ => None,
            };
            stages.push((l[a..b].to_string(), name, None));
        } else if is_instruction(l, "USER") {
            if let Some(last) = stages.last_mut() {
                last.2 = Some(l.trim().to_string());
            }
        }
    }
    let mut at = stages.len().checked_sub(1)?;
    if stages[at].2.is_some() {
        return None;
    }
    // Bounded: each step goes to an earlier stage.
    for _ in 0..stages.len() {
        let (image, _, user) = &stages[at];
        if let Some(line) = user {
            return Some(Inherited::Line(line.clone()));
        }
        let lower = image.to_ascii_lowercase();
        match stages[..at]
            .iter()
            .rposition(|s| s.1.as_deref() == Some(lower.as_str()))
        {
            Some(earlier) => at = earlier,
            None if lower == "scratch" => return None,
            None => {
                let image = opts
                    .aliases
                    .get(image)
                    .cloned()
                    .unwrap_or_else(|| image.clone());
                return Some(Inherited::Image(image));
            }
        }
    }
    None
}

/// The image whose configured user the last stage runs as: None when a `USER` in the
/// last stage, or in an earlier stage it is built `FROM`, sets it, or when it starts from
/// `scratch`.
pub fn inherited_user_image(text: &str, opts: &BuildOptions) -> Option<String> {
    match inherited_user(text, opts)? {
        Inherited::Image(image) => Some(image),
        Inherited::Line(_) => None,
    }
}

fn is_instruction(line: &str, name: &str) -> bool {
    let t = line.trim_start();
    t.get(..name.len())
        .is_some_and(|k| k.eq_ignore_ascii_case(name))
        && t[name.len()..].starts_with([' ', '\t'])
}

/// Resolves `FROM` images through the aliases and, with a CA bundle, makes every stage
/// that runs commands trust it: the bundle is copied in after the stage's `FROM`, the
/// usual TLS variables point at it as build arguments (not in the image's environment),
/// and unless `keep_ca`, the last stage removes it again, as root, and switches back to
/// the stage's own `USER`, or else to `base_user` (the user its base image runs as, see
/// [`inherited_user_image`]).
pub fn rewrite_dockerfile(
    text: &str,
    opts: &BuildOptions,
    keep_ca: bool,
    base_user: Option<&str>,
) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|i| from_image(lines[*i]).is_some())
        .collect();
    // Per stage: whether it runs anything, and its last USER and SHELL.
    let stage_of = |i: usize| froms.iter().rposition(|f| *f <= i);
    let mut runs = vec![false; froms.len()];
    let mut last_user: Vec<Option<&str>> = vec![None; froms.len()];
    let mut last_shell: Vec<Option<&str>> = vec![None; froms.len()];
    for (i, l) in lines.iter().enumerate() {
        if let Some(s) = stage_of(i) {
            if is_instruction(l, "RUN") {
                runs[s] = true;
            }
            if is_instruction(l, "USER") {
                last_user[s] = Some(l.trim());
            }
            if is_instruction(l, "SHELL") {
                last_shell[s] = Some(l.trim());
            }
        }
    }
    let exports: Vec<String> = CA_VARS.iter().map(|v| format!("{v}={CA_PATH}")).collect();
    let wrapper = format!("unset PIP_CERT; export {}; eval \"$1\"", exports.join(" "));
    let shell = format!(
        "SHELL {}\n",
        serde_json::to_string(&["/bin/sh", "-c", &wrapper, "slipway-build"]).unwrap_or_default()
    );
    let inject = opts.ca.is_some();
    let mut out = String::with_capacity(text.len() + 512);
    for (i, l) in lines.iter().enumerate() {
        match from_image(l) {
            Some((a, b)) => {
                let image = &l[a..b];
                match opts.aliases.get(image) {
                    Some(to) => {
                        out.push_str(&l[..a]);
                        out.push_str(to);
                        out.push_str(&l[b..]);
                    }
                    None => out.push_str(l),
                }
                out.push('\n');
                let s = froms.iter().position(|f| *f == i).unwrap_or(0);
                if inject && runs[s] {
                    out.push_str(&format!("COPY {CA_FILE} {CA_PATH}\n"));
                    for v in CA_VARS {
                        out.push_str(&format!("ARG {v}={CA_PATH}\n"));
                    }
                    out.push_str(&shell);
                }
            }
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    let last = froms.len().checked_sub(1);
    if let Some(last) = last.filter(|l| inject && !keep_ca && runs[*l]) {
        out.push_str("USER root\n");
        out.push_str(&format!("RUN [\"rm\", \"-f\", \"{CA_PATH}\"]\n"));
        out.push_str(last_shell[last].unwrap_or("SHELL [\"/bin/sh\", \"-c\"]"));
        out.push('\n');
        match (last_user[last], inherited_user(text, opts)) {
            (Some(user), _) => out.push_str(user),
            (None, Some(Inherited::Line(user))) => out.push_str(&user),
            (None, _) => {
                if let Some(user) = base_user.filter(|u| !u.is_empty()) {
                    out.push_str(&format!("USER {user}"));
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, c) in files {
            append_file(&mut b, p, c.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn files(t: &[u8]) -> Vec<(String, String)> {
        tar::Archive::new(t)
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().to_string();
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                (p, s)
            })
            .collect()
    }

    fn names(t: &[u8]) -> Vec<String> {
        files(t).into_iter().map(|(p, _)| p).collect()
    }

    fn dockerfile_of(t: &[u8]) -> String {
        files(t)
            .into_iter()
            .find(|(p, _)| p == "Dockerfile")
            .unwrap()
            .1
    }

    #[test]
    fn context_honours_dockerignore_and_drops_git() {
        let t = tar_of(&[
            ("Dockerfile", "FROM busybox"),
            (".dockerignore", "*.log\nsecret\nDockerfile\n"),
            ("index.html", "hi"),
            ("debug.log", "x"),
            ("secret/key", "k"),
            (".git/HEAD", "ref"),
        ]);
        let ctx = build_context(
            &t,
            &BuildSettings::default(),
            &BuildOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            names(&ctx.tar),
            vec![".dockerignore", "index.html", "Dockerfile"]
        );
        assert_eq!(ctx.from, "Dockerfile");
    }

    #[test]
    fn missing_build_file_is_explained() {
        let err = build_context(
            &tar_of(&[("index.html", "hi")]),
            &BuildSettings::default(),
            &BuildOptions::default(),
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("no Dockerfile and no apprunner.yaml in the root"),
            "{err}"
        );
    }

    const YAML: &str = "version: 1.0\nruntime: python311\nrun:\n  command: python app.py\n  network:\n    port: 8000\n";

    #[test]
    fn the_dockerfile_wins_unless_the_settings_say_apprunner() {
        let t = tar_of(&[("Dockerfile", "FROM busybox\n"), ("apprunner.yaml", YAML)]);
        let opts = BuildOptions::default();
        let d = build_context(&t, &BuildSettings::default(), &opts, None).unwrap();
        assert_eq!(d.from, "Dockerfile");
        assert!(d.apprunner.is_none());
        let settings = BuildSettings {
            config: BuildConfig::Apprunner,
            ..Default::default()
        };
        let a = build_context(&t, &settings, &opts, None).unwrap();
        assert_eq!(a.from, "apprunner.yaml");
        assert_eq!(a.apprunner.unwrap().port, 8000);
        assert!(dockerfile_of(&a.tar).contains("FROM python:3.11-slim AS build"));
        // Only the yaml: it builds whatever the setting.
        let only = tar_of(&[("apprunner.yml", YAML)]);
        assert_eq!(
            build_context(&only, &BuildSettings::default(), &opts, None)
                .unwrap()
                .from,
            "apprunner.yml"
        );
    }

    #[test]
    fn a_subfolder_is_the_context_and_errors_name_the_file() {
        let t = tar_of(&[
            ("README", "root"),
            (
                "services/api/apprunner.yaml",
                "version: 1.0\nruntime: nodejs20\nrun:\n  command: x\n",
            ),
            ("services/web/Dockerfile", "FROM busybox\n"),
            ("services/web/index.html", "web"),
        ]);
        let web = BuildSettings {
            dir: "services/web".into(),
            ..Default::default()
        };
        let ctx = build_context(&t, &web, &BuildOptions::default(), None).unwrap();
        assert_eq!(names(&ctx.tar), vec!["index.html", "Dockerfile"]);
        assert_eq!(ctx.from, "services/web/Dockerfile");
        let api = BuildSettings {
            dir: "services/api/".into(),
            ..Default::default()
        };
        let e = build_context(&t, &api, &BuildOptions::default(), None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("services/api/apprunner.yaml line 2: runtime: \"nodejs20\""),
            "{e}"
        );
        let none = BuildSettings {
            dir: "docs".into(),
            ..Default::default()
        };
        let e = build_context(&t, &none, &BuildOptions::default(), None).unwrap_err();
        assert!(e.to_string().contains("in directory docs"), "{e}");
    }

    #[test]
    fn aliases_resolve_from_lines_and_the_ca_is_injected_then_removed() {
        let mut opts = BuildOptions::default();
        opts.aliases
            .insert("python:3.9-alpine".into(), "python:3.11-slim".into());
        opts.ca = Some(b"-----BEGIN CERTIFICATE-----\n".to_vec());
        let text = "# syntax comment\nFROM --platform=linux/amd64 python:3.9-alpine AS build\nRUN pip install x\nfrom scratch AS assets\nCOPY a /a\nFROM python:3.9-alpine\nCOPY --from=build /app /app\nRUN pip install y\nUSER app\nCMD [\"python\"]\n";
        let d = rewrite_dockerfile(text, &opts, false, None);
        assert!(d.contains("FROM --platform=linux/amd64 python:3.11-slim AS build\nCOPY .slipway-build-ca.pem /usr/local/share/slipway-build-ca.pem\nARG SSL_CERT_FILE="), "{d}");
        // A stage that runs nothing gets nothing (it may have no shell at all).
        assert!(d.contains("from scratch AS assets\nCOPY a /a\n"), "{d}");
        assert_eq!(d.matches("COPY .slipway-build-ca.pem").count(), 2, "{d}");
        assert!(d.contains("SHELL [\"/bin/sh\",\"-c\",\"unset PIP_CERT; export SSL_CERT_FILE=/usr/local/share/slipway-build-ca.pem REQUESTS_CA_BUNDLE="), "{d}");
        assert!(d.ends_with("CMD [\"python\"]\nUSER root\nRUN [\"rm\", \"-f\", \"/usr/local/share/slipway-build-ca.pem\"]\nSHELL [\"/bin/sh\", \"-c\"]\nUSER app\n"), "{d}");
        let kept = rewrite_dockerfile(text, &opts, true, None);
        assert!(!kept.contains("rm\", \"-f"));
        // No CA: only the aliases change anything.
        opts.ca = None;
        let plain = rewrite_dockerfile(text, &opts, false, None);
        assert_eq!(plain, text.replace("python:3.9-alpine", "python:3.11-slim"));
    }

    /// Without a USER of its own the final stage inherits its base's user: the clean-up,
    /// which runs as root, switches back to it; a USER anywhere in the chain of stages
    /// is what is kept instead.
    #[test]
    fn the_ca_clean_up_gives_the_base_image_its_user_back() {
        let mut opts = BuildOptions {
            ca: Some(b"x".to_vec()),
            ..Default::default()
        };
        opts.aliases
            .insert("app-base".into(), "registry.local/app-base:1".into());
        let text = "FROM app-base\nRUN make\n";
        assert_eq!(
            inherited_user_image(text, &opts).as_deref(),
            Some("registry.local/app-base:1")
        );
        let d = rewrite_dockerfile(text, &opts, false, Some("nobody"));
        assert!(d.ends_with("USER root\nRUN [\"rm\", \"-f\", \"/usr/local/share/slipway-build-ca.pem\"]\nSHELL [\"/bin/sh\", \"-c\"]\nUSER nobody\n"), "{d}");
        // Through stages: `final` is built FROM `base`, which is FROM app-base.
        let staged = "FROM app-base AS base\nRUN a\nFROM golang AS build\nRUN b\nFROM base AS final\nRUN c\n";
        assert_eq!(
            inherited_user_image(staged, &opts).as_deref(),
            Some("registry.local/app-base:1")
        );
        let with_user = "FROM app-base AS base\nUSER app\nFROM base\nRUN c\n";
        assert_eq!(inherited_user_image(with_user, &opts), None);
        // ... and that stage's USER is the one switched back to.
        let d = rewrite_dockerfile(with_user, &opts, false, None);
        assert!(d.ends_with("USER app\n"), "{d}");
        assert_eq!(
            inherited_user_image("FROM scratch\nCOPY x /\n", &opts),
            None
        );
        // The Dockerfile's own USER wins over the base's.
        let own = rewrite_dockerfile(
            "FROM app-base\nUSER app\nRUN x\n",
            &opts,
            false,
            Some("nobody"),
        );
        assert!(
            own.ends_with("USER app\n") && !own.contains("USER nobody"),
            "{own}"
        );
    }

    proptest::proptest! {
        /// Any Dockerfile text: rewritten without a panic, every line kept.
        #[test]
        fn any_dockerfile_is_rewritten(text in "\\PC{0,400}") {
            let opts = BuildOptions {
                ca: Some(b"x".to_vec()),
                ..Default::default()
            };
            let d = rewrite_dockerfile(&text, &opts, false, None);
            for l in text.lines() {
                proptest::prop_assert!(d.contains(l));
            }
            let _ = inherited_user_image(&text, &opts);
        }
    }
}
