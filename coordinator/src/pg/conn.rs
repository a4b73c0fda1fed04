//! The per-connection message loop: encryption negotiation (TLS when configured; GSS
//! declined), then pgwire's message processing over a [`Coalesce`]d socket, so each response
//! leaves in one write.
//!
//! The loop is also where a client's messages meet the coordinator's limits: a message longer
//! than `max_message_bytes` is refused from its header (`54000`), a malformed one (even one
//! that makes pgwire's decoder panic) gets `08P01`, both closing the connection as PostgreSQL
//! does; a startup packet without `user` is `28000`; named prepared statements and portals are
//! capped per session (`54000`).

use super::coalesce::{Coalesce, FrameError};
use super::wellformed;
use super::Handlers;
use bytes::BytesMut;
use futures::{FutureExt, SinkExt, StreamExt};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, DefaultClient, PgWireConnectionState, PgWireServerHandlers,
};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::extendedquery::{TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

/// A client that has not finished start-up within this time is dropped.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Initial capacity of a connection's read buffer (tokio-util's own default).
const READ_BUFFER: usize = 8 * 1024;

/// Request codes of the 8-byte SSLRequest and GSSENCRequest packets.
const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;

/// Reads the first 8 bytes of a packet (every start-up packet has at least 8): its length and
/// request code.
async fn packet_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<[u8; 8]> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await?;
    Ok(head)
}

fn request_code(head: &[u8; 8]) -> Option<u32> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    (len == 8).then(|| u32::from_be_bytes([head[4], head[5], head[6], head[7]]))
}

/// A connection after encryption negotiation, with the first 8 bytes of its next packet.
enum Negotiated {
    Plain(TcpStream, [u8; 8]),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, [u8; 8]),
}

/// Answers SSLRequest (TLS when configured, else "N") and GSSENCRequest ("N") until the client
/// sends its startup packet or a CancelRequest.
async fn negotiate(mut tcp: TcpStream, handlers: &Handlers) -> std::io::Result<Negotiated> {
    loop {
        let head = packet_head(&mut tcp).await?;
        match request_code(&head) {
            Some(SSL_REQUEST) => match &handlers.tls {
                Some(acceptor) => {
                    tcp.write_all(b"S").await?;
                    let mut tls = acceptor.clone().accept(tcp).await?;
                    let head = packet_head(&mut tls).await?;
                    return Ok(Negotiated::Tls(Box::new(tls), head));
                }
                None => tcp.write_all(b"N").await?,
            },
            Some(GSSENC_REQUEST) => tcp.write_all(b"N").await?,
            _ => return Ok(Negotiated::Plain(tcp, head)),
        }
    }
}

/// Serves one client connection until it closes.
pub async fn serve_connection(tcp: TcpStream, handlers: Arc<Handlers>) -> std::io::Result<()> {
    let addr = tcp.peer_addr()?;
    tcp.set_nodelay(true)?;
    let negotiated = tokio::time::timeout(STARTUP_TIMEOUT, negotiate(tcp, &handlers))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "start-up timed out"))??;
    match negotiated {
        Negotiated::Plain(tcp, head) => {
            let reject = handlers.tls_required;
            run(tcp, head, addr, false, handlers, reject).await
        }
        Negotiated::Tls(tls, head) => run(tls, head, addr, true, handlers, false).await,
    }
}

