//! App Runner's source-code configuration file, `apprunner.yaml`: parsed as real
//! repositories write it (bare numbers kept as their text, trailing spaces, `- name : X`,
//! comments, a leading `---`, integer values) and turned into a Dockerfile. Anything the
//! file gets wrong is one error naming the line and the field; nothing in a file can make
//! this panic.
//!
//! - The original build (python3, nodejs12-16, corretto, go1, dotnet6, php81, ruby31) runs
//!   every command in one image.
//! - The revised build (python311, nodejs18, nodejs22) builds in one image and copies
//!   `/app` into a clean run image, where `run.pre-run` runs.
//! - `run.command` is exec'd (an exec-form `CMD`), so stop signals reach the app; a
//!   command that needs a shell (pipes, `&&`, variables) runs under `/bin/sh -c`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The file names looked for, in this order.
pub const FILE_NAMES: [&str; 2] = ["apprunner.yaml", "apprunner.yml"];

/// Exactly App Runner's runtimes: the name, the versions it offers (a `runtime-version`
/// must be one of them or start with one and a dot), and whether it uses the revised
/// build.
pub const RUNTIMES: &[(&str, &[&str], bool)] = &[
    ("python3", &["3.7", "3.8"], false),
    ("python311", &["3.11"], true),
    ("nodejs12", &["12"], false),
    ("nodejs14", &["14"], false),
    ("nodejs16", &["16"], false),
    ("nodejs18", &["18"], true),
    ("nodejs22", &["22"], true),
    ("corretto8", &["8"], false),
    ("corretto11", &["11"], false),
    ("go1", &["1"], false),
    ("dotnet6", &["6"], false),
    ("php81", &["8.1"], false),
    ("ruby31", &["3.1"], false),
];

/// The base image of each runtime when the operator configures none.
pub const DEFAULT_IMAGES: &[(&str, &str)] = &[
    ("python3", "python:3"),
    ("python311", "python:3.11-slim"),
    ("nodejs12", "node:12"),
    ("nodejs14", "node:14"),
    ("nodejs16", "node:16"),
    ("nodejs18", "node:18"),
    ("nodejs22", "node:22"),
    ("corretto8", "amazoncorretto:8"),
    ("corretto11", "amazoncorretto:11"),
    ("go1", "golang:1"),
    ("dotnet6", "mcr.microsoft.com/dotnet/sdk:6.0"),
    ("php81", "php:8.1"),
    ("ruby31", "ruby:3.1"),
];

