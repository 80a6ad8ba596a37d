//! What operators see of each request: its id, its place in the in-flight
//! count the drain waits on, and an error body every client can parse.
//!
//! One middleware does all the per-request work, so a request pays for one
//! layer, not a stack of them.

pub mod client_addr;
pub mod logging;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod protocol_errors;
pub mod request_id;
pub mod trace;

use std::future::{Future, Ready, ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::InternalError;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, Method, StatusCode, Version};
use actix_web::{Error, HttpMessage, HttpResponse};

use crate::error::ApiError;
use crate::state::{AppState, DrainState, RequestSettings};

pub use client_addr::ClientInfo;
pub use request_id::RequestId;

/// The most header bytes (names and values) a request may carry. actix
/// itself refuses a head over 128 KiB (and more than 96 headers) with a 431
/// that has no request id; common proxies stop at 8 to 32 KiB, and so do we,
/// with a problem body that has one.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The request has a body to read. HTTP/1 says so without a lookup: actix
/// gives a request without `Content-Length` or `Transfer-Encoding` no
/// payload. HTTP/2 gives every request a payload stream, so there the
/// headers decide.
fn has_body(req: &ServiceRequest) -> bool {
    match req.version() {
        Version::HTTP_2 | Version::HTTP_3 => {
            let headers = req.headers();
            headers.contains_key(header::TRANSFER_ENCODING)
                || headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() != b"0")
        }
        _ => !matches!(req.parts().1, Payload::None),
    }
}

/// The longest request target answered; a longer one gets 414 (RFC 9110
/// §15.5.15). nginx's default header buffer is 8 KiB too. (A target over
/// the `http` crate's 65,534-byte cap never reaches us: actix answers it
/// with a 400 of its own.)
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The methods some route of this server answers, for `OPTIONS *`.
const SERVER_METHODS: &str = "GET, HEAD, POST, OPTIONS";

/// Requests refused before routing, with the status the RFCs give.
fn refusal(req: &ServiceRequest) -> Option<ApiError> {
    let method = req.method();
    if !is_standard_method(method) {
        // RFC 9110 §9.1: a method the server does not recognise SHOULD get
        // 501. (A standard one a route does not take keeps its 405.)
        return Some(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "the request method is not one this server implements",
        ));
    }
    if method == Method::CONNECT {
        // RFC 9110 §9.3.6: CONNECT asks for a tunnel, a proxy's job.
        return Some(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT asks for a tunnel, and this is an origin server, not a proxy",
        ));
    }
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    if let Some(host) = req.headers().get(header::HOST)
        && !is_valid_host(host.as_bytes())
    {
        // RFC 9112 §3.2: a Host that is not a valid uri-host [":" port]
        // MUST get 400.
        return Some(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the Host header is not a valid host[:port]",
        ));
    }
    if header_bytes(req.headers()) > MAX_HEADER_BYTES {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are larger than {MAX_HEADER_BYTES} bytes in all"),
        ));
    }
    None
}

/// The nine methods of RFC 9110 §9, PATCH (RFC 5789) and QUERY (the IETF
/// HTTP working group's safe method with a body, which API clients and
/// test suites such as schemathesis already send): a route that does not
/// take one of these answers 405, anything else is 501.
fn is_standard_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::CONNECT
            | Method::OPTIONS
            | Method::TRACE
            | Method::PATCH
    ) || m.as_str() == "QUERY"
}

/// `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2): a reg-name
/// (possibly empty: RFC 9110 §7.2 has clients send an empty Host for a URI
/// without authority), an IPv4 address, or a bracketed IPv6 literal (with an
/// RFC 6874 zone) or IPvFuture; then an optional `:` and digits (the port
/// may be empty). No userinfo, no path, no spaces.
pub fn is_valid_host(host: &[u8]) -> bool {
    let (name_ok, port) = if let Some(rest) = host.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        (is_ip_literal(&rest[..end]), &rest[end + 1..])
    } else {
        let (name, port) = match host.iter().position(|&b| b == b':') {
            Some(i) => (&host[..i], &host[i..]),
            None => (host, &b""[..]),
        };
        (is_reg_name(name), port)
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    name_ok && port_ok
}

