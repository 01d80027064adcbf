//! The byte-level encoding of a snapshot: little-endian fixed-width
//! numbers, LEB128 lengths and small integers. A [`Decoder`] never
//! panics on bad input: every read says what it expected when the bytes
//! run out or hold something impossible.

use super::SnapshotError;

/// Appends encoded values to a byte vector.
///
/// Times and channel ids are written as the difference from the last one
/// written (zigzag, LEB128): a token's records and entries mostly hold
/// the same few call times, and a checked list ascends, so most take one
/// or two bytes instead of eight; the file is about half as large, and
/// writing it is bound by the disk.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    pub(crate) bytes: Vec<u8>,
    last_time: i64,
    last_channel: i64,
}

impl Encoder {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Encoder {
            bytes: Vec::with_capacity(n),
            ..Encoder::default()
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    #[inline]
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    pub(crate) fn i64(&mut self, v: i64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    pub(crate) fn f64(&mut self, v: f64) {
        self.bytes.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// An unsigned integer in LEB128: one byte below 128, which is what
    /// most lengths and chat-index gaps are.
    #[inline]
    pub(crate) fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
    }

    pub(crate) fn len(&mut self, n: usize) {
        self.var(n as u64);
    }

    /// A signed integer as zigzag LEB128: small either side of zero.
    #[inline]
    fn signed(&mut self, v: i64) {
        self.var(((v << 1) ^ (v >> 63)) as u64);
    }

    /// A time, as the difference from the last time written.
    #[inline]
    pub(crate) fn time(&mut self, t: i64) {
        self.signed(t.wrapping_sub(self.last_time));
        self.last_time = t;
    }

    /// A channel id, as the difference from the last one written.
    #[inline]
    pub(crate) fn channel(&mut self, c: i64) {
        self.signed(c.wrapping_sub(self.last_channel));
        self.last_channel = c;
    }

    pub(crate) fn raw(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }
}

/// Reads encoded values back, in the order they were written.
#[derive(Debug)]
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// What is being read, for the error message.
    what: &'static str,
    last_time: i64,
    last_channel: i64,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Decoder {
            bytes,
            pos: 0,
            what,
            last_time: 0,
            last_channel: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// An error at the current position: the section, the offset and why.
    pub(crate) fn bad(&self, why: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt {
            section: self.what,
            offset: self.pos,
            why: why.into(),
        }
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.bad(format!(
                "needs {n} more bytes, {} left",
                self.bytes.len() - self.pos
            )));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let b = self.take(N)?;
        Ok(b.try_into().expect("took N bytes"))
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn f64(&mut self) -> Result<f64, SnapshotError> {
        Ok(f64::from_bits(u64::from_le_bytes(self.array()?)))
    }

    #[inline]
    pub(crate) fn var(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.bad("a variable-length integer runs past 64 bits"))
    }

    #[inline]
    fn signed(&mut self) -> Result<i64, SnapshotError> {
        let v = self.var()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A time [`Encoder::time`] wrote.
    #[inline]
    pub(crate) fn time(&mut self) -> Result<i64, SnapshotError> {
        self.last_time = self.last_time.wrapping_add(self.signed()?);
        Ok(self.last_time)
    }

    /// A channel id [`Encoder::channel`] wrote.
    #[inline]
    pub(crate) fn channel(&mut self) -> Result<i64, SnapshotError> {
        self.last_channel = self.last_channel.wrapping_add(self.signed()?);
        Ok(self.last_channel)
    }

    /// A length of items at least `min_item` bytes each: refused if the
    /// bytes left cannot hold that many, so a forged length never makes a
    /// huge allocation.
    pub(crate) fn len(&mut self, min_item: usize) -> Result<usize, SnapshotError> {
        let n = self.var()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_item.max(1) as u64) > left {
            return Err(self.bad(format!("a count of {n} does not fit in {left} bytes")));
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::{Decoder, Encoder};

    #[test]
    fn values_read_back_as_written() {
        let mut e = Encoder::default();
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            e.var(v);
        }
        e.i64(-5);
        e.f64(f64::NAN);
        e.u32(7);
        for t in [i64::MIN, 0, 5, i64::MAX, -3, 1_795_600_800_000_000_000] {
            e.time(t);
            e.channel(t.wrapping_neg());
        }
        let mut d = Decoder::new(&e.bytes, "test");
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(d.var().unwrap(), v);
        }
        assert_eq!(d.i64().unwrap(), -5);
        assert!(d.f64().unwrap().is_nan());
        assert_eq!(d.u32().unwrap(), 7);
        for t in [i64::MIN, 0, 5, i64::MAX, -3, 1_795_600_800_000_000_000] {
            assert_eq!(d.time().unwrap(), t);
            assert_eq!(d.channel().unwrap(), t.wrapping_neg());
        }
        assert!(d.is_empty());
        let err = d.u8().unwrap_err().to_string();
        assert!(err.contains("needs 1 more bytes"), "{err}");
    }

    #[test]
    fn a_forged_count_is_refused_before_anything_is_allocated() {
        let mut e = Encoder::default();
        e.var(1 << 40);
        e.raw(&[0; 16]);
        let mut d = Decoder::new(&e.bytes, "test");
        let err = d.len(8).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
