//! Length-prefixed frames: `u32` big-endian payload length, then the payload (JSON).
//! Reading never allocates more than what actually arrived, whatever the prefix claims.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Default largest frame payload accepted or sent: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("the stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated { expected: u64, got: u64 },
    #[error("stream read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends one frame (prefix + payload) to `out`. Payloads over `u32::MAX` are refused.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        size: payload.len() as u64,
        limit: u64::from(u32::MAX),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly at a frame boundary.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                expected: 4,
                got: got as u64,
            });
        }
        got += n;
    }
    let len = u64::from(u32::from_be_bytes(prefix));
    if len > max as u64 {
        return Err(FrameError::TooLarge {
            size: len,
            limit: max as u64,
        });
    }
    let mut buf = Vec::with_capacity((len as usize).min(64 * 1024));
    r.take(len).read_to_end(&mut buf).await?;
    if (buf.len() as u64) < len {
        return Err(FrameError::Truncated {
            expected: len,
            got: buf.len() as u64,
        });
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(&mut out, p).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn round_trip_and_clean_end() {
        let bytes = frames(&[b"hello", b"", b"{\"a\":1}"]);
        assert_eq!(&bytes[..4], &[0, 0, 0, 5]);
        let mut r = bytes.as_slice();
        assert_eq!(read_frame(&mut r, 100).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 100).await.unwrap().unwrap(), b"");
        assert_eq!(
            read_frame(&mut r, 100).await.unwrap().unwrap(),
            b"{\"a\":1}"
        );
        assert!(read_frame(&mut r, 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_truncated() {
        let bytes = frames(&[&[7u8; 101]]);
        let err = read_frame(&mut bytes.as_slice(), 100).await.unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    size: 101,
                    limit: 100
                }
            ),
            "{err}"
        );
        // Garbage text read as a length prefix claims ~1.7 GB.
        let err = read_frame(&mut &b"hello world"[..], 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    size: 0x6865_6c6c,
                    ..
                }
            ),
            "{err}"
        );
        let err = read_frame(&mut &bytes[..50], 200).await.unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    expected: 101,
                    got: 46
                }
            ),
            "{err}"
        );
        let err = read_frame(&mut &[0u8, 0][..], 200).await.unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    expected: 4,
                    got: 2
                }
            ),
            "{err}"
        );
    }
}