/// RFC 3986 `unreserved / sub-delims`.
fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// `*( unreserved / pct-encoded / sub-delims )`; an IPv4 address is one.
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                let hex = name.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if is_unreserved_or_sub_delim(b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// What sits between `[` and `]`: an IPv6 address with an optional
/// `%25zone` (RFC 6874), or IPvFuture (`v` HEXDIG+ `.` ...).
fn is_ip_literal(literal: &[u8]) -> bool {
    if let Some(rest) = literal
        .strip_prefix(b"v")
        .or_else(|| literal.strip_prefix(b"V"))
    {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| is_unreserved_or_sub_delim(b) || b == b':');
    }
    let (address, zone) = match literal.windows(3).position(|w| w == b"%25") {
        Some(i) => (&literal[..i], Some(&literal[i + 3..])),
        None => (literal, None),
    };
    let zone_ok = zone.is_none_or(|z| !z.is_empty() && is_reg_name(z));
    zone_ok && std::str::from_utf8(address).is_ok_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
}

fn header_bytes(headers: &header::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum()
}

/// A response the middleware gives without calling the handler (a refusal,
/// `OPTIONS *`, the https redirect), with the headers every response has.
/// It is counted and logged like any other, a scanner's refusals included.
fn answer<S, B: MessageBody + 'static>(
    req: ServiceRequest,
    res: HttpResponse,
    ctx: &Answering<'_>,
) -> RequestContextFuture<S, B> {
    let mut res = req.into_response(res).map_into_right_body();
    let headers = res.headers_mut();
    headers.insert(request_id::X_REQUEST_ID, ctx.id.header().clone());
    headers.insert(NOSNIFF.0, NOSNIFF.1);
    headers.insert(REFERRER.0, REFERRER.1);
    headers.insert(CSP_API.0, CSP_API.1);
    account(
        &res,
        ctx.id,
        ctx.origin,
        &ctx.client,
        ctx.start,
        ctx.settings,
        None,
    );
    RequestContextFuture::answered(res)
}

/// What `answer` needs of the request it answers.
struct Answering<'a> {
    id: &'a RequestId,
    origin: request_id::Origin,
    client: ClientInfo,
    start: Instant,
    settings: &'a RequestSettings,
}

/// Paths platforms and load balancers poll: never redirected to https, and
/// logged at debug rather than info (they would drown the log).
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The per-request middleware. See the module documentation.
#[derive(Debug, Clone)]
pub struct RequestContext {
    drain: DrainState,
    settings: Arc<RequestSettings>,
}

impl RequestContext {
    /// The middleware for the app whose state this is.
    pub fn new(state: &AppState) -> Self {
        RequestContext {
            drain: state.drain.clone(),
            settings: state.settings.clone(),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequestContext
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequestContextService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        logging::start_worker_flusher();
        ready(Ok(RequestContextService {
            service,
            shared: Rc::new(Shared {
                in_flight: self.drain.counter(),
                drain: self.drain.clone(),
                settings: self.settings.clone(),
            }),
        }))
    }
}

/// The middleware wrapped around one worker's app.
pub struct RequestContextService<S> {
    service: S,
    shared: Rc<Shared>,
}

/// What the requests of one worker share. A request holds it through a
/// non-atomic reference count.
struct Shared {
    in_flight: crate::state::InFlightCounter,
    drain: DrainState,
    settings: Arc<RequestSettings>,
}

/// What the middleware keeps about a connection (HTTP/1), from actix's
/// `on_connect`.
#[derive(Debug, Default)]
pub struct ConnectionState {
    /// A request or response on this connection said `Connection: close`.
    /// actix-http 3.19 goes on decoding pipelined requests after one that
    /// asked to close, and keeps the connection open if the last says
    /// keep-alive; RFC 9112 §9.6 says the server MUST NOT process them and
    /// must close.
    closing: std::cell::Cell<bool>,
}

/// What the middleware learned about a request: its one extension, which
/// handlers read.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The request id, also sent back as `X-Request-ID`.
    pub id: RequestId,
    /// The client's address and scheme.
    pub client: ClientInfo,
    /// When the request arrived: where its `REQUEST_TIMEOUT` budget began.
    pub start: Instant,
}

