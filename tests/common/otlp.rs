//! A real OTLP/HTTP receiver for the tests: `POST /v1/traces`, each
//! protobuf body decoded as `ExportTraceServiceRequest` with the protocol's
//! own definitions (the `opentelemetry-proto` crate), not a hand-written
//! parser.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
pub struct Got {
    pub service: String,
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub attributes: BTreeMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// What the receiver keeps: the spans, or the export's header lines.
pub type Kept<T> = Arc<Mutex<Vec<T>>>;

/// An OTLP/HTTP receiver on a port the OS picks: POST /v1/traces, protobuf
/// bodies decoded as ExportTraceServiceRequest. Returns its port, the
/// spans, and the headers of the exports.
pub fn receiver() -> (u16, Kept<Got>, Kept<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let headers = Arc::new(Mutex::new(Vec::new()));
    let (s, h) = (spans.clone(), headers.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let (s, h) = (s.clone(), h.clone());
            std::thread::spawn(move || serve(conn, &s, &h));
        }
    });
    (port, spans, headers)
}

fn serve(conn: std::net::TcpStream, spans: &Mutex<Vec<Got>>, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_owned();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
            seen.lock().unwrap().push(h.to_ascii_lowercase());
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert!(line.starts_with("POST /v1/traces "), "{line}");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for rs in request.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.lock().unwrap().push(Got {
                        service: service.clone(),
                        name: span.name.clone(),
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(&a.value)))
                            .collect(),
                    });
                }
            }
        }
        writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    }
}

/// SpanKind in the protocol: 2 server, 3 client.
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
