//! `.dockerignore` matching, as the Docker CLI applies it before it sends a build context
//! (the engine itself does not filter, so a platform that builds from a tree must).
//!
//! Rules: one pattern a line, `#` comments, blank lines skipped; leading and trailing `/`
//! dropped; `*` and `?` match within one path component, `**` matches any number of
//! components; a pattern that matches a directory excludes everything below it; the last
//! matching pattern wins, and `!pattern` re-includes.

/// A parsed `.dockerignore`.
#[derive(Debug, Default, Clone)]
pub struct DockerIgnore {
    rules: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (negate, pat) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let parts: Vec<String> = pat
                    .split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(str::to_string)
                    .collect();
                (!parts.is_empty()).then_some((negate, parts))
            })
            .collect();
        DockerIgnore { rules }
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut excluded = false;
        for (negate, pat) in &self.rules {
            // A pattern matches the path or any of its parent directories.
            let hit = (1..=comps.len()).any(|n| match_components(pat, &comps[..n]));
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

fn match_components(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_components(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => {
                glob(first.as_bytes(), p.as_bytes()) && match_components(rest, prest)
            }
            None => false,
        },
    }
}

/// `*` and `?` within one component; `[...]` classes and `\` escapes as in filepath.Match.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(b'['), Some(c)) => match p.iter().position(|b| *b == b']') {
            Some(end) if end > 1 => {
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some(b'^') | Some(b'!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= *c && *c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == *c;
                        i += 1;
                    }
                }
                hit != neg && glob(&p[end + 1..], &s[1..])
            }
            _ => *c == b'[' && glob(&p[1..], &s[1..]),
        },
        (Some(b'\\'), Some(c)) if p.len() > 1 => p[1] == *c && glob(&p[2..], &s[1..]),
        (Some(a), Some(b)) => a == b && glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let d = DockerIgnore::parse(
            "# comment\n\n*.log\nnode_modules\n/secret/\n**/*.tmp\ndocs\n!docs/keep.md\nREADME.md\n",
        );
        assert!(d.excludes("a.log"));
        assert!(
            !d.excludes("dir/a.log"),
            "*.log is anchored at the root, as in Docker"
        );
        assert!(d.excludes("node_modules/x/y.js"));
        assert!(d.excludes("secret/key"));
        assert!(d.excludes("deep/er/x.tmp"));
        assert!(d.excludes("x.tmp"));
        assert!(d.excludes("docs/other.md"));
        assert!(!d.excludes("docs/keep.md"));
        assert!(d.excludes("README.md"));
        assert!(!d.excludes("Dockerfile"));
        assert!(!d.excludes("src/main.rs"));
    }

    #[test]
    fn classes_and_wildcards() {
        let d = DockerIgnore::parse("file[0-9].txt\nfi?e.md\n");
        assert!(d.excludes("file3.txt"));
        assert!(!d.excludes("filex.txt"));
        assert!(d.excludes("fine.md"));
        assert!(!DockerIgnore::parse("").excludes("anything"));
    }
}
