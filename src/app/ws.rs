//! `GET /ws/echo`: a WebSocket echo, and the long-lived connection a drain
//! must end cleanly: on a stop signal it gets a Close frame (1001), not a reset.

use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Item, Message, MessageStream, ProtocolError, Session};
use tokio::time::{Instant, MissedTickBehavior};

use portbound::error::ApiError;
use portbound::state::{AppState, DrainState};
use portbound::telemetry::{RequestId, RequestInfo, logging};

/// Where the endpoint is mounted (not in the OpenAPI paths: OpenAPI cannot
/// describe a WebSocket, so the spec's description mentions it instead).
pub const PATH: &str = "/ws/echo";

/// The largest message accepted, in bytes, whether sent in one frame or in
/// fragments. An echo holds a whole message in memory (and a second copy on
/// its way out), so this bounds what one connection costs; it is the same
/// 64 KiB as the default HTTP body limit. Larger messages close with 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How often the server pings. Intermediaries cut connections that carry no
/// bytes: Heroku's router after 55 s, the shipped nginx after 60 s
/// (`proxy_read_timeout`). A ping every 25 s keeps a quiet but healthy
/// connection open through both.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);

/// A connection that sends neither a message nor a pong for this long (two
/// missed pings) is gone without having said so (a laptop lid closed, a NAT
/// entry expired); closing it frees its worker-side state.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The close reason sent to every connection when the drain begins.
pub const DRAINING_REASON: &str = "server is draining";

/// Mounts `GET /ws/echo`; other methods get a 405 problem with `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .name(PATH)
            .route(web::get().to(echo))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::method_not_allowed("GET"))
            })),
    );
}

/// Upgrades the request and echoes every text and binary message until the
/// client closes, goes idle, or the process drains.
pub async fn echo(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let drain = state.drain.clone();
    if drain.is_draining() {
        // A client reconnecting after our 1001 must go to another instance;
        // accepting here would only earn it a second 1001.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is draining and accepts no new WebSocket connections; connect again",
        ));
    }
    // The id is kept for the session's life: detached from the buffer it
    // came from.
    let (id, client_ip) = {
        let ext = req.extensions();
        let info = ext.get::<RequestInfo>();
        (
            info.map_or_else(RequestId::generate, |i| i.id.detached()),
            info.and_then(|i| i.client.ip),
        )
    };
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(err) => return Ok(handshake_problem(&err, &id)),
    };
    let client = client_ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    log::debug!("websocket connected from {client}");
    let stream = stream.max_frame_size(MAX_MESSAGE_BYTES);
    actix_rt::spawn(async move {
        let started = Instant::now();
        let outcome = run(session, stream, &drain).await;
        log_for(&id, || {
            log::debug!(
                "websocket disconnected after {} ms: {outcome}",
                started.elapsed().as_millis()
            );
        });
    });
    Ok(response)
}

/// The failed handshake as a problem document, keeping the headers the
/// WebSocket RFC asks for (`Sec-WebSocket-Version` on a 426, `Allow` on a
/// 405). The middleware leaves a problem+json body as it is.
fn handshake_problem(err: &actix_web::Error, id: &RequestId) -> HttpResponse {
    let original = err.as_response_error().error_response();
    let mut res = ApiError::new(
        original.status(),
        format!(
            "{err}: {PATH} speaks only WebSocket; connect with GET and the headers \
             Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13 and \
             Sec-WebSocket-Key"
        ),
    )
    .to_response(Some(id.as_str()));
    for name in [
        header::ALLOW,
        header::UPGRADE,
        header::SEC_WEBSOCKET_VERSION,
    ] {
        if let Some(v) = original.headers().get(&name) {
            res.headers_mut().insert(name, v.clone());
        }
    }
    res
}

/// Logs with the connection's request id: the session outlives the request,
/// so its lines would otherwise carry none.
fn log_for(id: &RequestId, f: impl FnOnce()) {
    logging::with_request_id(id.header(), f);
}

/// How a session ended, for the log.
#[derive(Debug)]
enum Outcome {
    /// We sent a Close frame with this code and reason.
    Closed(CloseReason),
    /// The client sent Close (and got its code back).
    ClientClosed(Option<CloseReason>),
    /// The connection went away without a Close frame.
    Gone(&'static str),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = |r: &CloseReason| u16::from(r.code);
        match self {
            Outcome::Closed(r) => write!(
                f,
                "closed by the server with {} ({})",
                code(r),
                r.description.as_deref().unwrap_or("")
            ),
            Outcome::ClientClosed(Some(r)) => write!(f, "closed by the client with {}", code(r)),
            Outcome::ClientClosed(None) => f.write_str("closed by the client"),
            Outcome::Gone(why) => write!(f, "connection lost ({why})"),
        }
    }
}

