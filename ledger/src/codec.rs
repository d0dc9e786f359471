//! The little binary codec behind every stored record: fixed-width little-endian integers,
//! fixed-size byte arrays, and `u32`-length-prefixed byte strings. Deterministic by construction
//! (one way to write each value), and decoding never panics: it returns [`CodecError`].

use thiserror::Error;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("record truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("unsupported {what} format version {found}")]
    Version { what: &'static str, found: u8 },
    #[error("unknown {what} tag {tag}")]
    Tag { what: &'static str, tag: u8 },
    #[error("{what} is not valid UTF-8")]
    Utf8 { what: &'static str },
    #[error("{what} is not valid JSON: {message}")]
    Json { what: &'static str, message: String },
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("{0}")]
    Invalid(String),
}

/// Appends encoded values to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Fixed-size bytes, written without a length.
    pub fn array(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Length-prefixed bytes. Lengths above `u32::MAX` cannot occur: records are bounded far
    /// below that by the request size limits, so the length saturates rather than wraps.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads encoded values from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(CodecError::Truncated {
                offset: self.pos,
                needed: n.saturating_sub(self.buf.len() - self.pos),
            }),
        }
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError::Utf8 { what })
    }
    pub fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        self.str(what).map(str::to_owned)
    }
    pub fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::Tag { what: "bool", tag }),
        }
    }
    /// Checks the version byte of a record.
    pub fn version(&mut self, what: &'static str, expected: u8) -> Result<(), CodecError> {
        let found = self.u8()?;
        if found == expected {
            Ok(())
        } else {
            Err(CodecError::Version { what, found })
        }
    }
    /// Fails when bytes are left over.
    pub fn finish(self) -> Result<(), CodecError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

/// Parses JSON text into a value.
pub fn parse_json(what: &'static str, text: &str) -> Result<serde_json::Value, CodecError> {
    serde_json::from_str(text).map_err(|e| CodecError::Json {
        what,
        message: e.to_string(),
    })
}

/// Compact JSON with keys sorted at every level (the canonical text).
pub fn sorted_json(v: &serde_json::Value) -> String {
    let mut s = String::new();
    nexus_schemas::canonical::write_sorted(v, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::default();
        w.u8(1)
            .u32(7)
            .u64(u64::MAX)
            .array(&[9; 4])
            .str("héllo")
            .bool(true);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.array::<4>().unwrap(), [9; 4]);
        assert_eq!(r.str("s").unwrap(), "héllo");
        assert!(r.bool().unwrap());
        r.finish().unwrap();
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let ok = (|| -> Result<(), CodecError> {
                r.u8()?;
                r.u32()?;
                r.u64()?;
                r.array::<4>()?;
                r.str("s")?;
                r.bool()?;
                Ok(())
            })();
            assert!(ok.is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_a_panic() {
        let mut w = Writer::default();
        w.u32(u32::MAX).u8(1);
        let bytes = w.finish();
        assert!(matches!(
            Reader::new(&bytes).bytes(),
            Err(CodecError::Truncated { .. })
        ));
    }
}
