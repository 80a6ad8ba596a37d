//! Request ids: reuse the one the platform's router sent when it is well
//! formed, otherwise make a UUID v4. Ids end up in log lines, so anything
//! outside a small safe character set is replaced, never escaped.

use std::cell::RefCell;
use std::fmt;

use bytes::BytesMut;

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

/// Up to this many request headers, [`RequestId::with_origin`] looks for the
/// id and trace headers in one pass rather than by four hashed lookups.
const SCAN_UP_TO: usize = 8;

/// How many ids one arena allocation holds.
const ARENA_IDS: usize = 128;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The id of one request. Cloning it bumps a reference count: the text is
/// kept once, in a buffer shared with the ids made before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

/// Where a request's id came from, which tells the access log whether the
/// trace headers still need reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A router's id header: the trace headers were not read.
    Header,
    /// The trace id (Cloud Run): the id is the trace id.
    Trace,
    /// Made here: no trace header carries a valid trace id.
    Generated,
}

impl RequestId {
    /// The incoming id when one is well formed, otherwise a new one. Cloud
    /// Run sends no request id; its trace id (from `traceparent` or
    /// `X-Cloud-Trace-Context`) identifies the request there.
    pub fn from_headers(headers: &HeaderMap) -> RequestId {
        Self::with_origin(headers).0
    }

    /// As [`RequestId::from_headers`], and where the id came from.
    pub fn with_origin(headers: &HeaderMap) -> (RequestId, Origin) {
        // Most requests carry none of the four headers: one pass over a
        // short header list says so for less than hashing four names.
        if headers.len_keys() <= SCAN_UP_TO
            && !headers
                .keys()
                .any(|n| ID_HEADERS.contains(n) || crate::telemetry::trace::is_trace_header(n))
        {
            return (RequestId::generate(), Origin::Generated);
        }
        for name in &ID_HEADERS {
            if let Some(v) = headers.get(name)
                && is_well_formed(v.as_bytes())
            {
                // A slice of the request's own buffer: no copy.
                return (RequestId(v.clone()), Origin::Header);
            }
        }
        if let Some(trace) = crate::telemetry::trace::trace_id(headers)
            && let Ok(v) = HeaderValue::from_str(trace)
        {
            return (RequestId(v), Origin::Trace);
        }
        (RequestId::generate(), Origin::Generated)
    }

    /// A fixed id, for `bench/profile`'s row without request ids.
    pub(crate) fn unset() -> RequestId {
        RequestId(HeaderValue::from_static("-"))
    }

    /// A new random id (UUID v4).
    pub fn generate() -> RequestId {
        let mut text = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut text)
            .as_bytes();
        let bytes = ARENA.with(|arena| {
            let mut arena = arena.borrow_mut();
            // Ids are carved from a per-thread buffer: one allocation per
            // ARENA_IDS ids instead of two per id (the copy, then the shared
            // header it is promoted to when first cloned). `reserve` reuses
            // the buffer in place once every id carved from it is gone.
            if arena.capacity() < text.len() {
                arena.reserve(ARENA_IDS * text.len());
            }
            arena.extend_from_slice(text);
            arena.split().freeze()
        });
        RequestId(HeaderValue::from_maybe_shared(bytes).expect("a UUID is a valid header value"))
    }

    /// A copy in an allocation of its own, for an id kept long (a
    /// WebSocket session's): a clone would keep alive the buffer it was cut
    /// from (the ids made next to it, or the request's read buffer).
    pub fn detached(&self) -> RequestId {
        RequestId(
            HeaderValue::from_bytes(self.0.as_bytes())
                .expect("a request id is a valid header value"),
        )
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from checked ASCII.
        self.0.to_str().unwrap_or("-")
    }

    /// The id as a header value, ready to send.
    pub fn header(&self) -> &HeaderValue {
        &self.0
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
    fn ids_carved_from_a_reused_buffer_stay_intact() {
        // Enough ids to span several per-thread buffers, half of them kept:
        // each keeps its text, and no two are alike. (Reuse of an emptied
        // buffer is the next test's.)
        let mut kept = Vec::new();
        for i in 0..ARENA_IDS * 5 {
            let id = RequestId::generate();
            if i % 2 == 0 {
                kept.push((id.as_str().to_owned(), id));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (text, id) in &kept {
            assert_eq!(id.as_str(), text, "an id changed after it was made");
            assert!(uuid::Uuid::parse_str(text).is_ok(), "{text}");
            assert!(seen.insert(text.clone()), "{text} was made twice");
        }
    }

    #[test]
    fn the_buffer_is_reused_once_every_id_cut_from_it_is_gone() {
        // Each test runs on a thread of its own: the arena starts empty.
        let block: Vec<RequestId> = (0..ARENA_IDS).map(|_| RequestId::generate()).collect();
        let start = block[0].as_str().as_ptr();
        let kept = block[1].detached();
        drop(block);
        let next = RequestId::generate();
        assert_eq!(
            next.as_str().as_ptr(),
            start,
            "the emptied buffer was not reused"
        );
        assert!(uuid::Uuid::parse_str(next.as_str()).is_ok());
        assert!(
            uuid::Uuid::parse_str(kept.as_str()).is_ok(),
            "a detached id lost its text"
        );
        assert_ne!(kept.as_str().as_ptr(), start);
    }

    #[test]
    fn generated_ids_are_unique_uuids() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.as_str()).is_ok());
    }
}
