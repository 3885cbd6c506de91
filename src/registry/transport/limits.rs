//! The body-limit layer: every body read whole into memory has a ceiling, because a registry
//! can answer anything. Blobs are never read whole (they stream, and the transfer engine stops
//! at the descriptor's size); manifests keep their own 4 MiB limit (`manifests::read_limited`).

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

/// Error bodies and token answers: 1 MiB, as containers/image caps them since CVE-2020-1702.
pub const SMALL_BODY: usize = 1024 * 1024;
/// One page of a tag list, catalog or ACR listing.
pub const LISTING_PAGE: usize = 4 * 1024 * 1024;
/// A whole listing, all its pages together.
pub const LISTING_TOTAL: usize = 64 * 1024 * 1024;
/// Pages followed in one listing; more is taken as a registry that loops.
pub const LISTING_PAGES: usize = 10_000;

/// A body read up to a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    pub bytes: Bytes,
    /// The body went on past the limit; the rest was not read.
    pub cut: bool,
}

impl Capped {
    /// What to append to a message built from the body: whether it was cut.
    pub fn note(&self) -> String {
        if self.cut { format!(" [the body was cut after {} bytes]", self.bytes.len()) } else { String::new() }
    }
}

/// Reads at most `limit` bytes of `resp`'s body. A read error ends the body where it broke:
/// what it is used for (an error message) is better with part of a body than with none.
pub async fn read_capped(resp: reqwest::Response, limit: usize) -> Capped {
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        if out.len() + chunk.len() > limit {
            out.extend_from_slice(&chunk[..limit - out.len()]);
            return Capped { bytes: out.freeze(), cut: true };
        }
        out.extend_from_slice(&chunk);
    }
    Capped { bytes: out.freeze(), cut: false }
}

/// Reads a whole body that must fit in `limit`; `Err(read)` says how much arrived before the
/// limit was passed, `Err` with a reqwest error when the body broke.
pub async fn read_within(resp: reqwest::Response, limit: usize) -> Result<Result<Bytes, usize>, reqwest::Error> {
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Ok(Err(out.len() + chunk.len()));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Ok(out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(body: &'static [u8]) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(reqwest::Body::from(body)))
    }

    /// A body over the cap is cut and says so; one under it is whole.
    #[tokio::test]
    async fn bodies_are_cut_at_the_cap() {
        let c = read_capped(resp(b"0123456789"), 4).await;
        assert_eq!((c.bytes.as_ref(), c.cut), (&b"0123"[..], true));
        let c = read_capped(resp(b"0123"), 4).await;
        assert_eq!((c.bytes.as_ref(), c.cut), (&b"0123"[..], false));
        assert_eq!(read_within(resp(b"01234"), 4).await.unwrap(), Err(5));
        assert_eq!(read_within(resp(b"0123"), 4).await.unwrap(), Ok(Bytes::from_static(b"0123")));
    }
}
