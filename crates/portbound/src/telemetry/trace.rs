//! Trace context from Cloud Run and W3C-compliant proxies: `traceparent`
//! (`00-TRACEID-SPANID-FLAGS`) and Google's `X-Cloud-Trace-Context`
//! (`TRACEID/SPANID;o=1`).

use actix_web::http::header::{HeaderMap, HeaderName};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_CLOUD_TRACE_CONTEXT: HeaderName = HeaderName::from_static("x-cloud-trace-context");

/// A header [`trace_id`] reads.
pub fn is_trace_header(name: &HeaderName) -> bool {
    *name == TRACEPARENT || *name == X_CLOUD_TRACE_CONTEXT
}

/// The 32-hex-digit trace id, if a trace header carries a valid one.
pub fn trace_id(headers: &HeaderMap) -> Option<&str> {
    if let Some(tp) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        let mut parts = tp.split('-');
        if let (Some(_version), Some(id)) = (parts.next(), parts.next())
            && is_trace_id(id)
        {
            return Some(id);
        }
    }
    let cloud = headers
        .get(X_CLOUD_TRACE_CONTEXT)
        .and_then(|v| v.to_str().ok())?;
    let id = cloud.split('/').next()?;
    is_trace_id(id).then_some(id)
}

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        h
    }

    #[test]
    fn reads_both_trace_headers() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id(&with(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )),
            Some(id)
        );
        assert_eq!(
            trace_id(&with(
                "x-cloud-trace-context",
                "4bf92f3577b34da6a3ce929d0e0e4736/123;o=1"
            )),
            Some(id)
        );
    }

    #[test]
    fn rejects_malformed_trace_ids() {
        assert_eq!(
            trace_id(&with("traceparent", "00-xyz-00f067aa0ba902b7-01")),
            None
        );
        assert_eq!(
            trace_id(&with(
                "x-cloud-trace-context",
                "00000000000000000000000000000000/1"
            )),
            None
        );
        assert_eq!(trace_id(&HeaderMap::new()), None);
    }
}
