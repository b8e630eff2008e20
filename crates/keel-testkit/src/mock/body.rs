//! The mock's response body: a script of data frames, pauses, flushes and a mid-stream failure.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// One step of a response body.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Send these bytes as one body frame.
    Data(Bytes),
    /// Wait this long before the next step.
    Sleep(Duration),
    /// Yield once so the server writes what it has buffered to the socket.
    Flush,
    /// Fail the body: the server drops the connection without finishing the response.
    Fail,
}

/// A response body played from a list of [`Piece`]s.
pub(crate) struct MockBody {
    pieces: VecDeque<Piece>,
    sleep: Option<Pin<Box<Sleep>>>,
    exact_len: Option<u64>,
}

impl MockBody {
    /// A body of fixed bytes with a known length (sent with `content-length`).
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let exact_len = Some(bytes.len() as u64);
        let mut pieces = VecDeque::with_capacity(1);
        if !bytes.is_empty() {
            pieces.push_back(Piece::Data(bytes));
        }
        Self {
            pieces,
            sleep: None,
            exact_len,
        }
    }

    /// A body of unknown length (sent chunked) played step by step.
    pub(crate) fn pieces(pieces: VecDeque<Piece>) -> Self {
        Self {
            pieces,
            sleep: None,
            exact_len: None,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            match this.pieces.pop_front() {
                None => return Poll::Ready(None),
                Some(Piece::Data(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Some(Piece::Sleep(duration)) => {
                    this.sleep = Some(Box::pin(tokio::time::sleep(duration)));
                }
                Some(Piece::Flush) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(Piece::Fail) => {
                    this.pieces.clear();
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "mock upstream cut the stream off",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}
