//! The byte buffer each side of a fast-path exchange reads into (`crate::fast` for
//! clients, `crate::pool` for its instance connections).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// First size of a connection's buffer; it grows to what the heads and bodies need.
const BUF_START: usize = 8 * 1024;
/// Read at least this much room at a time.
const READ_ROOM: usize = 4 * 1024;
/// A buffer grown past this by a large head or body goes back to [`BUF_START`] once
/// empty, so an idle connection holds little.
pub(crate) const SHRINK_ABOVE: usize = 64 * 1024;

/// A byte buffer holding `data[start..end]`, filled by reads into its spare room. All of
/// it is initialised (reads go through `ReadBuf::new`, no unsafe code), so it grows by
/// zero-filling, which happens only when a head or body outgrows it.
pub(crate) struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn new() -> Buf {
        Buf {
            data: vec![0; BUF_START],
            start: 0,
            end: 0,
        }
    }

    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.shrink();
        }
    }

    /// Back to the starting size if empty and grown large.
    pub fn shrink(&mut self) {
        if self.is_empty() && self.data.len() > SHRINK_ABOVE {
            self.data = vec![0; BUF_START];
        }
    }

    pub fn take_vec(&mut self) -> Vec<u8> {
        let v = self.filled().to_vec();
        self.consume(v.len());
        v
    }

    /// Room for at least `min` more bytes: compact first, grow only if still short.
    pub fn room(&mut self, min: usize) -> &mut [u8] {
        if self.data.len() - self.end < min {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < min {
                let size = (self.end + min).max(self.data.len() * 2);
                self.data.resize(size, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Read once from `io` into the spare room. `Ok(0)` is end of stream.
    pub fn poll_fill(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(self.room(READ_ROOM));
        match Pin::new(io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.end += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    pub async fn fill(&mut self, io: &mut TcpStream) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(io, cx)).await
    }
}
