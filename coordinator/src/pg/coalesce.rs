//! A socket wrapper that coalesces a response's messages into one write.
//!
//! pgwire flushes after several messages of one extended-protocol exchange
//! (BindComplete, CommandComplete, ReadyForQuery), which costs a system call
//! and a client wake-up each. This wrapper holds written bytes until the
//! client can actually be waiting for them:
//! - a ReadyForQuery is written (as PostgreSQL, which flushes at every one), or
//! - every Sync, Query and FunctionCall the client sent has been answered, or
//! - the client sent Flush ('H'), or
//! - a CopyInResponse / CopyBothResponse asks the client for data, or
//! - the connection is still in start-up (authentication exchanges), or
//! - more than 64 KiB are buffered.
//!
//! It tracks message framing in both directions to know this; it never
//! reorders or alters bytes. The same framing refuses, before the message is
//! buffered, a client message longer than the coordinator's `max_message_bytes`
//! or a length no message can have: reading then fails with a [`FrameError`].

use super::wellformed;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const MAX_BUFFERED: usize = 64 * 1024;

/// Protocol 3.0, the code of a startup packet (others are SSL, GSS and cancel requests).
const PROTOCOL_3: u32 = 196_608;

/// PostgreSQL's bound on a start-up packet (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP_PACKET: usize = 10_000;

/// A client message whose declared length the coordinator refuses, before reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than `max_message_bytes`.
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A length no message of its kind can have.
    InvalidLength(usize),
    /// A message of this type whose fields do not fit it ([`wellformed`]).
    Malformed(u8, wellformed::Malformed),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes exceeds the limit of {max} bytes (max_message_bytes)"
            ),
            FrameError::InvalidLength(len) => write!(f, "invalid message length {len}"),
            FrameError::Malformed(ty, why) => {
                write!(f, "invalid frontend message type {:?}: {why}", *ty as char)
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Incremental parser of one direction's message framing.
#[derive(Default)]
struct Framing {
    /// Bytes of the current message's header seen so far (type + length).
    header: Vec<u8>,
    /// Payload bytes still to skip in the current message.
    remaining: usize,
    /// Keep the bodies of the messages [`wellformed`] checks (client messages only).
    collect: bool,
    /// The current message's type, and its body so far when it is collected.
    ty: u8,
    body: Option<Vec<u8>>,
}

/// Largest first allocation for a collected body (it grows as bytes arrive).
const BODY_CAPACITY: usize = 64 * 1024;

impl Framing {
    /// Feeds bytes; calls `on_type` with each complete message header's type byte and length,
    /// and `on_body` with each complete collected message's type and body.
    fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_type: impl FnMut(u8, usize),
        mut on_body: impl FnMut(u8, &[u8]),
    ) {
        let header_len = 5;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                self.remaining -= n;
                if let Some(body) = &mut self.body {
                    body.extend_from_slice(&bytes[..n]);
                    if self.remaining == 0 {
                        on_body(self.ty, body);
                        self.body = None;
                    }
                }
                bytes = &bytes[n..];
                continue;
            }
            let need = header_len - self.header.len();
            let n = need.min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == header_len {
                let h = &self.header;
                let ty = h[0];
                let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                self.remaining = len.saturating_sub(4);
                self.header.clear();
                on_type(ty, len);
                if self.collect && wellformed::checked(ty) {
                    if self.remaining == 0 {
                        on_body(ty, &[]);
                    } else {
                        self.ty = ty;
                        self.body = Some(Vec::with_capacity(self.remaining.min(BODY_CAPACITY)));
                    }
                }
            }
        }
    }
}

