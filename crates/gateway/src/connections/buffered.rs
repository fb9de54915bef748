//! The accepted TCP stream with the read and write buffers pingora's own listener gives it.
//!
//! pingora's accept path sizes a connection's buffers (`UninitializedStream::handshake`
//! calls `Stream::set_buffer`: 64 KiB to read, 1460 bytes to write) before the TLS
//! handshake; `set_buffer` is crate-private, and a stream made `From<TcpStream>` has none.
//! Unbuffered, every TLS record is a write of its own: a response head and its body were
//! two `writev`s where pingora's listener makes one `sendto` (`benches/RESULTS.md`, the
//! syscall counts). This wrapper restores the buffers under the TLS layer; pingora flushes
//! at the end of each response, as it must for its own buffered streams.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::l4::stream::{
    Stream as L4Stream, DEFAULT_L4_READ_BUFFER_SIZE, DEFAULT_L4_WRITE_BUFFER_SIZE,
};
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, TimingDigest, UniqueID,
    UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufStream, ReadBuf};

/// An accepted connection's TCP stream, buffered as pingora's listener buffers it.
#[derive(Debug)]
pub struct Buffered {
    inner: BufStream<L4Stream>,
}

impl Buffered {
    pub fn new(stream: L4Stream) -> Buffered {
        Buffered { inner: BufStream::with_capacity(DEFAULT_L4_READ_BUFFER_SIZE, DEFAULT_L4_WRITE_BUFFER_SIZE, stream) }
    }

    fn l4(&self) -> &L4Stream {
        self.inner.get_ref()
    }
}

impl AsyncRead for Buffered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Buffered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Buffered {
    async fn shutdown(&mut self) {
        // Flushes what is buffered, then shuts the socket's write side.
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for Buffered {
    fn id(&self) -> UniqueIDType {
        self.l4().id()
    }
}

/// Plain TCP: the TLS layer above it answers for the session.
impl Ssl for Buffered {}

impl GetTimingDigest for Buffered {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.l4().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.l4().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.l4().get_write_pending_time()
    }
}

impl GetProxyDigest for Buffered {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.l4().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.get_mut().set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Buffered {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.l4().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.get_mut().set_socket_digest(digest)
    }
}

/// Peeking under the buffer would skip what it holds: not offered (pingora then reads).
impl Peek for Buffered {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn writes_reach_the_socket_on_flush_as_one_write_and_reads_are_buffered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut got = vec![0u8; 11];
            c.read_exact(&mut got).await.unwrap();
            got
        });
        let (socket, _) = listener.accept().await.unwrap();
        let mut stream = Buffered::new(L4Stream::from(socket));
        let mut ping = [0u8; 4];
        stream.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        stream.write_all(b"hello ").await.unwrap();
        stream.write_all(b"world").await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(client.await.unwrap(), b"hello world");
        Shutdown::shutdown(&mut stream).await;
    }
}