/// The message loop over an (encrypted or plain) stream whose first 8 bytes were read already.
/// `reject_startup`: plain connections are refused (`tls_required`); cancel requests still work.
async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static>(
    stream: S,
    head: [u8; 8],
    addr: std::net::SocketAddr,
    secure: bool,
    handlers: Arc<Handlers>,
    reject_startup: bool,
) -> std::io::Result<()> {
    let client = DefaultClient::new(addr, secure);
    let limits = handlers.limits.clone();
    let mut parts = FramedParts::new(
        Coalesce::after(stream, &head).with_limit(limits.max_message_bytes),
        PgWireMessageServerCodec::new(client),
    );
    // The codec reads into whatever room this buffer has: give it the 8 KiB a fresh Framed
    // starts with, not just the 8 bytes already read (which made every read 8 bytes long).
    let mut read_buf = BytesMut::with_capacity(READ_BUFFER);
    read_buf.extend_from_slice(&head);
    parts.read_buf = read_buf;
    let mut socket = Framed::from_parts(parts);
    // Encryption is settled: the next packet is a startup packet or a CancelRequest.
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    let startup_handler = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(deadline);
    let mut named = Named::default();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        // pgwire's decoder panics on some malformed messages: the panic ends this connection
        // with an error, never the process or another connection.
        let next = std::panic::AssertUnwindSafe(socket.next()).catch_unwind();
        let msg = if starting {
            tokio::select! {
                _ = &mut deadline => None,
                m = next => Some(m),
            }
        } else {
            Some(next.await)
        };
        let msg = match msg {
            None | Some(Ok(None)) => break,
            Some(Ok(Some(Ok(msg)))) => msg,
            Some(Ok(Some(Err(e)))) => {
                let (code, message) = match frame_error(&e, socket.get_ref().refused()) {
                    Some(f @ FrameError::TooLarge { .. }) => ("54000", f.to_string()),
                    Some(FrameError::Malformed(_, why)) if *why == wellformed::INVALID_UTF8 => {
                        ("22021", why.to_string())
                    }
                    Some(f) => ("08P01", f.to_string()),
                    None => ("08P01", format!("invalid frontend message: {e}")),
                };
                fatal(&mut socket, code, message).await;
                break;
            }
            Some(Err(_panic)) => {
                tracing::warn!(%addr, "a malformed client message was refused");
                fatal(&mut socket, "08P01", "invalid frontend message".into()).await;
                break;
            }
        };
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        if let PgWireFrontendMessage::Startup(s) = &msg {
            if !s.parameters.contains_key("user") {
                let m = "no PostgreSQL user name specified in startup packet";
                fatal(&mut socket, "28000", m.into()).await;
                break;
            }
        }
        if let Some(refusal) = named.admit(&msg, &socket, limits.max_prepared_statements) {
            let e = PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "54000".into(),
                refusal,
            )));
            process_error(&mut socket, e, true).await?;
            continue;
        }
        let is_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        let is_cancel = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        if reject_startup && matches!(msg, PgWireFrontendMessage::Startup(_)) {
            let e = PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "this server requires TLS: connect with sslmode=require or stronger".into(),
            )));
            process_error(&mut socket, e, false).await?;
            break;
        }
        if let Err(e) = process_message(
            msg,
            &mut socket,
            startup_handler.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await
        {
            let fatal = e.is_fatal();
            process_error(&mut socket, e, is_extended).await?;
            if fatal {
                break;
            }
        }
        if is_cancel {
            break;
        }
    }
    Ok(())
}

/// The frame refused by the socket wrapper, when `e` is that refusal.
fn frame_error<'a>(e: &PgWireError, refused: Option<&'a FrameError>) -> Option<&'a FrameError> {
    match e {
        PgWireError::IoError(io) if io.kind() == std::io::ErrorKind::InvalidData => refused,
        _ => None,
    }
}

/// Sends a FATAL error; the caller then closes the connection.
async fn fatal<S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static, ST>(
    socket: &mut Framed<Coalesce<S>, PgWireMessageServerCodec<ST>>,
    code: &str,
    message: String,
) {
    let info = ErrorInfo::new("FATAL".into(), code.into(), message);
    socket.get_mut().flush_next();
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
}

/// The names of a session's prepared statements and portals, to cap how many it keeps.
#[derive(Default)]
struct Named {
    statements: HashSet<String>,
    portals: HashSet<String>,
}

impl Named {
    /// Records the names `msg` creates or closes; the refusal's message when it would create
    /// one more than `max`.
    fn admit<S: ClientPortalStore>(
        &mut self,
        msg: &PgWireFrontendMessage,
        socket: &S,
        max: usize,
    ) -> Option<String>
    where
        S::PortalStore: PortalStore,
    {
        let store = socket.portal_store();
        match msg {
            PgWireFrontendMessage::Parse(p) => {
                let name = p.name.as_deref().filter(|n| !n.is_empty())?;
                let held = |n: &str| store.get_statement(n).is_some();
                return admit_name(&mut self.statements, name, max, held, "prepared statements");
            }
            PgWireFrontendMessage::Bind(b) => {
                let name = b.portal_name.as_deref().filter(|n| !n.is_empty())?;
                let held = |n: &str| store.get_portal(n).is_some();
                return admit_name(&mut self.portals, name, max, held, "open portals");
            }
            PgWireFrontendMessage::Close(c) => {
                let name = c.name.as_deref()?;
                match c.target_type {
                    TARGET_TYPE_BYTE_STATEMENT => self.statements.remove(name),
                    TARGET_TYPE_BYTE_PORTAL => self.portals.remove(name),
                    _ => false,
                };
            }
            _ => {}
        }
        None
    }
}

/// Records `name` in `names` unless that would make more than `max`; names pgwire no longer
/// `held` (closed, replaced) do not count. The refusal's message otherwise.
fn admit_name(
    names: &mut HashSet<String>,
    name: &str,
    max: usize,
    held: impl Fn(&str) -> bool,
    what: &str,
) -> Option<String> {
    if !names.contains(name) && names.len() >= max {
        names.retain(|n| held(n));
        if names.len() >= max {
            return Some(format!(
                "too many {what} in this session (max_prepared_statements = {max}): close some first"
            ));
        }
    }
    names.insert(name.to_string());
    None
}
