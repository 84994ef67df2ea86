//! A reader of server-sent events (the `text/event-stream` of the HTML standard), for the
//! CLI's followers: `slipway logs -f` reads the API's streams with it.

/// The longest line kept; a longer one is an error, not unbounded memory.
pub const MAX_LINE: usize = 64 << 20;

/// One event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Its `event:` type; `message` when none was given.
    pub event: String,
    /// The last `id:` seen, as `Last-Event-ID` would send it on a reconnect.
    pub id: Option<String>,
    /// Its `data:` lines, joined by `\n`.
    pub data: String,
}

/// A stream's bytes in, events out, however the bytes are split into chunks.
#[derive(Default)]
pub struct Parser {
    line: Vec<u8>,
    /// A `\r` ended the last line: a `\n` right after it ends nothing more.
    after_cr: bool,
    event: String,
    data: Option<String>,
    id: Option<String>,
}

/// A line longer than [`MAX_LINE`].
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong;

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the event stream sent a line over {MAX_LINE} bytes")
    }
}

impl std::error::Error for TooLong {}

impl Parser {
    /// Feeds `chunk`; every event it completes goes to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), TooLong> {
        for &b in chunk {
            let after_cr = std::mem::take(&mut self.after_cr);
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line(&String::from_utf8_lossy(&line), out);
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err(TooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            // Dispatch, if there was data.
            let event = std::mem::take(&mut self.event);
            if let Some(data) = self.data.take() {
                out.push(Event {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    id: self.id.clone(),
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return; // a comment (axum's keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields: ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn what_axum_sends() {
        let got = parse(&[
            b": keep-alive\n\nid: 7\ndata: {\"line\":\"a\"}\n\nevent: end\ndata: {\"state\":\"failed\"}\n\n",
        ]);
        assert_eq!(
            got,
            vec![
                Event {
                    event: "message".into(),
                    id: Some("7".into()),
                    data: "{\"line\":\"a\"}".into()
                },
                Event {
                    event: "end".into(),
                    id: Some("7".into()),
                    data: "{\"state\":\"failed\"}".into()
                },
            ]
        );
    }

    #[test]
    fn multi_line_data_crlf_and_an_unfinished_event() {
        let got = parse(&[b"data: one\r\ndata:two\r\r\ndata: three\n\ndata: never ended\n"]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].data, "one\ntwo");
        assert_eq!(got[1].data, "three");
    }

    #[test]
    fn a_line_over_the_bound_is_an_error() {
        let mut p = Parser::default();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_LINE];
        assert_eq!(p.push(&big, &mut out), Ok(()));
        assert_eq!(p.push(b"x", &mut out), Err(TooLong));
    }

    fn encode(events: &[(Option<String>, String, String)]) -> Vec<u8> {
        let mut s = String::new();
        for (event, id, data) in events {
            if let Some(e) = event {
                s.push_str(&format!("event: {e}\n"));
            }
            s.push_str(&format!("id: {id}\n"));
            for l in data.split('\n') {
                s.push_str(&format!("data: {l}\n"));
            }
            s.push('\n');
            s.push_str(": keep-alive\n\n");
        }
        s.into_bytes()
    }

    proptest! {
        /// Whatever the chunks, the events that were sent come out, in order.
        #[test]
        fn any_split_gives_the_events_sent(
            events in proptest::collection::vec(
                (proptest::option::of("[a-z]{1,8}"), "[0-9]{1,6}", "[^\r\n]{0,20}(\n[^\r\n]{0,20}){0,3}"),
                0..8,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let bytes = encode(&events);
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for a in at {
                chunks.push(&bytes[from..a]);
                from = a;
            }
            chunks.push(&bytes[from..]);
            let got = parse(&chunks);
            let want: Vec<Event> = events
                .iter()
                .map(|(e, id, data)| Event {
                    event: e.clone().unwrap_or_else(|| "message".into()),
                    id: Some(id.clone()),
                    data: data.clone(),
                })
                .collect();
            prop_assert_eq!(got, want);
        }

        /// Arbitrary bytes: no panic, and every event's data came from a `data` line.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut p = Parser::default();
            let mut out = Vec::new();
            p.push(&bytes, &mut out).unwrap();
            prop_assert!(out.len() <= bytes.len());
        }
    }
}