/// What is wrong with a file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file's name as found (`apprunner.yaml`).
    pub file: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The field (dotted) and what is wrong with it.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: String,
    runtime: String,
    #[serde(default)]
    build: Option<RawBuild>,
    run: RawRun,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    #[serde(default)]
    commands: Option<RawCommands>,
    #[serde(default)]
    env: Option<Vec<RawEnv>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCommands {
    #[serde(default)]
    pre_build: Option<Vec<String>>,
    #[serde(default)]
    build: Option<Vec<String>>,
    #[serde(default)]
    post_build: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRun {
    #[serde(default)]
    runtime_version: Option<String>,
    #[serde(default)]
    pre_run: Option<Vec<String>>,
    command: String,
    #[serde(default)]
    network: Option<RawNetwork>,
    #[serde(default)]
    env: Option<Vec<RawEnv>>,
    #[serde(default)]
    secrets: Option<Vec<RawSecret>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    port: Option<String>,
    #[serde(default)]
    env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSecret {
    name: String,
    value_from: String,
}

/// A valid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRunnerConfig {
    /// The runtime (one of [`RUNTIMES`]).
    pub runtime: String,
    /// `run.runtime-version`, as written.
    pub runtime_version: Option<String>,
    /// Whether the revised build is used.
    pub revised: bool,
    /// `build.commands`: pre-build, build and post-build, in order.
    pub build_commands: Vec<String>,
    /// `build.env`: only for the build.
    pub build_env: Vec<(String, String)>,
    /// `run.pre-run` (revised builds only).
    pub pre_run: Vec<String>,
    /// `run.command`.
    pub command: String,
    /// `run.network.port` (default 8080).
    pub port: u16,
    /// `run.network.env`: a variable that gets the port.
    pub port_env: Option<String>,
    /// `run.env`.
    pub run_env: Vec<(String, String)>,
    /// `run.secrets`: variable name to the Slipway secret whose value it gets.
    pub secrets: BTreeMap<String, String>,
}

/// The keys valid in each mapping, for "did you mean".
const KEYS: &[&str] = &[
    "version",
    "runtime",
    "build",
    "run",
    "commands",
    "env",
    "pre-build",
    "post-build",
    "runtime-version",
    "pre-run",
    "command",
    "network",
    "secrets",
    "port",
    "name",
    "value",
    "value-from",
];

/// Parses `text`, the contents of `file`.
pub fn parse(file: &str, text: &str) -> Result<AppRunnerConfig, ConfigError> {
    let err = |line: Option<usize>, message: String| ConfigError {
        file: file.to_string(),
        line,
        message,
    };
    for (i, l) in text.lines().enumerate() {
        if ["<<<<<<<", "=======", ">>>>>>>"]
            .iter()
            .any(|m| l.starts_with(m))
        {
            return Err(err(
                Some(i + 1),
                "a git conflict marker: resolve the merge and commit the file again".into(),
            ));
        }
    }
    // Tags (`!Sub`, `!Ref`: a CloudFormation template) are refused, not read past.
    if let Ok(value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        if let Some(tag) = first_tag(&value) {
            let line = line_of(text, |l| l.contains(&tag));
            return Err(err(
                line,
                format!("the YAML tag {tag} is not part of apprunner.yaml (is this a CloudFormation template?): write plain values"),
            ));
        }
    }
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        err(line, explain(&e.to_string()))
    })?;
    let field_line = |key: &str| {
        line_of(text, |l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
    };
    if raw.version != "1.0" {
        return Err(err(
            field_line("version"),
            format!(
                "version: {:?} is not a version of the format: write 1.0",
                raw.version
            ),
        ));
    }
    let Some((runtime, versions, revised)) = RUNTIMES.iter().find(|r| r.0 == raw.runtime) else {
        let names: Vec<&str> = RUNTIMES.iter().map(|r| r.0).collect();
        return Err(err(
            field_line("runtime"),
            format!(
                "runtime: {:?} is not a runtime{} (valid: {})",
                raw.runtime,
                did_you_mean(&raw.runtime, &names),
                names.join(", ")
            ),
        ));
    };
    let run = raw.run;
    if let Some(v) = &run.runtime_version {
        let offered = versions
            .iter()
            .any(|o| v == o || v.strip_prefix(o).is_some_and(|r| r.starts_with('.')));
        if !offered {
            return Err(err(
                field_line("runtime-version"),
                format!(
                    "run.runtime-version: {v} is not offered by runtime {runtime} (it offers {})",
                    versions.join(", ")
                ),
            ));
        }
    }
    let pre_run = run.pre_run.unwrap_or_default();
    if !pre_run.is_empty() && !revised {
        return Err(err(
            field_line("pre-run"),
            format!("run.pre-run: only the revised-build runtimes (python311, nodejs18, nodejs22) run pre-run commands; {runtime} does not"),
        ));
    }
    let (mut build_commands, mut build_env) = (Vec::new(), Vec::new());
    if let Some(b) = raw.build {
        if let Some(c) = b.commands {
            for list in [c.pre_build, c.build, c.post_build].into_iter().flatten() {
                build_commands.extend(list);
            }
        }
        build_env = env_list(b.env, "build.env", &field_line).map_err(|(l, m)| err(l, m))?;
    }
    let run_env = env_list(run.env, "run.env", &field_line).map_err(|(l, m)| err(l, m))?;
    if run.command.trim().is_empty() {
        return Err(err(field_line("command"), "run.command: is empty".into()));
    }
    let (mut port, mut port_env) = (8080u16, None);
    if let Some(n) = run.network {
        if let Some(p) = n.port {
            port = p.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                err(
                    field_line("port"),
                    format!("run.network.port: {p:?} is not a port (1-65535)"),
                )
            })?;
        }
        if let Some(e) = n.env {
            check_var(&e).map_err(|m| err(field_line("env"), format!("run.network.env: {m}")))?;
            port_env = Some(e);
        }
    }
    let mut secrets = BTreeMap::new();
    for s in run.secrets.unwrap_or_default() {
        let line = line_of(text, |l| l.contains(&s.value_from));
        check_var(&s.name).map_err(|m| err(line, format!("run.secrets: {m}")))?;
        if s.value_from.starts_with("arn:") {
            return Err(err(
                line,
                format!(
                    "run.secrets: {} comes from {}: not available here: set a Slipway secret named {} (slipway secrets set SERVICE {}) and write value-from: {}",
                    s.name, s.value_from, s.name, s.name, s.name
                ),
            ));
        }
        slipway_core::secret_name(&s.value_from)
            .map_err(|e| err(line, format!("run.secrets: value-from {}", e.message)))?;
        secrets.insert(s.name, s.value_from);
    }
    Ok(AppRunnerConfig {
        runtime: runtime.to_string(),
        runtime_version: run.runtime_version,
        revised: *revised,
        build_commands,
        build_env,
        pre_run,
        command: run.command.trim().to_string(),
        port,
        port_env,
        run_env,
        secrets,
    })
}

