//! The chunked transfer coding, checked chunk by chunk as a body streams through.

use super::*;

/// Where a chunked body's parser is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkState {
    #[default]
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Finds where a chunked body ends (RFC 9112 §7.1) without changing it, so it can be
/// passed through as it is: chunk sizes in hex, optional extensions, CRLF after each
/// size line and each chunk, a zero chunk, optional trailer fields, a final CRLF. Sizes,
/// extensions and trailers are bounded.
#[derive(Debug, Default)]
pub(super) struct Chunks {
    state: ChunkState,
    /// Bytes of chunk data left, or the size being read.
    size: u64,
    digits: u8,
    /// Extension or trailer bytes seen, for the bounds.
    extra: usize,
}

impl Chunks {
    pub(super) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Move to `next` if the byte is the one the framing requires here.
    fn expect(&mut self, b: u8, want: u8, next: ChunkState) -> Result<(), ()> {
        if b != want {
            return Err(());
        }
        self.state = next;
        Ok(())
    }

    /// Consume as much of `input` as belongs to the body; how much that was, or `Err` if
    /// the framing is broken.
    pub(super) fn feed(&mut self, input: &[u8]) -> Result<usize, ()> {
        let mut i = 0;
        // Bounded by the input: every turn consumes at least one byte or returns.
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits >= 15 {
                            return Err(());
                        }
                        let d = (b as char).to_digit(16).ok_or(())?;
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    b';' if self.digits > 0 => {
                        self.state = ChunkState::Ext;
                        self.extra = 0;
                    }
                    b' ' | b'\t' if self.digits > 0 => self.state = ChunkState::SizeWs,
                    b'\r' if self.digits > 0 => self.state = ChunkState::SizeLf,
                    _ => return Err(()),
                },
                // Whitespace after the size may only lead to an extension or the line end.
                ChunkState::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => {
                        self.state = ChunkState::Ext;
                        self.extra = 0;
                    }
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(()),
                },
                ChunkState::Ext => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    // No control bytes but tab in an extension.
                    0..=8 | 10..=31 | 127 => return Err(()),
                    _ => {
                        self.extra += 1;
                        if self.extra > MAX_CHUNK_EXT {
                            return Err(());
                        }
                    }
                },
                ChunkState::SizeLf => {
                    self.expect(b, b'\n', ChunkState::Data)?;
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = ChunkState::TrailerLineStart;
                        self.extra = 0;
                    }
                }
                ChunkState::Data => {
                    let avail = (input.len() - i) as u64;
                    let n = self.size.min(avail);
                    self.size -= n;
                    i += n as usize;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => self.expect(b, b'\r', ChunkState::DataLf)?,
                ChunkState::DataLf => self.expect(b, b'\n', ChunkState::Size)?,
                ChunkState::TrailerLineStart => match b {
                    b'\r' => self.state = ChunkState::EndLf,
                    b'\n' => return Err(()),
                    _ => {
                        self.state = ChunkState::TrailerLine;
                        self.extra += 1;
                    }
                },
                ChunkState::TrailerLine => match b {
                    b'\r' => self.state = ChunkState::TrailerLf,
                    0..=8 | 10..=31 | 127 => return Err(()),
                    _ => {
                        self.extra += 1;
                        if self.extra > MAX_TRAILER {
                            return Err(());
                        }
                    }
                },
                ChunkState::TrailerLf => self.expect(b, b'\n', ChunkState::TrailerLineStart)?,
                ChunkState::EndLf => {
                    self.expect(b, b'\n', ChunkState::Done)?;
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Ok(i)
    }
}