fn reason(code: CloseCode, description: &str) -> CloseReason {
    CloseReason {
        code,
        description: Some(description.to_owned()),
    }
}

/// A message arriving in fragments (continuation frames).
#[derive(Debug)]
struct Partial {
    text: bool,
    bytes: Vec<u8>,
}

/// The session: echo until something ends it, then close.
async fn run(mut session: Session, mut stream: MessageStream, drain: &DrainState) -> Outcome {
    let draining = drain.wait_draining();
    tokio::pin!(draining);
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let mut partial: Option<Partial> = None;

    let outcome = loop {
        let msg = tokio::select! {
            // Checked first: once the drain begins, nothing else matters.
            biased;
            () = &mut draining => break Outcome::Closed(reason(CloseCode::Away, DRAINING_REASON)),
            () = &mut idle => break Outcome::Closed(reason(
                CloseCode::Normal,
                &format!("idle for {} s", IDLE_TIMEOUT.as_secs()),
            )),
            _ = ping.tick() => {
                if session.ping(b"").await.is_err() {
                    break Outcome::Gone("ping failed");
                }
                continue;
            }
            msg = stream.recv() => msg,
        };
        let msg = match msg {
            None => break Outcome::Gone("closed without a Close frame"),
            Some(Err(err)) => match protocol_close(err) {
                Some(r) => break Outcome::Closed(r),
                None => break Outcome::Gone("read failed"),
            },
            Some(Ok(msg)) => msg,
        };
        // Only whole messages (pongs included) count as activity. actix
        // applies the frame size limit only once a frame has fully arrived,
        // buffering it until then; the idle timeout is what ends a huge
        // frame that never completes.
        if !matches!(msg, Message::Continuation(_) | Message::Nop) {
            idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
        }
        let sent = match msg {
            Message::Text(text) => session.text(text).await,
            Message::Binary(bytes) => session.binary(bytes).await,
            Message::Ping(bytes) => session.pong(&bytes).await,
            Message::Pong(_) | Message::Nop => Ok(()),
            Message::Close(r) => {
                // Answer with the client's own code, as RFC 6455 suggests.
                let echo = r.as_ref().map(|r| CloseReason {
                    code: r.code,
                    description: None,
                });
                let _ = session.close(echo).await;
                return Outcome::ClientClosed(r);
            }
            Message::Continuation(item) => match continuation(&mut partial, item) {
                Err(r) => break Outcome::Closed(r),
                Ok(None) => Ok(()),
                Ok(Some(Partial { text: false, bytes })) => session.binary(bytes).await,
                Ok(Some(Partial { text: true, bytes })) => match String::from_utf8(bytes) {
                    Ok(text) => session.text(text).await,
                    Err(_) => {
                        break Outcome::Closed(reason(CloseCode::Invalid, "text is not UTF-8"));
                    }
                },
            },
        };
        if sent.is_err() {
            break Outcome::Gone("write failed");
        }
    };
    if let Outcome::Closed(r) = &outcome {
        // The response body ends after the Close frame; actix then reads and
        // discards the client's reply (for up to its 1 s client disconnect
        // timeout) before closing the socket, so the client sees a close
        // handshake, not a reset.
        let _ = session.close(Some(r.clone())).await;
    }
    outcome
}

/// The Close frame for a read error, or `None` when the connection itself
/// failed (there is nobody left to tell).
fn protocol_close(err: ProtocolError) -> Option<CloseReason> {
    match err {
        ProtocolError::Overflow => Some(too_big()),
        // actix-http 3.19 reports reserved bits as InvalidData too (a proper
        // variant waits for its next semver-major release); RFC 6455 §5.2
        // says a frame with RSV bits and no extension that defines them
        // fails the connection: 1002, not 1007.
        ProtocolError::Io(e)
            if e.kind() == std::io::ErrorKind::InvalidData
                && e.to_string().contains("reserved bits") =>
        {
            Some(reason(
                CloseCode::Protocol,
                "a frame set reserved bits, and no extension was negotiated",
            ))
        }
        ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Some(reason(CloseCode::Invalid, "text is not UTF-8"))
        }
        ProtocolError::Io(_) => None,
        // actix-http 3.19 gives BadOpCode for three things: an opcode RFC
        // 6455 does not define, a close code it does not allow (999, 1004,
        // 1005, 1006, 1015, 2000-2999...), and a close reason that is not
        // UTF-8 (its Close parser, frame.rs). Say so rather than "Bad opcode".
        ProtocolError::BadOpCode => Some(reason(
            CloseCode::Protocol,
            "an undefined opcode, a close code RFC 6455 does not allow, or a close reason \
             that is not UTF-8",
        )),
        other => Some(reason(CloseCode::Protocol, &other.to_string())),
    }
}