/// Security headers on every response.
const NOSNIFF: (HeaderName, HeaderValue) = (
    header::X_CONTENT_TYPE_OPTIONS,
    HeaderValue::from_static("nosniff"),
);
const REFERRER: (HeaderName, HeaderValue) = (
    header::REFERRER_POLICY,
    HeaderValue::from_static("no-referrer"),
);
/// The API answers JSON that no browser should render or frame.
const CSP_API: (HeaderName, HeaderValue) = (
    header::CONTENT_SECURITY_POLICY,
    HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
);
/// Swagger UI: same-origin scripts, inline styles and data: images, nothing
/// else.
const CSP_DOCS: (HeaderName, HeaderValue) = (
    header::CONTENT_SECURITY_POLICY,
    HeaderValue::from_static(
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
);
/// Layers of the request middleware that `bench/profile` switches off one at
/// a time, to price each. Built only with the `bench-layers` feature, and
/// set with `PORTBOUND_BENCH_OFF` (comma-separated names below); without the
/// feature every check is a constant `false` and compiles away.
pub(crate) mod layers {
    /// Reading or making the request id (a fixed id is used instead).
    pub const REQUEST_ID: u8 = 1;
    /// Resolving the client through trusted proxies (the peer is used).
    pub const CLIENT: u8 = 2;
    /// The response headers: X-Request-ID, the security headers, no-store.
    pub const HEADERS: u8 = 4;
    /// The panic guard and the request id as the log's context.
    pub const GUARD: u8 = 8;
    /// Following `Connection: close` on the connection (RFC 9112 §9.6).
    pub const CONNECTION: u8 = 16;
    /// The overload limit's admission (`crate::overload`): every request
    /// runs at once, as a probe does.
    pub const OVERLOAD: u8 = 32;

    #[cfg(feature = "bench-layers")]
    pub fn off(layer: u8) -> bool {
        use std::sync::OnceLock;
        const NAMES: [(&str, u8); 6] = [
            ("request-id", REQUEST_ID),
            ("client", CLIENT),
            ("headers", HEADERS),
            ("guard", GUARD),
            ("connection", CONNECTION),
            ("overload", OVERLOAD),
        ];
        static OFF: OnceLock<u8> = OnceLock::new();
        let off = OFF.get_or_init(|| {
            let value = std::env::var("PORTBOUND_BENCH_OFF").unwrap_or_default();
            let mut off = 0;
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match NAMES.iter().find(|(n, _)| *n == name) {
                    Some((_, bit)) => off |= bit,
                    None => {
                        eprintln!(
                            "PORTBOUND_BENCH_OFF={value:?}: {name:?} is not a layer; \
                             expected a comma-separated list of request-id, client, \
                             headers, guard, connection, overload"
                        );
                        std::process::exit(2);
                    }
                }
            }
            off
        });
        off & layer != 0
    }

    #[cfg(not(feature = "bench-layers"))]
    #[inline(always)]
    pub const fn off(_layer: u8) -> bool {
        false
    }
}

/// API, probe and error responses describe one moment of this instance
/// (readiness, an echo, the info document): without this, RFC 9111 §4.2.2
/// lets a cache apply heuristic freshness to them.
const NO_STORE: (HeaderName, HeaderValue) =
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
/// Sent only when FORCE_HTTPS is on: a year, as browsers' preload lists ask.
const HSTS: (HeaderName, HeaderValue) = (
    header::STRICT_TRANSPORT_SECURITY,
    HeaderValue::from_static("max-age=31536000; includeSubDomains"),
);

