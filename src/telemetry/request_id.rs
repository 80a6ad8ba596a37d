//! Request ids: reuse the one the platform's router sent when it is well
//! formed, otherwise make a UUID v4. Ids end up in log lines, so anything
//! outside a small safe character set is replaced, never escaped.

use std::fmt;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header we echo on every response (Heroku's name, the de facto one).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id we accept. Heroku's router passes ids of 20 to 200 characters.
pub const MAX_LEN: usize = 200;

/// Headers an id is taken from, in order: Heroku (and most proxies, nginx's
/// `$request_id` included), then Railway.
const ID_HEADERS: [HeaderName; 2] = [
    X_REQUEST_ID,
    HeaderName::from_static("x-railway-request-id"),
];

/// The id of one request, kept in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The incoming id when one is well formed, otherwise a new one. Cloud
    /// Run sends no request id; its trace id (from `traceparent` or
    /// `X-Cloud-Trace-Context`) identifies the request there.
    pub fn from_headers(headers: &HeaderMap) -> RequestId {
        for name in &ID_HEADERS {
            if let Some(v) = headers.get(name)
                && is_well_formed(v.as_bytes())
            {
                return RequestId(v.clone());
            }
        }
        if let Some(trace) = crate::telemetry::trace::trace_id(headers)
            && let Ok(v) = HeaderValue::from_str(trace)
        {
            return RequestId(v);
        }
        RequestId::generate()
    }

    /// A new random id (UUID v4).
    pub fn generate() -> RequestId {
        let mut buf = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        RequestId(HeaderValue::from_str(text).expect("a UUID is a valid header value"))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from checked ASCII.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// 1 to 200 characters of `[A-Za-z0-9._~+/=:-]`: what routers generate
/// (UUIDs, base64), and nothing that could break a log line or a JSON string.
pub fn is_well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._~+/=:-".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_well_formed_id_is_reused() {
        let id = RequestId::from_headers(&headers(&[("x-request-id", "abc-123_XYZ")]));
        assert_eq!(id.as_str(), "abc-123_XYZ");
        let id = RequestId::from_headers(&headers(&[("x-railway-request-id", "rw-42")]));
        assert_eq!(id.as_str(), "rw-42");
    }

    #[test]
    fn bad_ids_are_replaced() {
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [
            "",
            "has space",
            "quote\"",
            "new\nline",
            "ünï",
            long.as_str(),
        ] {
            let Ok(v) = HeaderValue::from_bytes(bad.as_bytes()) else {
                continue; // not even a header value: the HTTP parser stops it
            };
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, v);
            let id = RequestId::from_headers(&h);
            assert_ne!(id.as_str(), bad);
            assert_eq!(id.as_str().len(), 36, "a UUID replaces {bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_unique_uuids() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.as_str()).is_ok());
    }
}