/// The wrapped socket.
pub struct Coalesce<S> {
    inner: S,
    out: Vec<u8>,
    /// Start-up phase: client messages have no type byte until the startup packet.
    startup: bool,
    /// Length and protocol code of the start-up packet being read.
    startup_head: Vec<u8>,
    /// The start-up packet's parameters so far.
    startup_body: Vec<u8>,
    /// Bytes of the current start-up packet still to skip.
    startup_skip: usize,
    incoming: Framing,
    /// Outgoing framing, valid once start-up is over.
    outgoing: Framing,
    /// Syncs, Queries and FunctionCalls received minus ReadyForQuery messages written.
    awaiting_ready: i64,
    /// The client sent Flush, or the server asked for COPY data: flush at the next chance.
    must_flush: bool,
    /// Longest client message accepted.
    max_message: usize,
    /// A client message refused: every later read fails with it.
    refused: Option<FrameError>,
}

impl<S> Coalesce<S> {
    /// Wraps a freshly accepted socket.
    pub fn new(inner: S) -> Coalesce<S> {
        Coalesce {
            inner,
            out: Vec::new(),
            startup: true,
            startup_head: Vec::new(),
            startup_body: Vec::new(),
            startup_skip: 0,
            incoming: Framing {
                collect: true,
                ..Framing::default()
            },
            outgoing: Framing::default(),
            awaiting_ready: 0,
            must_flush: false,
            max_message: usize::MAX,
            refused: None,
        }
    }

    /// Refuses client messages longer than `max` bytes.
    pub fn with_limit(mut self, max: usize) -> Coalesce<S> {
        self.max_message = max;
        self
    }

    /// Writes what is buffered, and what comes next, at once (a last message before closing).
    pub fn flush_next(&mut self) {
        self.must_flush = true;
    }

    /// The client message refused, if one was.
    pub fn refused(&self) -> Option<&FrameError> {
        self.refused.as_ref()
    }

    /// Wraps a socket whose first bytes (`already_read`) were read before wrapping, as the
    /// encryption negotiation does: the framing must still see them.
    pub fn after(inner: S, already_read: &[u8]) -> Coalesce<S> {
        let mut c = Coalesce::new(inner);
        c.observe_incoming(already_read);
        c
    }

    pub(crate) fn observe_incoming(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if self.refused.is_some() {
            return;
        }
        // Start-up packets are untyped: length, protocol code, rest. SSLRequest, GSSENCRequest and
        // CancelRequest keep the connection in start-up; the 3.0 startup packet ends it.
        while self.startup && !bytes.is_empty() {
            if self.startup_head.len() < 8 {
                let n = (8 - self.startup_head.len()).min(bytes.len());
                self.startup_head.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.startup_head.len() < 8 {
                    return;
                }
                let h = &self.startup_head;
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if !(8..=MAX_STARTUP_PACKET).contains(&len) {
                    self.refused = Some(FrameError::InvalidLength(len));
                    return;
                }
                self.startup_skip = len.saturating_sub(8);
            }
            let n = self.startup_skip.min(bytes.len());
            self.startup_skip -= n;
            self.startup_body.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.startup_skip == 0 {
                let h = &self.startup_head;
                let code = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                let body = std::mem::take(&mut self.startup_body);
                if code == PROTOCOL_3 && wellformed::check_startup_parameters(&body).is_err() {
                    self.refused = Some(FrameError::Malformed(b'0', "bad startup parameters"));
                    return;
                }
                if !matches!(code, 80_877_102..=80_877_104) {
                    self.startup = false;
                    // Start-up ends with a ReadyForQuery the client did not ask for with a Sync.
                    self.awaiting_ready = 1;
                }
                self.startup_head.clear();
            }
        }
        if self.startup || bytes.is_empty() {
            return;
        }
        let mut awaiting = 0i64;
        let mut flush = false;
        let max = self.max_message;
        let mut refused = None;
        let mut malformed = None;
        self.incoming.feed(
            bytes,
            |ty, len| {
                if len < 4 {
                    refused.get_or_insert(FrameError::InvalidLength(len));
                } else if len > max {
                    refused.get_or_insert(FrameError::TooLarge { len, max });
                }
                match ty {
                    b'S' | b'Q' | b'F' => awaiting += 1,
                    b'H' => flush = true,
                    _ => {}
                }
            },
            |ty, body| {
                if let Err(why) = wellformed::check(ty, body) {
                    malformed.get_or_insert(FrameError::Malformed(ty, why));
                }
            },
        );
        let refused = refused.or(malformed);
        if refused.is_some() {
            self.refused = refused;
        }
        self.awaiting_ready += awaiting;
        self.must_flush |= flush;
    }