impl<S, B> Service<ServiceRequest> for RequestContextService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = RequestContextFuture<S::Future, B>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let start = Instant::now();
        let settings = &self.shared.settings;
        let (id, origin) = if layers::off(layers::REQUEST_ID) {
            (RequestId::unset(), request_id::Origin::Generated)
        } else {
            RequestId::with_origin(req.headers())
        };
        let client = if layers::off(layers::CLIENT) {
            client_addr::resolve(req.peer_addr(), req.headers(), &[])
        } else {
            client_addr::resolve(req.peer_addr(), req.headers(), &settings.trusted_proxies)
        };

        let ctx = Answering {
            id: &id,
            origin,
            client,
            start,
            settings,
        };
        // HTTP/1 only: HTTP/2 streams share the connection but not its fate,
        // and `Connection` means nothing there (RFC 9113 §8.2.2).
        if req.version() < Version::HTTP_2
            && !layers::off(layers::CONNECTION)
            && let Some(conn) = req.conn_data::<ConnectionState>()
        {
            if conn.closing.get() {
                // RFC 9110 §15.5.20: 421 tells the client it MAY retry the
                // request, idempotent or not, on another connection; nothing
                // of it was processed here.
                let mut res = ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "this request came after one that closed the connection \
                     (Connection: close) and was not processed; send it on a new connection",
                )
                .to_response(Some(id.as_str()));
                res.head_mut().set_connection_type(ConnectionType::Close);
                return answer(req, res, &ctx);
            }
            if req.head().connection_type() == ConnectionType::Close {
                conn.closing.set(true);
            }
        }
        if let Some(problem) = refusal(&req) {
            return answer(req, problem.to_response(Some(id.as_str())), &ctx);
        }
        if req.method() == Method::OPTIONS && req.uri().path() == "*" {
            // RFC 9110 §9.3.7: OPTIONS * asks about the server as a whole.
            let res = HttpResponse::Ok()
                .insert_header((header::ALLOW, SERVER_METHODS))
                .insert_header(NO_STORE)
                .finish();
            return answer(req, res, &ctx);
        }

        if settings.force_https
            && client.forwarded_scheme == Some(client_addr::Scheme::Http)
            && !is_probe(req.path())
        {
            let location = https_location(&req);
            let res = HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, location))
                .finish();
            return answer(req, res, &ctx);
        }

        req.extensions_mut().insert(RequestInfo {
            id: id.clone(),
            client,
            start,
        });
        // REQUEST_TIMEOUT bounds what actix does not: reading a body. A
        // request without one is bounded by actix's 5 s head timeout and our
        // handlers' own speed, and is spared the cost of arming a timer.
        let timeout = settings.request_timeout;
        let deadline =
            (has_body(&req) && !timeout.is_zero()).then(|| actix_rt::time::sleep(timeout));
        let docs = req.path().starts_with("/docs");
        #[cfg(feature = "otel")]
        let span = otel::server_span(req.headers(), req.method().as_str());
        #[cfg(feature = "otel")]
        if let Some(span) = &span {
            req.extensions_mut().insert(span.clone());
        }
        self.shared.in_flight.enter();
        let finish = Finish {
            shared: self.shared.clone(),
            id,
            origin,
            client,
            start,
            timeout,
            docs,
            #[cfg(feature = "otel")]
            span,
        };
        RequestContextFuture {
            state: State::Serving {
                inner: self.service.call(req),
                deadline,
                finish: Some(finish),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// One request through the middleware: the handler's future, made the
    /// current request for logging while polled, with its panics caught and
    /// its body's deadline kept; then the response finished.
    pub struct RequestContextFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // Answered without calling the handler (431, the https redirect).
        Answered {
            res: Option<ServiceResponse<EitherBody<B>>>,
        },
        Serving {
            #[pin]
            inner: F,
            // REQUEST_TIMEOUT, armed for requests with a body only.
            #[pin]
            deadline: Option<actix_rt::time::Sleep>,
            finish: Option<Finish>,
        },
    }
}

impl<F, B> RequestContextFuture<F, B> {
    fn answered(res: ServiceResponse<EitherBody<B>>) -> Self {
        RequestContextFuture {
            state: State::Answered { res: Some(res) },
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "a request future polled after completion";

impl<F, B> Future for RequestContextFuture<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody + 'static,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Answered { res } => {
                Poll::Ready(Ok(res.take().expect(POLLED_AFTER_COMPLETION)))
            }
            StateProj::Serving {
                inner,
                deadline,
                finish,
            } => {
                let f = finish.as_ref().expect(POLLED_AFTER_COMPLETION);
                let id = &f.id;
                let polled = if layers::off(layers::GUARD) {
                    Ok(inner.poll(cx))
                } else {
                    let poll = || {
                        logging::with_request_id(id.header(), || {
                            std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)))
                        })
                    };
                    // The span is the parent of what the handler does.
                    #[cfg(feature = "otel")]
                    let poll = || otel::with_span(f.span.as_ref(), poll);
                    poll()
                };
                let outcome = match polled {
                    Ok(Poll::Ready(out)) => Outcome::Done(out),
                    Err(payload) => Outcome::Panicked(panic_message(&payload)),
                    Ok(Poll::Pending) => {
                        let expired = deadline.as_pin_mut().is_some_and(|d| d.poll(cx).is_ready());
                        if !expired {
                            return Poll::Pending;
                        }
                        Outcome::TimedOut
                    }
                };
                let finish = finish.take().expect(POLLED_AFTER_COMPLETION);
                Poll::Ready(finish.complete(outcome))
            }
        }
    }
}

