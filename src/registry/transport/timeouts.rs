//! The timeout layer: connect (in the HTTP client), time to the response headers, and idle
//! body — so a silent or stalled registry fails in bounded time instead of hanging a run.
//!
//! The response timeout counts from when the request body has been sent, not from the start:
//! an upload chunk of 32 MiB on a slow link may take minutes to send. While a body is being
//! sent, the idle timeout applies to it instead (the registry stopped reading). Once headers
//! arrive, the response body is wrapped in [`Guarded`], which fails the read after `idle`
//! without a byte and holds the request permit until the body ends or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Per-registry timeouts (`connectTimeoutSeconds`, `responseTimeoutSeconds`, `idleTimeoutSeconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    pub idle: Duration,
}

/// What took too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// The request was sent, and no answer came within the response timeout.
    Response(Duration),
    /// The registry stopped taking the request body for the idle timeout.
    UploadStalled(Duration),
}

impl std::fmt::Display for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Late::Response(d) => write!(f, "no answer within {} s (responseTimeoutSeconds)", d.as_secs()),
            Late::UploadStalled(d) => {
                write!(f, "stopped taking the request body for {} s (idleTimeoutSeconds)", d.as_secs())
            }
        }
    }
}

/// How far the sending of a request body has got.
#[derive(Debug, Clone)]
pub struct Upload(Arc<Mutex<(Instant, bool)>>);

impl Upload {
    fn state(&self) -> (Instant, bool) {
        *self.0.lock().expect("upload progress lock")
    }
    fn mark(&self, done: bool) {
        *self.0.lock().expect("upload progress lock") = (Instant::now(), done);
    }
}

/// Wraps a request body so that its progress is seen by [`within`].
pub fn watch_upload(body: reqwest::Body) -> (reqwest::Body, Upload) {
    let upload = Upload(Arc::new(Mutex::new((Instant::now(), false))));
    (reqwest::Body::wrap(Watched { inner: body, upload: upload.clone() }), upload)
}

struct Watched {
    inner: reqwest::Body,
    upload: Upload,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.upload.mark(self.inner.is_end_stream()),
            Poll::Ready(None) => self.upload.mark(true),
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs `send` until it answers or a timeout passes: `response` from when the body was sent
/// (from the start when `upload` is `None`: a small or empty body), `idle` between body
/// progress while it is being sent.
pub async fn within<T>(send: impl Future<Output = T>, upload: Option<Upload>, t: Timeouts) -> Result<T, Late> {
    let start = Instant::now();
    let deadline = async {
        loop {
            let (due, late) = match &upload {
                None => (start + t.response, Late::Response(t.response)),
                Some(u) => match u.state() {
                    (last, true) => (last + t.response, Late::Response(t.response)),
                    (last, false) => (last + t.idle, Late::UploadStalled(t.idle)),
                },
            };
            if Instant::now() >= due {
                return late;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    tokio::select! {
        out = send => Ok(out),
        late = deadline => Err(late),
    }
}

/// The error a response body read fails with after `idle` without a byte.
#[derive(Debug, thiserror::Error)]
#[error("no data for {} s (idleTimeoutSeconds)", .0.as_secs())]
pub struct IdleTimeout(pub Duration);

/// A response body that fails after `idle` without data and holds the request permit until it
/// ends, fails or is dropped.
struct Guarded {
    inner: reqwest::Body,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    permit: Option<OwnedSemaphorePermit>,
    done: bool,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let idle = this.idle;
                this.timer.as_mut().reset(Instant::now() + idle);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                this.finish();
                Poll::Ready(other.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.finish();
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle)))));
                }
                Poll::Pending
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Guarded {
    fn finish(&mut self) {
        self.done = true;
        self.permit = None;
    }
}

