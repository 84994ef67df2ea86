//! What the engine and the apps print, turned into text for people. Everything here reads
//! untrusted bytes (an app's output, an engine's error, a build's log): it never panics,
//! cuts only at character boundaries and bounds what it keeps.

/// Bytes of one application log line kept (longer lines are cut, marked `…`).
pub const LINE_MAX: usize = 16 * 1024;

/// Splits an app's output into lines as it arrives: bytes are appended to `carry`, each
/// whole line is given to `line` (without `\n` or `\r\n`, cut at [`LINE_MAX`] on a
/// character boundary, invalid UTF-8 replaced), and what follows the last newline stays
/// in `carry` for the next chunk. A line longer than the limit with no newline yet is
/// given out cut rather than kept growing.
pub fn split_lines(carry: &mut Vec<u8>, chunk: &[u8], mut line: impl FnMut(String)) {
    carry.extend_from_slice(chunk);
    let mut start = 0;
    while let Some(i) = carry[start..].iter().position(|b| *b == b'\n') {
        let end = start + i;
        let raw = &carry[start..end];
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        line(bounded_line(raw));
        start = end + 1;
    }
    carry.drain(..start);
    if carry.len() > LINE_MAX {
        line(bounded_line(carry));
        carry.clear();
    }
}

/// A line's bytes as text of at most [`LINE_MAX`] bytes.
pub fn bounded_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.len() <= LINE_MAX {
        return text.into_owned();
    }
    let mut cut = LINE_MAX - '…'.len_utf8();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// The time at the start of a Docker log line written with `timestamps`
/// (`2026-12-02T19:30:00.123456789Z rest`), as ms since the epoch, and the rest.
pub fn docker_timestamp(line: &str) -> Option<(i64, &str)> {
    let (ts, rest) = line.split_once(' ').unwrap_or((line, ""));
    let b = ts.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { ts.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut ms = 0;
    let mut tail = &ts[19..];
    if let Some(f) = tail.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        let frac = &f[..digits];
        ms = frac.get(..3).map_or_else(
            || format!("{frac:0<3}").parse().unwrap_or(0),
            |m| m.parse().unwrap_or(0),
        );
        tail = &f[digits..];
    }
    if tail != "Z" {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((
        ((days * 24 + h) * 60 + mi) * 60 * 1000 + sec * 1000 + ms,
        rest,
    ))
}

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

    #[test]
    fn lines_split_across_chunks() {
        let mut carry = Vec::new();
        let mut got = Vec::new();
        split_lines(&mut carry, b"one\r\ntw", |l| got.push(l));
        split_lines(&mut carry, b"o\n\nthr", |l| got.push(l));
        assert_eq!(got, ["one", "two", ""]);
        assert_eq!(carry, b"thr");
        let mut long = Vec::new();
        split_lines(&mut long, &vec![b'x'; LINE_MAX + 10], |l| got.push(l));
        assert!(got.last().unwrap().len() <= LINE_MAX && long.is_empty());
    }

    #[test]
    fn docker_timestamps() {
        assert_eq!(
            docker_timestamp("2026-12-02T16:00:00.123456789Z hello"),
            Some((1_796_227_200_123, "hello"))
        );
        assert_eq!(docker_timestamp("1970-01-01T00:00:00Z x"), Some((0, "x")));
        assert_eq!(
            docker_timestamp("2026-12-02T16:00:00.5Z"),
            Some((1_796_227_200_500, ""))
        );
        assert_eq!(docker_timestamp("not a time"), None);
        assert_eq!(docker_timestamp("2026-13-02T16:00:00Z x"), None);
    }

    proptest::proptest! {
        /// Any bytes in any chunking: never a panic, every line bounded, and the text of
        /// the lines (rejoined) is what was written when it was valid UTF-8 without
        /// carriage returns or overlong lines.
        #[test]
        fn any_output_splits(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8)) {
            let mut carry = Vec::new();
            let mut lines = Vec::new();
            for c in &chunks {
                split_lines(&mut carry, c, |l| lines.push(l));
            }
            for l in &lines {
                proptest::prop_assert!(l.len() <= LINE_MAX);
                proptest::prop_assert!(!l.contains('\n'));
            }
            let all: Vec<u8> = chunks.concat();
            if let Ok(text) = std::str::from_utf8(&all) {
                if !text.contains('\r') {
                    let whole: Vec<&str> = text.split('\n').collect();
                    let n = whole.len() - 1;
                    proptest::prop_assert_eq!(&lines[..], &whole[..n]);
                    proptest::prop_assert_eq!(std::str::from_utf8(&carry).unwrap(), whole[n]);
                }
            }
        }

        #[test]
        fn any_timestamp_text(s in "\\PC{0,40}") {
            let _ = docker_timestamp(&s);
        }
    }
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
