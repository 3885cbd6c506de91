//! The body-limit layer: every body read whole into memory has a ceiling, because a registry
//! can answer anything. Blobs are never read whole (they stream, and the transfer engine stops
//! at the descriptor's size); manifests keep their own 4 MiB limit (`manifests::read_limited`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::time::Instant;

use crate::registry::error::describe_reqwest_error;

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

/// Reads at most `limit` bytes of `resp`'s body, for at most `within`. A read error or the
/// deadline ends the body where it stopped: what it is used for (an error message) is better
/// with part of a body than with none.
pub async fn read_capped(resp: reqwest::Response, limit: usize, within: Duration) -> Capped {
    let deadline = Instant::now() + within;
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) if out.len() + chunk.len() > limit => {
                out.extend_from_slice(&chunk[..limit - out.len()]);
                return Capped { bytes: out.freeze(), cut: true };
            }
            Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
            Ok(_) => return Capped { bytes: out.freeze(), cut: false },
            Err(_) => return Capped { bytes: out.freeze(), cut: true },
        }
    }
}

/// Why a body that had to be read whole was not.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Over the limit after this many bytes (the rest was not read).
    #[error("the body is over the limit ({0} bytes read)")]
    TooLarge(usize),
    #[error("the body did not arrive within {} s (responseTimeoutSeconds)", .0.as_secs())]
    TooSlow(Duration),
    #[error("{}", describe_reqwest_error(.0))]
    Broken(reqwest::Error),
}

/// Reads a whole body that must fit in `limit` bytes and arrive within `within` of its headers:
/// a registry dripping a byte just inside the idle timeout cannot hold a run for days.
pub async fn read_within(resp: reqwest::Response, limit: usize, within: Duration) -> Result<Bytes, ReadError> {
    let deadline = Instant::now() + within;
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(ReadError::TooSlow(within)),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => return Err(ReadError::Broken(e)),
            Ok(Some(Ok(chunk))) if out.len() + chunk.len() > limit => {
                return Err(ReadError::TooLarge(out.len() + chunk.len()));
            }
            Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(body: &'static [u8]) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(reqwest::Body::from(body)))
    }

    const T: Duration = Duration::from_secs(5);

    /// A body over the cap is cut and says so; one under it is whole.
    #[tokio::test]
    async fn bodies_are_cut_at_the_cap() {
        let c = read_capped(resp(b"0123456789"), 4, T).await;
        assert_eq!((c.bytes.as_ref(), c.cut), (&b"0123"[..], true));
        let c = read_capped(resp(b"0123"), 4, T).await;
        assert_eq!((c.bytes.as_ref(), c.cut), (&b"0123"[..], false));
        assert!(matches!(read_within(resp(b"01234"), 4, T).await, Err(ReadError::TooLarge(5))));
        assert_eq!(read_within(resp(b"0123"), 4, T).await.unwrap(), Bytes::from_static(b"0123"));
    }

    /// A body that keeps dripping is given up at the deadline, however small each gap.
    #[tokio::test(start_paused = true)]
    async fn a_drip_is_bounded_in_total() {
        let drip = || {
            let s = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
            });
            reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(s)))
        };
        assert!(matches!(read_within(drip(), 1 << 20, T).await, Err(ReadError::TooSlow(_))));
        let c = read_capped(drip(), 1 << 20, T).await;
        assert!(c.cut && !c.bytes.is_empty());
    }
}