/// `resp` with its body guarded by the idle timeout and holding `permit` (released at once when
/// the body is known to be empty, as after a `HEAD`).
pub fn guard(resp: reqwest::Response, permit: Option<OwnedSemaphorePermit>, idle: Duration) -> reqwest::Response {
    use reqwest::ResponseBuilderExt as _;
    let url = resp.url().clone();
    let (mut parts, inner) = http::Response::<reqwest::Body>::from(resp).into_parts();
    // Keep `Response::url()`, which the conversion loses.
    let marker = http::Response::builder().url(url).body(()).expect("an empty response builds");
    parts.extensions.extend(marker.into_parts().0.extensions);
    let permit = permit.filter(|_| !inner.is_end_stream());
    let body = Guarded { inner, idle, timer: Box::pin(tokio::time::sleep(idle)), permit, done: false };
    reqwest::Response::from(http::Response::from_parts(parts, reqwest::Body::wrap(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::sync::Semaphore;

    const T: Timeouts =
        Timeouts { connect: Duration::from_secs(1), response: Duration::from_secs(5), idle: Duration::from_secs(3) };

    /// A request with no answer ends with the response timeout.
    #[tokio::test(start_paused = true)]
    async fn a_silent_answer_times_out() {
        let r = within(std::future::pending::<()>(), None, T).await;
        assert_eq!(r, Err(Late::Response(T.response)));
        assert_eq!(within(async { 7 }, None, T).await, Ok(7));
    }

    /// While a body is sent the idle timeout applies, so a slow but moving upload is not cut,
    /// and a registry that stops reading is.
    #[tokio::test(start_paused = true)]
    async fn uploads_are_timed_by_progress() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let (body, upload) = watch_upload(reqwest::Body::wrap_stream(tokio_stream(rx)));
        let sender = tokio::spawn(async move {
            // Ten chunks two seconds apart: 20 s in all, never 3 s idle.
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
            }
            // Then the sender stalls with the channel open.
            std::future::pending::<()>().await;
        });
        let reader = async move {
            let mut s = std::pin::pin!(http_body_util_stream(body));
            while s.next().await.is_some() {}
        };
        let r = within(reader, Some(upload), T).await;
        assert_eq!(r, Err(Late::UploadStalled(T.idle)));
        sender.abort();
    }

    /// A response body read fails after `idle` without data, and the permit comes back.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_and_frees_the_permit() {
        let sem = Arc::new(Semaphore::new(1));
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"first"))).await.unwrap();
        let http = http::Response::new(reqwest::Body::wrap_stream(tokio_stream(rx)));
        let resp = guard(reqwest::Response::from(http), Some(permit), T.idle);
        assert_eq!(sem.available_permits(), 0, "held while the body is unread");
        let mut s = resp.bytes_stream();
        assert_eq!(s.next().await.unwrap().unwrap(), Bytes::from_static(b"first"));
        let e = s.next().await.unwrap().unwrap_err();
        assert!(crate::registry::error::describe_reqwest_error(&e).contains("idleTimeoutSeconds"), "{e:?}");
        assert_eq!(sem.available_permits(), 1, "released once the body failed");
        drop(tx);
    }

    /// A body read to its end, or an empty one, gives the permit back.
    #[tokio::test]
    async fn finished_and_empty_bodies_free_the_permit() {
        let sem = Arc::new(Semaphore::new(1));
        let resp = guard(
            reqwest::Response::from(http::Response::new(reqwest::Body::from("abc"))),
            Some(sem.clone().acquire_owned().await.unwrap()),
            T.idle,
        );
        assert_eq!(resp.bytes().await.unwrap(), Bytes::from_static(b"abc"));
        assert_eq!(sem.available_permits(), 1);
        let empty = guard(
            reqwest::Response::from(http::Response::new(reqwest::Body::from(""))),
            Some(sem.clone().acquire_owned().await.unwrap()),
            T.idle,
        );
        assert_eq!(sem.available_permits(), 1, "an empty body holds nothing");
        drop(empty);
    }

    fn tokio_stream<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Send + Sync + 'static {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    fn http_body_util_stream(body: reqwest::Body) -> impl futures::Stream<Item = Bytes> {
        futures::stream::unfold(body, |mut b| async move {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut b).poll_frame(cx)).await?;
            Some((frame.ok()?.into_data().unwrap_or_default(), b))
        })
    }
}