/// How a handler's future ended.
enum Outcome<B> {
    Done(Result<ServiceResponse<B>, Error>),
    /// The handler panicked (with this message).
    Panicked(String),
    /// REQUEST_TIMEOUT passed first; the request went with the handler's
    /// future.
    TimedOut,
}

/// What a request needs once its handler has answered. The request counts
/// as in flight until this is dropped: when the response is finished, or
/// when the client goes away and actix drops the request's future.
struct Finish {
    shared: Rc<Shared>,
    id: RequestId,
    origin: request_id::Origin,
    client: ClientInfo,
    start: Instant,
    timeout: Duration,
    docs: bool,
    /// The request's server span, when traces are exported.
    #[cfg(feature = "otel")]
    span: Option<otel::ServerSpan>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.shared.in_flight.leave();
    }
}

impl Finish {
    /// The response the client gets: a problem body for errors, our
    /// headers, then the metrics and the access line.
    fn complete<B: MessageBody + 'static>(
        self,
        outcome: Outcome<B>,
    ) -> Result<ServiceResponse<EitherBody<B>>, Error> {
        let id = &self.id;
        let mut res = match outcome {
            Outcome::Done(Ok(res)) => render_problem(res, id),
            Outcome::Done(Err(err)) => {
                // Only a middleware inside this one returns `Err` (handler
                // errors arrive as responses).
                let problem = problem_for(&err, err.as_response_error().status_code());
                return Err(answered_without_request(problem, id, err.to_string()));
            }
            Outcome::Panicked(panic) => {
                // actix alone would drop the connection: the client would
                // see a reset and nothing would say why.
                log::error!("request {id} failed: the handler panicked: {panic}");
                let problem = ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR);
                return Err(answered_without_request(
                    problem,
                    id,
                    "handler panicked".into(),
                ));
            }
            Outcome::TimedOut => {
                let secs = self.timeout.as_secs();
                // Most often a client sending its body too slowly: its
                // mistake, so never above info (a flood of slow clients must
                // not fill the log with warnings).
                log::info!("request {id} timed out after {secs} s (REQUEST_TIMEOUT)");
                let problem = ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request took longer than {secs} s to complete"),
                );
                return Err(answered_without_request(
                    problem,
                    id,
                    "request timeout".into(),
                ));
            }
        };

        let settings = &self.shared.settings;
        let draining = self.shared.drain.is_draining();
        let head = res.response_mut().head_mut();
        let headers = &mut head.headers;
        if !layers::off(layers::HEADERS) {
            headers.insert(request_id::X_REQUEST_ID, id.header().clone());
            headers.insert(NOSNIFF.0, NOSNIFF.1);
            headers.insert(REFERRER.0, REFERRER.1);
            let csp = if self.docs { &CSP_DOCS } else { &CSP_API };
            headers.insert(csp.0.clone(), csp.1.clone());
            if !self.docs && !headers.contains_key(header::CACHE_CONTROL) {
                headers.insert(NO_STORE.0, NO_STORE.1);
            }
        }
        if settings.force_https {
            headers.insert(HSTS.0, HSTS.1);
        }
        if draining && head.status != StatusCode::SWITCHING_PROTOCOLS {
            // Ask the client (or the router) to open its next connection
            // elsewhere: we are about to go away. (Not on an upgrade: the
            // WebSocket closes itself with 1001 on drain.)
            head.set_connection_type(ConnectionType::Close);
            let req = res.request();
            if req.version() < Version::HTTP_2
                && let Some(conn) = req.conn_data::<ConnectionState>()
            {
                conn.closing.set(true);
            }
        }

        #[cfg(feature = "otel")]
        let ids = self.span.as_ref().map(|span| {
            let req = res.request();
            let route = req.match_pattern();
            otel::end_server_span(
                span,
                req.method().as_str(),
                route.as_deref(),
                res.status().as_u16(),
            );
            (span.trace_id.as_str(), span.span_id.as_str())
        });
        #[cfg(not(feature = "otel"))]
        let ids = None;
        account(
            &res,
            id,
            self.origin,
            &self.client,
            self.start,
            settings,
            ids,
        );
        if draining {
            // Lines written during the drain must not wait for a timer
            // that may never fire again.
            logging::flush_thread();
        }
        Ok(res)
    }
}