fn too_big() -> CloseReason {
    reason(
        CloseCode::Size,
        &format!("a message may be at most {MAX_MESSAGE_BYTES} bytes"),
    )
}

/// Adds a fragment; returns the message once its last fragment is in.
fn continuation(partial: &mut Option<Partial>, item: Item) -> Result<Option<Partial>, CloseReason> {
    let (start, chunk, last) = match item {
        Item::FirstText(b) => (Some(true), b, false),
        Item::FirstBinary(b) => (Some(false), b, false),
        Item::Continue(b) => (None, b, false),
        Item::Last(b) => (None, b, true),
    };
    let order = || reason(CloseCode::Protocol, "unexpected continuation frame");
    match (start, partial.as_mut()) {
        (Some(text), None) => {
            *partial = Some(Partial {
                text,
                bytes: Vec::new(),
            });
        }
        (None, Some(_)) => {}
        _ => return Err(order()),
    }
    let p = partial.as_mut().ok_or_else(order)?;
    if p.bytes.len() + chunk.len() > MAX_MESSAGE_BYTES {
        *partial = None;
        return Err(too_big());
    }
    p.bytes.extend_from_slice(&chunk);
    Ok(if last { partial.take() } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::web::Bytes;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn fragments_are_joined_into_one_message() {
        let mut p = None;
        assert!(
            continuation(&mut p, Item::FirstText(b("he")))
                .unwrap()
                .is_none()
        );
        assert!(
            continuation(&mut p, Item::Continue(b("ll")))
                .unwrap()
                .is_none()
        );
        let done = continuation(&mut p, Item::Last(b("o"))).unwrap().unwrap();
        assert!(done.text);
        assert_eq!(done.bytes, b"hello");
        assert!(p.is_none());
    }

    #[test]
    fn fragments_out_of_order_are_a_protocol_error() {
        let mut p = None;
        let err = continuation(&mut p, Item::Continue(b("x"))).unwrap_err();
        assert_eq!(err.code, CloseCode::Protocol);
        continuation(&mut p, Item::FirstBinary(b("x"))).unwrap();
        let err = continuation(&mut p, Item::FirstBinary(b("x"))).unwrap_err();
        assert_eq!(err.code, CloseCode::Protocol);
    }

    #[test]
    fn fragments_count_toward_the_message_limit() {
        let mut p = None;
        let half = Bytes::from(vec![0u8; MAX_MESSAGE_BYTES / 2]);
        continuation(&mut p, Item::FirstBinary(half.clone())).unwrap();
        continuation(&mut p, Item::Continue(half)).unwrap();
        let err = continuation(&mut p, Item::Last(b("!"))).unwrap_err();
        assert_eq!(err.code, CloseCode::Size);
        assert!(p.is_none());
    }

    #[test]
    fn read_errors_map_to_close_codes() {
        let code = |e| protocol_close(e).map(|r| u16::from(r.code));
        assert_eq!(code(ProtocolError::Overflow), Some(1009));
        assert_eq!(code(ProtocolError::BadOpCode), Some(1002));
        let utf8 = std::io::Error::new(std::io::ErrorKind::InvalidData, "utf-8");
        assert_eq!(code(ProtocolError::Io(utf8)), Some(1007));
        // actix-http's own text for RSV bits.
        let rsv = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "Received a frame with non-zero reserved bits",
        );
        assert_eq!(code(ProtocolError::Io(rsv)), Some(1002));
        let bad = protocol_close(ProtocolError::BadOpCode).unwrap();
        assert!(bad.description.unwrap().contains("close code"));
        let reset = std::io::Error::other("reset");
        assert_eq!(code(ProtocolError::Io(reset)), None);
    }
}
