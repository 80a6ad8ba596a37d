//! `POST /api/v1/echo`: a small validated JSON endpoint that shows how input
//! validation and errors work.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portbound::error::{ApiError, FieldError, ProblemDetails};
use portbound::routes::Route;
use portbound::telemetry::RequestInfo;

/// `POST /api/v1/echo`, as `app::routes()` lists it.
pub const ROUTE: Route = Route {
    path: "/api/v1/echo",
    allow: "POST",
    mount: |r| r.post(echo),
};

/// The longest message accepted, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// What to echo.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)] // read by ToSchema: "additionalProperties": false
#[schema(example = json!({"message": "hello, port binding"}))]
pub struct EchoRequest {
    /// 1 to 1000 characters; no control characters other than tab, line feed
    /// and carriage return (a NUL or an escape sequence has no place in a
    /// message that ends up in logs and terminals).
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"
    )]
    pub message: String,
}

/// The fields as serde reads them: unknown and duplicate keys are errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoFields {
    message: String,
}

/// Only a JSON object is accepted: serde's derive would also read a struct
/// from an array (`["hi"]`), which the schema does not allow.
impl<'de> Deserialize<'de> for EchoRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = EchoFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a JSON object such as {"message": "hello"}"#)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EchoFields, A::Error> {
                EchoFields::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectOnly)
            .map(|f| EchoRequest { message: f.message })
    }
}

/// The message, with what the service saw of the request.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "message": "hello, port binding",
    "length": 19,
    "request": {"method": "POST", "path": "/api/v1/echo",
        "request_id": "0b6c8a5e-4f0e-4a4b-9d37-6a3f0c2e8b11", "client": "203.0.113.7", "scheme": "https"}
}))]
pub struct EchoResponse<'a> {
    /// The message, as received.
    pub message: String,
    /// The message's length in characters.
    pub length: usize,
    /// What the service saw of the request.
    pub request: RequestMeta<'a>,
}

/// What the service saw of the request.
// Borrowed from the request and serialized straight into the body: no copies.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestMeta<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path, without the query.
    pub path: &'a str,
    /// The request id, also sent back as `X-Request-ID`.
    pub request_id: Option<&'a str>,
    /// The client's address: the peer's, or the one a trusted proxy
    /// forwarded (`TRUSTED_PROXIES`).
    #[schema(value_type = Option<String>)]
    pub client: Option<IpAddr>,
    /// `http` or `https`, as the client used it (a trusted proxy's word).
    pub scheme: &'static str,
}

/// Echoes a message back.
///
/// The message, with what the server saw of the request: its method, path,
/// request id and the client address (a trusted proxy's word for it).
#[utoipa::path(
    post,
    path = "/api/v1/echo",
    tag = "api",
    request_body(content = EchoRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The message, echoed", body = EchoResponse),
        (status = 400, description = "The body is not JSON", body = ProblemDetails,
            content_type = "application/problem+json"),
        // 405, 408, 413, 415 and 500 come from openapi::SharedErrors.
        (status = 422, description = "The JSON does not match the schema or breaks a rule",
            body = ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn echo(
    req: HttpRequest,
    body: web::Json<EchoRequest>,
) -> Result<HttpResponse, ApiError> {
    let message = body.into_inner().message;
    let length = message.chars().count();
    let rule = if !(1..=MAX_MESSAGE_CHARS).contains(&length) {
        Some("must be 1 to 1000 characters long")
    } else if message
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        Some("must not contain control characters other than tab and line breaks")
    } else {
        None
    };
    if let Some(rule) = rule {
        return Err(ApiError::unprocessable(
            format!("the request body is not valid: message {rule}"),
            vec![FieldError {
                pointer: Cow::Borrowed("/message"),
                detail: Cow::Borrowed(rule),
            }],
        ));
    }
    let ext = req.extensions();
    let info = ext.get::<RequestInfo>();
    Ok(HttpResponse::Ok().json(EchoResponse {
        message,
        length,
        request: RequestMeta {
            method: req.method().as_str(),
            path: req.path(),
            request_id: info.map(|i| i.id.as_str()),
            client: info.and_then(|i| i.client.ip),
            scheme: info.map_or("http", |i| i.client.scheme().as_str()),
        },
    }))
}
