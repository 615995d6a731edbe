//! The client's byte stream, plain or TLS, and the one read that feeds the session.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::server::TlsStream;
use yizhan_proto::server::ServerSession;

/// The client stream, before or after TLS. `S` is any byte stream: a TCP socket from a
/// listener, or an in-memory pipe (`tokio::io::duplex`) in the tests that run the golden
/// dialogues on the real session, policy and spool.
#[derive(Debug)]
pub(super) enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only during the STARTTLS handshake, while the stream is moved into it.
    Upgrading,
}

/// The most bytes one read takes from the stream (a TLS record at most).
const READ_CHUNK: usize = 16 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Stream<S> {
    /// Waits for input and hands it to `session`; returns how many bytes were read (0: the
    /// peer closed the connection).
    ///
    /// The read buffer lives on the stack of one poll, never in the future: a connection
    /// waiting for input holds no buffer (an idle connection costs its task and session only,
    /// plain or TLS). Cancel-safe: a poll that returns `Pending` has read nothing.
    pub(super) async fn read_into(&mut self, session: &mut ServerSession) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut buf);
            let polled = match self {
                Stream::Plain(s) => Pin::new(s).poll_read(cx, &mut buf),
                Stream::Tls(s) => Pin::new(s).poll_read(cx, &mut buf),
                Stream::Upgrading => return Poll::Ready(Ok(0)),
            };
            ready!(polled)?;
            session.receive(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        })
        .await
    }

    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Upgrading => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    pub(super) async fn shutdown(&mut self) {
        let _ = match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Upgrading => Ok(()),
        };
    }
}
