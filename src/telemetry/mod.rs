//! What operators see of each request: its id, its place in the in-flight
//! count the drain waits on, and an error body every client can parse.
//!
//! One middleware does all the per-request work, so a request pays for one
//! layer, not a stack of them.

pub mod logging;
pub mod request_id;
pub mod trace;

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::InternalError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{Error, HttpMessage};

use crate::error::ApiError;
use crate::state::DrainState;

pub use request_id::RequestId;

/// The per-request middleware. See the module documentation.
#[derive(Debug, Clone)]
pub struct RequestContext {
    drain: DrainState,
}

impl RequestContext {
    pub fn new(drain: DrainState) -> Self {
        RequestContext { drain }
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
        ready(Ok(RequestContextService {
            service: Rc::new(service),
            drain: self.drain.clone(),
        }))
    }
}

pub struct RequestContextService<S> {
    service: Rc<S>,
    drain: DrainState,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<S, B> Service<ServiceRequest> for RequestContextService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let guard = self.drain.track();
        let drain = self.drain.clone();
        let id = RequestId::from_headers(req.headers());
        req.extensions_mut().insert(id.clone());
        let fut = self.service.call(req);

        Box::pin(async move {
            let mut res = match fut.await {
                Ok(res) => render_problem(res, &id),
                Err(err) => {
                    // Only a middleware inside this one returns `Err` (handler
                    // errors arrive as responses); actix renders this one.
                    let problem = problem_for(&err, err.as_response_error().status_code());
                    let mut res = problem.to_response(Some(id.as_str()));
                    res.headers_mut()
                        .insert(request_id::X_REQUEST_ID, id.header_value());
                    return Err(InternalError::from_response(err.to_string(), res).into());
                }
            };
            let head = res.response_mut().head_mut();
            head.headers
                .insert(request_id::X_REQUEST_ID, id.header_value());
            if drain.is_draining() {
                // Ask the client (or the router) to open its next connection
                // elsewhere: we are about to go away.
                head.set_connection_type(ConnectionType::Close);
            }
            drop(guard);
            Ok(res)
        })
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

/// The `Content-Type` of problem bodies, as a header value.
pub fn problem_content_type() -> HeaderValue {
    HeaderValue::from_static(crate::error::PROBLEM_JSON)
}
