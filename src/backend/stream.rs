//! The byte streams under connections: TCP, TLS over TCP (rustls), or a Unix socket. One generic
//! type serves both sides: [`BackendStream`] towards nodes (a rustls client stream) and the
//! frontend's client stream (a rustls server stream); the connection code above never changes
//! with the transport.
//!
//! This module only opens and configures sockets and moves bytes; it must never parse or buffer
//! RESP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected stream: plain TCP, TLS (`T`) over TCP, or a Unix socket.
#[derive(Debug)]
pub enum Stream<T> {
    Tcp(TcpStream),
    Tls(Box<T>),
    Unix(UnixStream),
    /// TCP through the worker's io_uring ring (`io = "uring"`).
    Uring(crate::uring::UringTcp),
}

/// A connected backend stream.
pub type BackendStream = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T> Stream<T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// Opens a TCP stream to `addr` (`host:port`) within `timeout`, with Nagle off.
pub async fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Opens a Unix socket stream to the socket file at `path` (the caller bounds the time).
pub async fn connect_unix(path: &std::path::Path) -> io::Result<UnixStream> {
    UnixStream::connect(path).await
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => tls_read(s.as_mut(), cx, buf),
            Stream::Unix(s) => unix_read(s, cx, buf),
            Stream::Uring(s) => uring_read(s, cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => tls_write(s.as_mut(), cx, buf),
            Stream::Unix(s) => unix_write(s, cx, buf),
            Stream::Uring(s) => uring_write(s, cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => tls_flush(s.as_mut(), cx),
            Stream::Unix(_) => Poll::Ready(Ok(())),
            Stream::Uring(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Uring(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

// The TLS arms out of line: inlined, rustls' code would make the stream's poll functions too
// large to inline into the request path, and the TCP case would pay a call for it.
#[inline(never)]
fn tls_read<T: AsyncRead + Unpin>(
    s: &mut T,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    Pin::new(s).poll_read(cx, buf)
}

#[inline(never)]
fn tls_write<T: AsyncWrite + Unpin>(
    s: &mut T,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    Pin::new(s).poll_write(cx, buf)
}

#[inline(never)]
fn tls_flush<T: AsyncWrite + Unpin>(s: &mut T, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    Pin::new(s).poll_flush(cx)
}

// The Unix arms out of line too, so that adding them leaves the TCP path as it was.
#[inline(never)]
fn unix_read(
    s: &mut UnixStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    Pin::new(s).poll_read(cx, buf)
}

#[inline(never)]
fn unix_write(s: &mut UnixStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    Pin::new(s).poll_write(cx, buf)
}

// The io_uring arms out of line as well.
#[inline(never)]
fn uring_read(
    s: &mut crate::uring::UringTcp,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    Pin::new(s).poll_read(cx, buf)
}

#[inline(never)]
fn uring_write(
    s: &mut crate::uring::UringTcp,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    Pin::new(s).poll_write(cx, buf)
}
