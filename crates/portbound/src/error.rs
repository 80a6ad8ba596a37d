//! The one error type handlers return, rendered as `application/problem+json`
//! (RFC 9457), and the renderer the middleware uses for every other error
//! response (actix's own 404, 405, 413, 415, ...).
//!
//! A problem tells the client what was wrong with *its* request. Causes that
//! are ours (a panic, an I/O error) stay in the log; the client gets the
//! request id to quote instead.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "the request body is not valid: message must be 1 to 1000 characters long",
    "request_id": "0b6c8a5e-4f0e-4a4b-9d37-6a3f0c2e8b11",
    "errors": [{"pointer": "/message", "detail": "must be 1 to 1000 characters long"}]
}))]
pub struct ProblemDetails {
    /// A URI for the kind of problem; `about:blank` means "see the status".
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    /// A short summary of the kind of problem.
    pub title: Cow<'static, str>,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a human.
    pub detail: Cow<'static, str>,
    /// The id of the request; quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Field-level details, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field in a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// A JSON Pointer (RFC 6901) to the field.
    #[schema(example = "/message")]
    pub pointer: Cow<'static, str>,
    /// What is wrong with it.
    #[schema(example = "must be 1 to 1000 characters long")]
    pub detail: Cow<'static, str>,
}

/// The error handlers return. It keeps only what the client may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, also the problem's `status`.
    pub status: StatusCode,
    /// The problem's `detail`: what went wrong, for the client.
    pub detail: Cow<'static, str>,
    /// The problem's `errors`: one entry per field that broke a rule.
    pub errors: Vec<FieldError>,
    /// For 405: the methods the resource does allow.
    pub allow: Option<&'static str>,
    /// For 503 and 429: seconds after which a retry may succeed (sent as
    /// `Retry-After`).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with this status and detail.
    pub fn new(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            errors: Vec::new(),
            allow: None,
            retry_after: None,
        }
    }

    /// 503: a dependency is unavailable for now; retry after `seconds`.
    pub fn unavailable(detail: impl Into<Cow<'static, str>>, seconds: u32) -> Self {
        ApiError {
            retry_after: Some(seconds),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }

    /// 400: the body is not JSON at all.
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 422: well-formed JSON that breaks the schema or a rule.
    pub fn unprocessable(detail: impl Into<Cow<'static, str>>, errors: Vec<FieldError>) -> Self {
        ApiError {
            errors,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
        }
    }

    /// 404: no such path, or no such item.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no resource at this path; the API is described at /api-docs/openapi.json",
        )
    }

    /// 405, with the methods the resource takes (sent as `Allow`).
    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("this resource allows only {allow}"),
            )
        }
    }

    /// 415: the body is not sent as `application/json`.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be sent as Content-Type: application/json",
        )
    }

    /// 413: the body is over `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// The generic problem for a status nobody described: a client error gets
    /// the status's meaning; a server error never says more than that.
    pub fn from_status(status: StatusCode) -> Self {
        let detail: Cow<'static, str> = if status.is_server_error() {
            "the server could not complete the request; quote the request id when reporting it"
                .into()
        } else {
            status
                .canonical_reason()
                .unwrap_or("the request was not accepted")
                .into()
        };
        Self::new(status, detail)
    }

    /// The body a client sees.
    pub fn to_problem(&self, request_id: Option<&str>) -> ProblemDetails {
        ProblemDetails {
            kind: Cow::Borrowed("about:blank"),
            title: Cow::Borrowed(self.status.canonical_reason().unwrap_or("Error")),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            request_id: request_id.map(str::to_owned),
            errors: self.errors.clone(),
        }
    }

    /// The full response, with the request id when one is known.
    pub fn to_response(&self, request_id: Option<&str>) -> HttpResponse {
        let body = serde_json::to_vec(&self.to_problem(request_id))
            .unwrap_or_else(|_| b"{\"type\":\"about:blank\"}".to_vec());
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        // An error is about this one request: no cache may keep it and
        // serve it to the next (RFC 9111 §5.2.2.5).
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Some(allow) = self.allow {
            res.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        if let Some(seconds) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, HeaderValue::from(seconds)));
        }
        res.body(body)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    /// Rendered without the request id here; the request middleware renders
    /// it again with the id (it sees this error through `Response::error`).
    fn error_response(&self) -> HttpResponse {
        self.to_response(None)
    }
}

/// Maps actix's JSON extractor errors onto problems with the right status:
/// wrong content type is 415 (actix says 400), too large is 413, a body that
/// is not JSON is 400 and JSON of the wrong shape is 422.
pub fn json_error(err: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    use serde_json::error::Category;
    match err {
        E::ContentType => ApiError::unsupported_media_type(),
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => {
            ApiError::payload_too_large(*limit)
        }
        E::Deserialize(e) => match e.classify() {
            Category::Data => ApiError::unprocessable(
                format!(
                    "the request body does not match the schema: {}",
                    strip_position(e)
                ),
                Vec::new(),
            ),
            Category::Eof if e.line() == 1 && e.column() == 0 => {
                ApiError::bad_request("the request body is empty; send a JSON object")
            }
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            }
        },
        E::Payload(_) => ApiError::bad_request("the request body could not be read"),
        // Serialize errors are ours, not the client's.
        _ => ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// serde's data errors end with " at line 1 column 12"; the position is noise
/// next to the field name.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_has_the_rfc_9457_members() {
        let p = ApiError::method_not_allowed("GET, HEAD").to_problem(Some("abc"));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Method Not Allowed");
        assert_eq!(v["status"], 405);
        assert_eq!(v["request_id"], "abc");
        assert!(v.get("errors").is_none());
    }

    #[test]
    fn server_errors_reveal_nothing() {
        let p = ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR).to_problem(None);
        assert!(p.detail.contains("request id"));
    }

    #[test]
    fn json_errors_get_their_own_status() {
        use actix_web::error::JsonPayloadError as E;
        let de = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_err();
        assert_eq!(json_error(&E::ContentType).status, 415);
        assert_eq!(json_error(&E::Overflow { limit: 10 }).status, 413);
        assert_eq!(json_error(&E::Deserialize(de("{"))).status, 400);
        assert_eq!(json_error(&E::Deserialize(de(""))).status, 400);
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            a: u8,
        }
        let data = serde_json::from_str::<T>(r#"{"a":"x"}"#).unwrap_err();
        let e = json_error(&E::Deserialize(data));
        assert_eq!(e.status, 422);
        assert!(!e.detail.contains("line 1"), "{}", e.detail);
    }
}
