//! Content digests and hashing while bytes flow.
//!
//! Every byte the tool moves is hashed on the way through; nothing is trusted because a
//! registry said so. [`Verifier`] holds back the last chunk of a stream until the digest is
//! known, so a body whose bytes do not match never reaches the target complete: the upload
//! fails before the registry can commit it.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest as _, Sha256};

/// An OCI content digest, `algorithm:hex`. Only sha256 is produced; sha512 is accepted as a name
/// (and refused when content must be verified, since no registry we target serves it).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DigestError(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| DigestError(format!("{s:?} has no algorithm prefix")))?;
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(DigestError(format!("unsupported digest algorithm {alg:?}"))),
        };
        if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError(format!("{s:?} is not {want} lowercase hex digits after {alg}:")));
        }
        Ok(Digest(s.to_string()))
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or("")
    }

    pub fn hex(&self) -> &str {
        self.0.split_once(':').map(|(_, h)| h).unwrap_or("")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag the OCI 1.1 referrers tag schema uses for this digest: `sha256-<hex>`.
    pub fn referrers_tag(&self) -> String {
        format!("{}-{}", self.algorithm(), self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A running sha256 with a byte count. `Clone` is cheap, which is what lets an upload take a
/// checkpoint at each chunk boundary and resume hashing from there after a failed chunk.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }
    /// Bytes hashed so far (a count; nothing asks whether it is empty).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn finish(self) -> Digest {
        Digest(format!("sha256:{}", hex::encode(self.sha.finalize())))
    }
}

/// What went wrong with content that was checked against its descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error("size mismatch: expected {expected} bytes, got {actual} so far")]
    Size { expected: u64, actual: u64 },
}

/// Checks a whole buffer (a manifest) against its digest and, when known, its size.
pub fn verify_bytes(data: &[u8], expected: &Digest, size: Option<u64>) -> Result<(), Mismatch> {
    if let Some(size) = size
        && size != data.len() as u64
    {
        return Err(Mismatch::Size { expected: size, actual: data.len() as u64 });
    }
    let actual = Digest::of(data);
    if &actual != expected {
        return Err(Mismatch::Digest { expected: expected.clone(), actual });
    }
    Ok(())
}

/// A stream adapter that hashes what passes through and refuses to release the final bytes of
/// a stream whose digest or size is wrong.
///
/// It keeps one chunk back: a chunk is released only when the next one has arrived, and the
/// last one only after the digest has been checked. It also fails as soon as more bytes arrive
/// than the descriptor's size. An upload fed from this stream therefore never delivers a
/// complete wrong body, so the target cannot commit it.
pub struct Verifier<S> {
    inner: S,
    hasher: Option<Hasher>,
    expected: Digest,
    size: u64,
    held: Option<Bytes>,
    done: bool,
}

impl<S> Verifier<S> {
    /// Verifies the stream against `expected`, whose content is `size` bytes long. `hasher` is the
    /// state of the bytes before this stream (a fresh one when the stream starts at offset 0).
    pub fn new(inner: S, expected: Digest, size: u64, hasher: Hasher) -> Self {
        Verifier { inner, hasher: Some(hasher), expected, size, held: None, done: false }
    }
}

/// An error from a verified stream: either the inner stream's, or a mismatch.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError<E> {
    #[error(transparent)]
    Inner(E),
    #[error(transparent)]
    Mismatch(Mismatch),
}

impl<S, E> Stream for Verifier<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, VerifyError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(VerifyError::Inner(e))));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    let hasher = this.hasher.as_mut().expect("hasher present until the end");
                    hasher.update(&chunk);
                    if hasher.len() > this.size {
                        this.done = true;
                        let actual = hasher.len();
                        return Poll::Ready(Some(Err(VerifyError::Mismatch(Mismatch::Size {
                            expected: this.size,
                            actual,
                        }))));
                    }
                    if let Some(prev) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(prev)));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let hasher = this.hasher.take().expect("hasher present until the end");
                    if hasher.len() != this.size {
                        return Poll::Ready(Some(Err(VerifyError::Mismatch(Mismatch::Size {
                            expected: this.size,
                            actual: hasher.len(),
                        }))));
                    }
                    let actual = hasher.finish();
                    if actual != this.expected {
                        return Poll::Ready(Some(Err(VerifyError::Mismatch(Mismatch::Digest {
                            expected: this.expected.clone(),
                            actual,
                        }))));
                    }
                    return Poll::Ready(this.held.take().map(Ok));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt, stream};

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[test]
    fn parses_and_refuses() {
        let good = format!("sha256:{}", "0".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().hex(), "0".repeat(64));
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("md5:{}", "0".repeat(64))).is_err());
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[tokio::test]
    async fn verifier_passes_good_content_through_unchanged() {
        let expected = Digest::of(b"hello world");
        let v = Verifier::new(chunks(&[b"hello", b" ", b"world"]), expected, 11, Hasher::new());
        let out: Vec<_> = v.collect().await;
        let joined: Vec<u8> = out.into_iter().flat_map(|r| r.unwrap().to_vec()).collect();
        assert_eq!(joined, b"hello world");
    }

    #[tokio::test]
    async fn verifier_withholds_the_last_chunk_of_wrong_content() {
        let expected = Digest::of(b"hello world");
        let v = Verifier::new(chunks(&[b"hello", b" ", b"WORLD"]), expected, 11, Hasher::new());
        let out: Vec<_> = v.collect().await;
        let released: usize = out.iter().filter_map(|r| r.as_ref().ok()).map(|b| b.len()).sum();
        assert!(released < 11, "a wrong body must never be released whole");
        assert!(matches!(out.last(), Some(Err(VerifyError::Mismatch(Mismatch::Digest { .. })))));
    }

    #[tokio::test]
    async fn verifier_fails_on_too_many_or_too_few_bytes() {
        let expected = Digest::of(b"abc");
        let v = Verifier::new(chunks(&[b"ab", b"cd"]), expected.clone(), 3, Hasher::new());
        let out: Vec<_> = v.collect().await;
        assert!(matches!(out.last(), Some(Err(VerifyError::Mismatch(Mismatch::Size { expected: 3, actual: 4 })))));
        let v = Verifier::new(chunks(&[b"ab"]), expected, 3, Hasher::new());
        let out: Vec<_> = v.collect().await;
        assert!(matches!(out.last(), Some(Err(VerifyError::Mismatch(Mismatch::Size { .. })))));
    }

    #[tokio::test]
    async fn verifier_continues_from_a_checkpoint() {
        let mut h = Hasher::new();
        h.update(b"hello ");
        let v = Verifier::new(chunks(&[b"world"]), Digest::of(b"hello world"), 11, h);
        let out: Vec<_> = v.collect().await;
        assert!(out.iter().all(|r| r.is_ok()));
    }
}
