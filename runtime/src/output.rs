//! What the engine and the apps print, turned into text for people. Everything here reads
//! untrusted bytes (an app's output, an engine's error, a build's log): it never panics,
//! cuts only at character boundaries and bounds what it keeps.

/// Bytes of a container's output kept for an explanation.
pub const TAIL_MAX: usize = 64 * 1024;
/// Characters of an engine's error text kept in an exit reason.
pub const ERROR_MAX_CHARS: usize = 300;

/// The image a Dockerfile line `FROM [--flag=..] IMAGE [AS name]` names, as the classic
/// builder echoes it (`Step 1/3 : FROM python:3.11-alpine`).
pub fn from_image(line: &str) -> Option<&str> {
    let rest = line.trim_start();
    let rest = match rest.find(" : ") {
        Some(i) if rest.starts_with("Step ") => &rest[i + 3..],
        _ => rest,
    };
    let mut words = rest.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("FROM") {
        return None;
    }
    words.find(|w| !w.starts_with("--"))
}

/// One line a user can act on for a failed build, from the engine's error `message` and
/// the base image of the step that was running (`from`, when that step was a `FROM`).
/// A base image that is neither on the engine nor pullable says so instead of quoting
/// the registry client's error.
pub fn build_error(message: &str, from: Option<&str>) -> String {
    let m = message.to_ascii_lowercase();
    let registry = [
        "registry-1.docker.io",
        "/v2/",
        "dial tcp",
        "no such host",
        "pull access denied",
        "manifest unknown",
        "repository does not exist",
        "i/o timeout",
        "server misbehaving",
        "tls handshake",
    ]
    .iter()
    .any(|p| m.contains(p));
    match from {
        Some(image) if registry => format!(
            "base image {image} is not on this engine and no registry answered: pull it, or tag a local image with that name (docker tag LOCAL {image})"
        ),
        _ => one_line(message, ERROR_MAX_CHARS),
    }
}

/// `text` on one line (newlines as spaces) and at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.trim().chars().count() > max {
        out.push('…');
    }
    out
}

/// The end of a container's output as text: at most [`TAIL_MAX`] bytes (the newest), any
/// bytes at all decoded lossily, starting at a character boundary.
pub fn tail_text(raw: &[u8]) -> String {
    let mut from = raw.len().saturating_sub(TAIL_MAX);
    // Skip UTF-8 continuation bytes so the cut is not inside a character.
    while from < raw.len() && from > 0 && raw[from] & 0xC0 == 0x80 {
        from += 1;
    }
    String::from_utf8_lossy(&raw[from..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn from_lines() {
        assert_eq!(
            from_image("Step 1/3 : FROM python:3.11-alpine"),
            Some("python:3.11-alpine")
        );
        assert_eq!(
            from_image("Step 2/9 : FROM --platform=linux/amd64 debian:bookworm AS base"),
            Some("debian:bookworm")
        );
        assert_eq!(from_image("Step 3/3 : RUN pip install x"), None);
        assert_eq!(from_image(""), None);
    }

    #[test]
    fn missing_base_image_is_one_line() {
        let engine = "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io on 10.0.0.1:53: server misbehaving";
        let msg = build_error(engine, Some("python:3.11-alpine"));
        assert_eq!(msg, "base image python:3.11-alpine is not on this engine and no registry answered: pull it, or tag a local image with that name (docker tag LOCAL python:3.11-alpine)");
        // Another failure keeps the engine's words, on one line.
        let msg = build_error(
            "The command '/bin/sh -c false' returned\na non-zero code: 1",
            None,
        );
        assert_eq!(
            msg,
            "The command '/bin/sh -c false' returned a non-zero code: 1"
        );
    }

    #[test]
    fn tail_cuts_at_a_character() {
        let mut raw = vec![b'a'; TAIL_MAX - 5];
        raw.splice(0..0, "é".repeat(10).into_bytes());
        let t = tail_text(&raw);
        assert!(!t.contains('\u{FFFD}'), "cut inside a character");
        assert!(t.len() <= TAIL_MAX);
    }

    proptest! {
        #[test]
        fn any_output_is_handled(raw in proptest::collection::vec(any::<u8>(), 0..3000), text in any::<String>(), max in 0usize..400) {
            let t = tail_text(&raw);
            prop_assert!(t.len() <= raw.len() * 3 + 3);
            let l = one_line(&text, max);
            prop_assert!(l.chars().count() <= max + 1);
            prop_assert!(!l.contains('\n'));
            let _ = from_image(&text);
            let b = build_error(&text, from_image(&text));
            prop_assert!(!b.contains('\n'));
        }

        #[test]
        fn exit_reasons_are_bounded(error in any::<String>(), code in any::<Option<i64>>(), oom in any::<bool>()) {
            let info = crate::ExitInfo { running: false, exit_code: code, oom_killed: oom, error: Some(error) };
            let shown = info.to_string();
            prop_assert!(shown.chars().count() <= ERROR_MAX_CHARS + 80);
        }
    }
}
