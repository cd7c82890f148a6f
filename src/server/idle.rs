//! Connections that go quiet are closed (`[server] idle_timeout`).
//!
//! hyper, as `axum::serve` drives it, sets no timeout on reading a request's head, so a
//! client that sends half a request and then nothing (or opens a connection and never
//! writes) would keep its socket for as long as it likes, and enough of them exhaust
//! the process's file descriptors. [`IdleListener`] hands the server connections whose
//! reads fail with `TimedOut` once nothing has been read or written for the timeout;
//! hyper then drops the connection. A request being answered is not cut: the handlers'
//! own time limit is shorter, and every byte read or written restarts the clock.

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
}

impl IdleListener {
    pub fn new(inner: TcpListener, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl axum::serve::Listener for IdleListener {
    type Io = IdleStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop for a TcpListener (it waits out errors such as EMFILE).
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (IdleStream::new(stream, self.timeout), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream whose reads fail with [`io::ErrorKind::TimedOut`] once nothing has moved
/// either way for the timeout.
pub struct IdleStream {
    inner: TcpStream,
    timeout: Duration,
    /// When something last moved.
    last: Instant,
    /// `None` when the timeout is off. Set for `timeout` after some earlier `last`, and
    /// moved on only when it fires (cheaper than a timer reset per read or write).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl IdleStream {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        let deadline = (!timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(timeout)));
        Self {
            inner,
            timeout,
            last: Instant::now(),
            deadline,
        }
    }

    /// Something moved: the clock starts again.
    fn touch(&mut self) {
        if self.deadline.is_some() {
            self.last = Instant::now();
        }
    }

    /// Whether the connection has been idle for the timeout; else the deadline is set
    /// to the end of the current idle spell and will wake `cx`.
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let (last, timeout) = (self.last, self.timeout);
        let Some(d) = &mut self.deadline else {
            return false;
        };
        while d.as_mut().poll(cx).is_ready() {
            let due = last + timeout;
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
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.idle_too_long(cx) {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past [server] idle_timeout",
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
            self.touch();
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
            self.touch();
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