type Located = (Option<usize>, String);

fn env_list(
    list: Option<Vec<RawEnv>>,
    field: &str,
    line: &dyn Fn(&str) -> Option<usize>,
) -> Result<Vec<(String, String)>, Located> {
    let mut out = Vec::new();
    for e in list.unwrap_or_default() {
        check_var(&e.name).map_err(|m| (line("name"), format!("{field}: {m}")))?;
        if e.value.contains(['\n', '\r', '\0']) {
            return Err((
                line("value"),
                format!("{field}: the value of {} has a line break or NUL", e.name),
            ));
        }
        out.push((e.name, e.value));
    }
    Ok(out)
}

fn check_var(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 256;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a variable name: use letters, digits and '_', not starting with a digit"
        ))
    }
}

fn first_tag(v: &serde_yaml_ng::Value) -> Option<String> {
    use serde_yaml_ng::Value;
    match v {
        Value::Tagged(t) => Some(t.tag.to_string()),
        Value::Sequence(s) => s.iter().find_map(first_tag),
        Value::Mapping(m) => m
            .iter()
            .find_map(|(k, v)| first_tag(k).or_else(|| first_tag(v))),
        _ => None,
    }
}

fn line_of(text: &str, pred: impl Fn(&str) -> bool) -> Option<usize> {
    text.lines().position(pred).map(|i| i + 1)
}

/// serde's wording made the file's: struct names become what the key holds, and an
/// unknown key gets the closest valid one.
fn explain(msg: &str) -> String {
    // serde_yaml_ng appends " at line L column C"; the line is reported apart.
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    let (path, rest) = match msg.split_once(": ") {
        Some((p, r)) if !p.contains(' ') => (Some(p), r),
        _ => (None, msg),
    };
    let mut rest = rest.to_string();
    for (from, to) in [
        (
            "struct RawFile",
            "a mapping with version, runtime, build and run",
        ),
        ("struct RawBuild", "a mapping with commands and env"),
        (
            "struct RawCommands",
            "a mapping with pre-build, build and post-build lists",
        ),
        (
            "struct RawRun",
            "a mapping with runtime-version, command, network, env and secrets",
        ),
        ("struct RawNetwork", "a mapping with port and env"),
        ("struct RawEnv", "a mapping with name and value"),
        ("struct RawSecret", "a mapping with name and value-from"),
    ] {
        rest = rest.replace(from, to);
    }
    if let Some(unknown) = rest
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        let hint = did_you_mean(unknown, KEYS);
        let valid = rest
            .split_once("expected ")
            .map(|(_, v)| format!("; valid here: {}", v.replace('`', "")))
            .unwrap_or_default();
        rest = format!("unknown key {unknown:?}{hint}{valid}");
    } else if let Some(missing) = rest
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        rest = format!("{missing}: is required");
    }
    match path {
        Some(p) => format!("{p}: {rest}"),
        None => rest,
    }
}

/// ` (did you mean "x"?)` for the closest of `valid` within a small edit distance.
fn did_you_mean(given: &str, valid: &[&str]) -> String {
    let best = valid
        .iter()
        .map(|v| (distance(given, v), *v))
        .min()
        .filter(|(d, v)| *d <= (v.len() / 3).max(2));
    match best {
        Some((_, v)) => format!(" (did you mean {v:?}?)"),
        None => String::new(),
    }
}

