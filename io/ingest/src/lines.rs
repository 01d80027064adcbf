//! A line reader with a bound: a line longer than the bound is reported by
//! its length and skipped, never held in memory whole.

use std::io::{self, BufRead};

/// One item of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line within the bound, without its `\n`.
    Text(&'a [u8]),
    /// A line over the bound: its length in bytes, without its `\n`.
    Overlong(usize),
}

/// Reads `\n`-terminated lines of at most `max` bytes from a `BufRead`.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            buf: Vec::with_capacity(1024),
        }
    }

    /// The next line, or `None` at the end of input. A last line without a
    /// newline still counts.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut len = 0usize;
        let mut seen_any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            seen_any = true;
            let (part, done, found) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            if len + part.len() <= self.max {
                self.buf.extend_from_slice(part);
            } else {
                // Over the bound: stop keeping bytes, keep counting them.
                self.buf.clear();
            }
            len += part.len();
            self.inner.consume(done);
            if found {
                break;
            }
        }
        if !seen_any {
            return Ok(None);
        }
        Ok(Some(if len > self.max {
            Line::Overlong(len)
        } else {
            Line::Text(&self.buf)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize, cap: usize) -> Vec<Result<String, usize>> {
        let mut r = LineReader::new(io::BufReader::with_capacity(cap, input), max);
        let mut v = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            v.push(match l {
                Line::Text(t) => Ok(String::from_utf8(t.to_vec()).unwrap()),
                Line::Overlong(n) => Err(n),
            });
        }
        v
    }

    #[test]
    fn splits_lines_across_small_buffers() {
        for cap in [1, 2, 3, 7, 64] {
            assert_eq!(
                lines(b"ab\n\ncde\nf", 10, cap),
                [
                    Ok("ab".into()),
                    Ok(String::new()),
                    Ok("cde".into()),
                    Ok("f".into())
                ]
            );
        }
    }

    #[test]
    fn overlong_line_is_measured_and_skipped() {
        for cap in [1, 4, 64] {
            assert_eq!(
                lines(b"12345\n123456789\n12\n", 5, cap),
                [Ok("12345".into()), Err(9), Ok("12".into())]
            );
        }
    }

    #[test]
    fn empty_input_has_no_lines() {
        assert!(lines(b"", 5, 8).is_empty());
        assert_eq!(lines(b"\n", 5, 8), [Ok(String::new())]);
    }
}