    fn observe_outgoing(&mut self, bytes: &[u8]) {
        if self.startup {
            return;
        }
        let mut awaiting = self.awaiting_ready;
        let mut flush = false;
        self.outgoing.feed(
            bytes,
            |ty, _| match ty {
                // Every ReadyForQuery leaves at once, as PostgreSQL flushes it: a pipelining client
                // may be waiting for this answer before it lets a later statement proceed.
                b'Z' => {
                    awaiting = (awaiting - 1).max(0);
                    flush = true;
                }
                // COPY-in: the client must send data now. pgwire ignores the Syncs a client
                // pipelined before the copy, so nothing counted so far will be answered.
                b'G' | b'W' => {
                    awaiting = 0;
                    flush = true;
                }
                b'R' => flush = true,
                _ => {}
            },
            |_, _| {},
        );
        self.awaiting_ready = awaiting;
        self.must_flush |= flush;
    }

    fn should_flush(&self) -> bool {
        self.startup
            || self.must_flush
            || self.awaiting_ready <= 0
            || self.out.len() >= MAX_BUFFERED
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = &this.refused {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.observe_incoming(&buf.filled()[before..]);
        match &this.refused {
            // The bytes of a refused message never reach the decoder.
            Some(e) => {
                buf.set_filled(before);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())))
            }
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= MAX_BUFFERED {
            std::task::ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(data);
        this.observe_outgoing(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.should_flush() {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.poll_drain(cx))?;
        this.must_flush = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![ty];
        v.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn startup_packet() -> Vec<u8> {
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0postgres\0\0");
        let mut v = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        v.extend(body);
        v
    }

    #[test]
    fn holds_responses_until_ready_for_query() {
        let mut c = Coalesce::new(());
        // SSLRequest, answered 'N' while still in start-up: flushed at once.
        c.observe_incoming(&[0, 0, 0, 8, 4, 210, 22, 47]);
        assert!(c.startup && c.should_flush());
        c.observe_incoming(&startup_packet());
        assert!(!c.startup);
        // Authentication, parameters, key data and the first ReadyForQuery leave together.
        c.observe_outgoing(&msg(b'S', b"a\0b\0"));
        assert!(!c.should_flush());
        c.observe_outgoing(&msg(b'Z', b"I"));
        assert!(c.should_flush());
        assert_eq!(c.awaiting_ready, 0);
        c.must_flush = false; // what poll_flush does once the bytes are out
                              // Parse/Bind/Execute/Sync in one read, split across two reads at an odd place.
        let mut batch = msg(b'P', b"\0SELECT 1\0\0\0");
        batch.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(msg(b'E', b"\0\0\0\0\0"));
        batch.extend(msg(b'S', b""));
        c.observe_incoming(&batch[..7]);
        c.observe_incoming(&batch[7..]);
        assert_eq!(c.awaiting_ready, 1);
        c.out.extend(msg(b'1', b""));
        c.observe_outgoing(&msg(b'1', b""));
        assert!(
            !c.should_flush(),
            "ParseComplete waits for the rest of the response"
        );
        c.observe_outgoing(&msg(b'C', b"SELECT 1\0"));
        assert!(!c.should_flush());
        c.observe_outgoing(&msg(b'Z', b"I"));
        assert!(c.should_flush(), "ReadyForQuery releases everything");
    }

    #[test]
    fn refuses_lengths_before_reading_the_message() {
        let mut c = Coalesce::new(()).with_limit(1000);
        c.observe_incoming(&startup_packet());
        let mut query = vec![b'x'; 989];
        query.push(0);
        c.observe_incoming(&msg(b'Q', &query));
        assert_eq!(c.refused(), None, "a message under the limit");
        // Only the header of a huge Query has arrived: it is refused already.
        c.observe_incoming(&[b'Q', 0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(
            c.refused(),
            Some(&FrameError::TooLarge {
                len: 0x7fff_ffff,
                max: 1000
            })
        );
        let mut c = Coalesce::new(());
        c.observe_incoming(&startup_packet());
        c.observe_incoming(&[b'E', 0, 0, 0, 2]);
        assert_eq!(c.refused(), Some(&FrameError::InvalidLength(2)));
        let mut c = Coalesce::new(());
        c.observe_incoming(&[0x7f, 0, 0, 0, 0, 3, 0, 0]);
        assert_eq!(
            c.refused(),
            Some(&FrameError::InvalidLength(0x7f00_0000)),
            "a start-up packet longer than PostgreSQL reads"
        );
    }

    #[test]
    fn refuses_a_malformed_message_once_it_is_whole() {
        let mut c = Coalesce::new(());
        c.observe_incoming(&startup_packet());
        let execute = msg(b'E', b"\0\0\0");
        c.observe_incoming(&execute[..5]);
        assert_eq!(c.refused(), None, "not whole yet");
        c.observe_incoming(&execute[5..]);
        assert!(matches!(c.refused(), Some(FrameError::Malformed(b'E', _))));
    }

    #[test]
    fn bytes_read_before_wrapping_still_count() {
        // The startup packet's first 8 bytes were read by the negotiation, the rest by the codec.
        let packet = startup_packet();
        let mut c = Coalesce::after((), &packet[..8]);
        assert!(c.startup);
        c.observe_incoming(&packet[8..]);
        assert!(!c.startup, "the startup packet ended start-up");
        c.observe_outgoing(&msg(b'Z', b"I"));
        c.must_flush = false;
        let mut batch = msg(b'B', b"\0\0\0\0\0\0\0\0");
        batch.extend(msg(b'E', b"\0\0\0\0\0"));
        batch.extend(msg(b'S', b""));
        c.observe_incoming(&batch);
        c.out.extend(msg(b'2', b""));
        c.observe_outgoing(&msg(b'2', b""));
        assert!(!c.should_flush(), "BindComplete waits for ReadyForQuery");
    }

    #[test]
    fn client_flush_and_copy_in_force_a_flush() {
        let mut c = Coalesce::new(());
        c.observe_incoming(&startup_packet());
        c.observe_outgoing(&msg(b'Z', b"I"));
        let mut batch = msg(b'P', b"\0SELECT 1\0\0\0");
        batch.extend(msg(b'H', b""));
        batch.extend(msg(b'S', b""));
        c.observe_incoming(&batch);
        c.out.push(0);
        assert!(c.should_flush(), "Flush asks for everything so far");
        c.must_flush = false;
        c.observe_incoming(&msg(b'Q', b"COPY t FROM STDIN\0"));
        c.observe_outgoing(&msg(b'Z', b"I"));
        assert!(c.should_flush(), "every ReadyForQuery leaves at once");
        c.must_flush = false;
        c.observe_outgoing(&msg(b'N', b"notice\0"));
        assert!(!c.should_flush(), "the COPY query is still unanswered");
        c.observe_outgoing(&msg(b'G', b"\0\0\0"));
        assert!(c.should_flush(), "CopyInResponse waits for client data");
        // Extended-protocol COPY: CopyDone then Sync; the Sync pipelined before the copy was dropped.
        c.must_flush = false;
        let mut done = msg(b'c', b"");
        done.extend(msg(b'S', b""));
        c.observe_incoming(&done);
        c.observe_outgoing(&msg(b'C', b"COPY 1\0"));
        assert!(!c.should_flush());
        c.observe_outgoing(&msg(b'Z', b"I"));
        assert!(c.should_flush(), "the copy's ReadyForQuery leaves");
    }
}
