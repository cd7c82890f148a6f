//! Connections that go quiet are closed (`[server] idle_timeout`).
//!
//! hyper, as `axum::serve` drives it, sets no timeout on reading a request's head, so a
//! client that sends half a request and then nothing (or opens a connection and never
//! writes) would keep its socket for as long as it likes, and enough of them exhaust
//! the process's file descriptors. [`IdleListener`] hands the server connections whose
//! reads fail with `TimedOut` once nothing has been read or written for the timeout;
//! hyper then drops the connection. A request being answered is not cut: the handlers'
//! own time limit is shorter, and every byte read or written restarts the clock.
//!
//! Since every byte read restarts that clock, a client dripping its request head one
//! byte at a time would never be idle; so a connection that has read something and
//! written nothing since for longer than the request timeout
//! ([`REQUEST_TIMEOUT`](super::REQUEST_TIMEOUT), 30 s) plus the idle timeout is closed
//! too. A request whose head arrives within the idle timeout is never cut by it: its
//! handler answers (or the timeout layer's 408 does) within the request timeout of the
//! head's end, and an answer's first byte written starts the clock again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// A TCP listener whose connections time out when idle (`Duration::ZERO`: never).
pub struct IdleListener {
    inner: TcpListener,
    timeout: Duration,
    unanswered: Duration,
}

impl IdleListener {
    /// Connections idle for `timeout`, or unanswered for [`super::REQUEST_TIMEOUT`] plus
    /// `timeout`, are closed (`Duration::ZERO`: neither).
    pub fn new(inner: TcpListener, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            unanswered: super::REQUEST_TIMEOUT + timeout,
        }
    }
}

impl axum::serve::Listener for IdleListener {
    type Io = IdleStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop for a TcpListener (it waits out errors such as EMFILE).
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (IdleStream::new(stream, self.timeout, self.unanswered), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream whose reads fail with [`io::ErrorKind::TimedOut`] once nothing has moved
/// either way for the timeout, or once it has been reading without writing for the
/// `unanswered` limit.
pub struct IdleStream {
    inner: TcpStream,
    timeout: Duration,
    unanswered: Duration,
    /// When something last moved.
    last: Instant,
    /// When the first byte read since the last byte written (or since the start) came.
    reading_since: Option<Instant>,
    /// `None` when the timeout is off. Set for `timeout` after some earlier `last`, and
    /// moved on only when it fires (cheaper than a timer reset per read or write).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl IdleStream {
    fn new(inner: TcpStream, timeout: Duration, unanswered: Duration) -> Self {
        let deadline = (!timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(timeout)));
        Self {
            inner,
            timeout,
            unanswered,
            last: Instant::now(),
            reading_since: None,
            deadline,
        }
    }

    /// Something was read: the idle clock starts again; the unanswered one starts if
    /// it was not running.
    fn touch_read(&mut self) {
        if self.deadline.is_some() {
            let now = Instant::now();
            self.last = now;
            self.reading_since.get_or_insert(now);
        }
    }

    /// Something was written: both clocks start again.
    fn touch_write(&mut self) {
        if self.deadline.is_some() {
            self.last = Instant::now();
            self.reading_since = None;
        }
    }

    /// Whether the connection has been idle for the timeout, or unanswered for its
    /// limit; else the deadline is set to the earlier of the two ends and will wake
    /// `cx`. (The deadline is never late: `last` only moves later, `reading_since` is
    /// cleared or kept, or starts after the deadline was set and so, `unanswered` being
    /// longer than `timeout`, ends after it.)
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let (last, timeout) = (self.last, self.timeout);
        let unanswered_end = self.reading_since.map(|t| t + self.unanswered);
        let Some(d) = &mut self.deadline else {
            return false;
        };
        while d.as_mut().poll(cx).is_ready() {
            let idle_end = last + timeout;
            let due = unanswered_end.map_or(idle_end, |u| u.min(idle_end));
            if due <= Instant::now() {
                return true;
            }
            d.as_mut().reset(due);
        }
        false
    }
}

impl AsyncRead for IdleStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch_read();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.idle_too_long(cx) {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past [server] idle_timeout, or unanswered past it and the request timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for IdleStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