/// Levenshtein distance over chars (inputs are short keys).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Splits a command into words when it needs no shell: None when it has shell syntax
/// (quotes are fine; pipes, `&&`, `;`, redirections, variables, globs are not).
pub fn exec_words(cmd: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        '$' | '`' => return None,
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if "|&;<>()$`*?[~\n\r".contains(c) => return None,
            '#' if !in_word => return None,
            // `FOO=1 app`: an assignment before the program.
            '=' if words.is_empty() => return None,
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    (!words.is_empty()).then_some(words)
}

/// A value quoted for a Dockerfile `ENV` or `ARG`: double quotes, with `\`, `"` and `$`
/// escaped (the builder substitutes variables there).
fn docker_quote(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        if matches!(c, '\\' | '"' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Text as a single-quoted `printf %b` argument: every byte outside printable ASCII, and
/// `'`, `\\` and `%`, as an octal escape.
fn printf_escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && !matches!(b, b'\'' | b'\\' | b'%') {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\0{b:03o}"));
        }
    }
    out
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

impl AppRunnerConfig {
    /// The Dockerfile that builds this file's app on `image` (the runtime's base image).
    pub fn dockerfile(&self, image: &str) -> String {
        let mut d = String::new();
        // Shell form, so that the stage's SHELL runs it (the build CA's wrapper, see
        // `context`); a command of several lines is decoded by printf and eval'd.
        let run = |d: &mut String, cmd: &str| {
            if cmd.contains(['\n', '\r']) || cmd.trim().is_empty() {
                d.push_str(&format!(
                    "RUN eval \"$(printf '%b' '{}')\"\n",
                    printf_escape(cmd)
                ));
            } else {
                d.push_str(&format!("RUN {cmd}\n"));
            }
        };
        d.push_str("# Generated by Slipway from apprunner.yaml.\n");
        if self.revised {
            d.push_str(&format!("FROM {image} AS build\n"));
        } else {
            d.push_str(&format!("FROM {image}\n"));
        }
        d.push_str("WORKDIR /app\nCOPY . /app\n");
        for (k, v) in &self.build_env {
            d.push_str(&format!("ARG {k}={}\n", docker_quote(v)));
        }
        for c in &self.build_commands {
            run(&mut d, c);
        }
        if self.revised {
            d.push_str(&format!(
                "\nFROM {image}\nWORKDIR /app\nCOPY --from=build /app /app\n"
            ));
            for c in &self.pre_run {
                run(&mut d, c);
            }
        }
        for (k, v) in &self.run_env {
            d.push_str(&format!("ENV {k}={}\n", docker_quote(v)));
        }
        if let Some(e) = &self.port_env {
            d.push_str(&format!("ENV {e}={}\n", self.port));
        }
        d.push_str(&format!("EXPOSE {}\n", self.port));
        let cmd = match exec_words(&self.command) {
            Some(words) => json(&words),
            None => json(&["/bin/sh", "-c", &self.command]),
        };
        d.push_str(&format!("CMD {cmd}\n"));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse("apprunner.yaml", text).unwrap_err()
    }

    const REAL: &str = "---\n# from a public repository\nversion: 1.0\nruntime: python3 \nbuild:\n  commands:\n    build:\n      - pip install -r requirements.txt\n  env:\n    - name : DEBUG\n      value: 0\nrun:\n  runtime-version: 3.8.16\n  command: gunicorn app:app -b 0.0.0.0:8000\n  network:\n    port: 8000\n    env: APP_PORT\n  env:\n    - name: WORKERS\n      value: 4";

    #[test]
    fn real_files_parse_as_written() {
        let c = parse("apprunner.yaml", REAL).unwrap();
        assert_eq!(c.runtime, "python3");
        assert_eq!(c.runtime_version.as_deref(), Some("3.8.16"));
        assert!(!c.revised);
        assert_eq!(c.build_commands, ["pip install -r requirements.txt"]);
        assert_eq!(c.build_env, [("DEBUG".to_string(), "0".to_string())]);
        assert_eq!(c.run_env, [("WORKERS".to_string(), "4".to_string())]);
        assert_eq!(c.port, 8000);
        assert_eq!(c.port_env.as_deref(), Some("APP_PORT"));
        // 1.10 stays 1.10 (and is refused as a version of the format, by its text).
        let e = err(&REAL.replace("version: 1.0", "version: 1.10"));
        assert!(e.message.contains("\"1.10\""), "{e}");
        assert_eq!(e.line, Some(3));
        // A runtime-version written as a bare number keeps its text.
        let c = parse(
            "apprunner.yaml",
            "version: 1.0\nruntime: python311\nrun:\n  runtime-version: 3.11\n  command: python app.py\n",
        )
        .unwrap();
        assert_eq!(c.runtime_version.as_deref(), Some("3.11"));
        assert!(c.revised);
        assert_eq!(c.port, 8080);
    }

    #[test]
    fn each_mistake_gets_its_line_and_field() {
        let e = err("version: 1.0\nruntime: python3\nbuild:\n  commands:\n    - pip install x\nrun:\n  command: python a.py\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.starts_with("build.commands:"), "{e}");
        assert!(e.message.contains("pre-build, build and post-build"), "{e}");

        for (rt, hint) in [
            ("docker", None),
            ("nodejs20", Some("nodejs22")),
            ("python3.11", Some("python311")),
        ] {
            let e = err(&format!(
                "version: 1.0\nruntime: {rt}\nrun:\n  command: x\n"
            ));
            assert_eq!(e.line, Some(2), "{e}");
            assert!(
                e.message
                    .contains(&format!("runtime: \"{rt}\" is not a runtime")),
                "{e}"
            );
            if let Some(h) = hint {
                assert!(e.message.contains(&format!("did you mean \"{h}\"")), "{e}");
            }
        }

        let e =
            err("version: 1.0\nruntime: python311\nrun:\n  runtime-version: 3.9\n  command: x\n");
        assert_eq!(e.line, Some(4));
        assert!(
            e.message
                .contains("3.9 is not offered by runtime python311 (it offers 3.11)"),
            "{e}"
        );

        let e = err("version: 1.0\nruntime: python3\nbiuld:\n  commands: {}\nrun:\n  command: x\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.message
                .contains("unknown key \"biuld\" (did you mean \"build\"?)"),
            "{e}"
        );
        let e = err("version: 1.0\nruntime: python3\nrun:\n  comand: x\n");
        assert!(
            e.message
                .starts_with("run: unknown key \"comand\" (did you mean \"command\"?)"),
            "{e}"
        );

        let e = err("version: 1.0\n<<<<<<< HEAD\nruntime: python3\n=======\nruntime: nodejs18\n>>>>>>> feature\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("git conflict marker"), "{e}");

        let e = err("AWSTemplateFormatVersion: 2010-09-09\nResources:\n  Svc:\n    Properties:\n      Name: !Sub '${AWS::StackName}-web'\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("!Sub"), "{e}");

        let e = err("version: 1.0\nruntime: python3\nrun:\n  command: x\n  secrets:\n    - name: DB\n      value-from: arn:aws:secretsmanager:us-east-1:1:secret:db\n");
        assert_eq!(e.line, Some(7));
        assert!(
            e.message
                .contains("not available here: set a Slipway secret named DB"),
            "{e}"
        );

        let e = err("version: 1.0\nruntime: python3\nrun:\n  pre-run:\n    - apt-get update\n  command: x\n");
        assert!(
            e.message
                .contains("run.pre-run: only the revised-build runtimes"),
            "{e}"
        );
        let e =
            err("version: 1.0\nruntime: python3\nrun:\n  network:\n    port: http\n  command: x\n");
        assert!(e.message.contains("run.network.port"), "{e}");
        let e = err("version: 1.0\nruntime: python3\n");
        assert!(e.message.contains("run: is required"), "{e}");
        assert!(e.to_string().starts_with("apprunner.yaml"), "{e}");
    }

    #[test]
    fn the_dockerfile_builds_as_app_runner_does() {
        let c = parse("apprunner.yaml", REAL).unwrap();
        let d = c.dockerfile("python:3");
        assert_eq!(d.matches("FROM ").count(), 1);
        assert!(d.contains("ARG DEBUG=\"0\"\n"), "{d}");
        assert!(d.contains("RUN pip install -r requirements.txt\n"), "{d}");
        assert!(d.contains("ENV APP_PORT=8000\n"), "{d}");
        assert!(
            d.contains("CMD [\"gunicorn\",\"app:app\",\"-b\",\"0.0.0.0:8000\"]\n"),
            "{d}"
        );
        let c = parse(
            "apprunner.yaml",
            "version: 1.0\nruntime: python311\nbuild:\n  commands:\n    build: [pip install flask]\nrun:\n  pre-run: [\"echo ready > /ready\"]\n  command: sh -c 'exec python app.py'\n  env:\n    - name: GREETING\n      value: \"a \\\"$HOME\\\" b\"\n",
        )
        .unwrap();
        let d = c.dockerfile("python:3.11-slim");
        let stages: Vec<&str> = d.split("\n\nFROM ").collect();
        assert_eq!(stages.len(), 2, "{d}");
        assert!(stages[0].contains("pip install flask"));
        assert!(
            stages[1].starts_with("python:3.11-slim\nWORKDIR /app\nCOPY --from=build /app /app\n")
        );
        assert!(stages[1].contains("echo ready > /ready"));
        assert!(d.contains("ENV GREETING=\"a \\\"\\$HOME\\\" b\"\n"), "{d}");
        assert!(
            d.contains("CMD [\"sh\",\"-c\",\"exec python app.py\"]"),
            "{d}"
        );
    }

    #[test]
    fn commands_of_several_lines_reach_the_shell_unchanged() {
        for text in [
            "if true; then\n  echo 'a % b'\nfi",
            "echo \"\\\\n\" é\techo $HOME\n",
        ] {
            let script = format!("printf '%b' '{}'", printf_escape(text));
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), text);
        }
        let c = parse(
            "apprunner.yaml",
            "version: 1.0\nruntime: python3\nbuild:\n  commands:\n    build:\n      - |\n        echo one\n        echo two\nrun:\n  command: x\n",
        )
        .unwrap();
        let d = c.dockerfile("img");
        assert!(
            d.contains("RUN eval \"$(printf '%b' 'echo one\\0012echo two\\0012')\"\n"),
            "{d}"
        );
    }

    #[test]
    fn commands_are_execd_unless_they_need_a_shell() {
        assert_eq!(
            exec_words("python app.py"),
            Some(vec!["python".into(), "app.py".into()])
        );
        assert_eq!(
            exec_words("gunicorn -w 2 'app:create_app()'"),
            Some(vec![
                "gunicorn".into(),
                "-w".into(),
                "2".into(),
                "app:create_app()".into()
            ])
        );
        assert_eq!(exec_words("FOO=1 python a.py"), None);
        assert_eq!(exec_words("python a.py && echo done"), None);
        assert_eq!(exec_words("python $APP"), None);
        assert_eq!(exec_words("python \"unterminated"), None);
        assert_eq!(
            exec_words("node --x=1 a.js"),
            Some(vec!["node".into(), "--x=1".into(), "a.js".into()])
        );
    }

    proptest::proptest! {
        /// Any text at all: a config or an error naming the file, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,300}") {
            match parse("apprunner.yaml", &text) {
                Ok(c) => { let _ = c.dockerfile("img"); }
                Err(e) => proptest::prop_assert!(e.to_string().starts_with("apprunner.yaml")),
            }
        }

        /// YAML-shaped text built from the format's own keys.
        #[test]
        fn keyish_text_parses_or_is_refused(
            lines in proptest::collection::vec(
                (0usize..6, proptest::sample::select(KEYS.to_vec()), "[ -~]{0,12}"), 0..12)
        ) {
            let text: String = lines
                .iter()
                .map(|(indent, k, v)| format!("{}{k}: {v}\n", "  ".repeat(*indent)))
                .collect();
            if let Err(e) = parse("apprunner.yml", &text) {
                proptest::prop_assert!(e.to_string().starts_with("apprunner.yml"));
            }
        }

        /// Commands with any characters split into words or fall back to a shell.
        #[test]
        fn any_command_is_execd_or_shelled(cmd in "\\PC{0,80}") {
            let _ = exec_words(&cmd);
        }
    }
}