/// The request's metric and access line.
fn account<B: MessageBody>(
    res: &ServiceResponse<B>,
    id: &RequestId,
    origin: request_id::Origin,
    client: &ClientInfo,
    start: Instant,
    settings: &RequestSettings,
    // The server span's (trace id, span id), when traces are exported.
    span: Option<(&str, &str)>,
) {
    let elapsed = start.elapsed();
    let status = res.status().as_u16();
    let req = res.request();
    if settings.metrics {
        let route = metrics::route_label(req.match_name());
        metrics::record(route, metrics::method_label(req.method()), status, elapsed);
    }
    let probe = is_probe(req.path());
    if logging::access_enabled(probe) {
        let bytes = match res.response().body().size() {
            BodySize::Sized(n) => Some(n),
            BodySize::None => Some(0),
            BodySize::Stream => None,
        };
        let trace_id = match (span, origin) {
            // The span continues the caller's trace, or starts one.
            (Some((trace_id, _)), _) => Some(trace_id),
            // No trace header held a valid id when the id was made.
            (None, request_id::Origin::Generated) => None,
            (None, request_id::Origin::Trace) => Some(id.as_str()),
            (None, request_id::Origin::Header) => trace::trace_id(req.headers()),
        };
        logging::access(&logging::AccessRecord {
            time: SystemTime::now(),
            request_id: id.as_str(),
            client: client.ip,
            method: req.method().as_str(),
            path: req.path(),
            query: req.query_string(),
            version: version_str(req.version()),
            status,
            bytes,
            latency: elapsed,
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
            trace_id,
            span_id: span.map(|(_, span_id)| span_id),
            probe,
        });
    }
}

/// A problem response for a request that is no longer at hand (its future
/// panicked, timed out or failed outside a handler): actix sends the response
/// carried by the error. The connection is closed after it, since the request
/// body may not have been read.
fn answered_without_request(problem: ApiError, id: &RequestId, cause: String) -> Error {
    let mut res = problem.to_response(Some(id.as_str()));
    res.head_mut().set_connection_type(ConnectionType::Close);
    let headers = res.headers_mut();
    headers.insert(request_id::X_REQUEST_ID, id.header().clone());
    headers.insert(NOSNIFF.0, NOSNIFF.1);
    InternalError::from_response(cause, res).into()
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `https://` + the host the client asked for + the path and query.
fn https_location(req: &ServiceRequest) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    format!("https://{host}{path}")
}

/// The text of a panic, for the log only.
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// Makes every error response `application/problem+json` with the request id,
/// whoever produced it: our handlers (`ApiError`), actix's extractors and
/// routing (404, 405, ...), or anything else. JSON bodies that are part of the
/// API (the 503 of `/readyz`) are left as they are.
fn render_problem<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
    id: &RequestId,
) -> ServiceResponse<EitherBody<B>> {
    let status = res.status();
    if status.as_u16() < 400 {
        return res.map_into_left_body();
    }
    let problem = match res.response().error() {
        Some(err) => problem_for(err, status),
        None if is_json(&res) => return res.map_into_left_body(),
        None => ApiError::from_status(status),
    };
    let (req, old) = res.into_parts();
    let mut new = problem.to_response(Some(id.as_str()));
    // Keep what the original said about the connection and the resource.
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = old.headers().get(&name) {
            new.headers_mut().insert(name, v.clone());
        }
    }
    ServiceResponse::new(req, new).map_into_right_body()
}

/// Our own errors say what they mean; anything else gets the generic problem
/// for its status, and its cause goes to the log, not to the client.
fn problem_for(err: &Error, status: StatusCode) -> ApiError {
    match err.as_error::<ApiError>() {
        Some(api) => api.clone(),
        None => {
            log_cause(status, err);
            ApiError::from_status(status)
        }
    }
}

fn is_json<B>(res: &ServiceResponse<B>) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/") && ct.contains("json"))
}

fn log_cause(status: StatusCode, err: &Error) {
    if status.is_server_error() {
        log::error!("request failed with {status}: {err}");
    } else {
        log::debug!("request rejected with {status}: {err}");
    }
}
