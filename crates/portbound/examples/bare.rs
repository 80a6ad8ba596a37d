//! The baseline of `bench/run`: bare actix-web answering what portbound
//! answers on `GET /` and `POST /api/v1/echo`, with no middleware, no
//! logging and no drain sequence. Its echo handler does the work
//! portbound's does (the same parsing, the same rules, the same response
//! body), so the benchmark's POST ratio measures the stack, not a different
//! handler. Everything portbound costs on top of actix is measured against
//! this.
//!
//! ```sh
//! cargo build --release --example bare
//! PORT=5001 WEB_CONCURRENCY=2 target/release/examples/bare
//! ```
//!
//! `PORT` (default 5000), `HOST` (default `::`, every interface, as
//! portbound; `0.0.0.0` when the machine has no IPv6) and `WEB_CONCURRENCY`
//! (default: the CPUs available) are read like portbound reads them. actix's
//! own signal handling stops it (SIGTERM graceful, SIGINT at once).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::fmt;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    version: &'static str,
}

async fn root() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "healthy",
        service: "portbound",
        version: env!("CARGO_PKG_VERSION"),
    })
}

// The echo as portbound's src/app/echo.rs writes it: an object with one
// known field, 1 to 1000 characters without control characters, and the
// request's metadata borrowed into the body.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoFields {
    message: String,
}

struct EchoRequest {
    message: String,
}

impl<'de> Deserialize<'de> for EchoRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = EchoFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EchoFields, A::Error> {
                EchoFields::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectOnly)
            .map(|f| EchoRequest { message: f.message })
    }
}

#[derive(Serialize)]
struct EchoResponse<'a> {
    message: String,
    length: usize,
    request: RequestMeta<'a>,
}

#[derive(Serialize)]
struct RequestMeta<'a> {
    method: &'a str,
    path: &'a str,
    request_id: Option<&'a str>,
    client: Option<IpAddr>,
    scheme: &'static str,
}

async fn echo(req: HttpRequest, body: web::Json<EchoRequest>) -> HttpResponse {
    let message = body.into_inner().message;
    let length = message.chars().count();
    let valid = (1..=1000).contains(&length)
        && !message
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    if !valid {
        return HttpResponse::UnprocessableEntity().finish();
    }
    HttpResponse::Ok().json(EchoResponse {
        message,
        length,
        request: RequestMeta {
            method: req.method().as_str(),
            path: req.path(),
            request_id: None,
            client: req.peer_addr().map(|a| a.ip()),
            scheme: "http",
        },
    })
}

fn env_or<T: std::str::FromStr>(name: &str, default: impl FnOnce() -> T) -> io::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("{name}={v:?} is not valid"))),
        _ => Ok(default()),
    }
}

#[actix_web::main]
async fn main() -> io::Result<()> {
    let port: u16 = env_or("PORT", || 5000)?;
    let host_set = std::env::var_os("HOST").is_some_and(|h| !h.is_empty());
    let host: IpAddr = env_or("HOST", || IpAddr::V6(Ipv6Addr::UNSPECIFIED))?;
    let workers: usize = env_or("WEB_CONCURRENCY", || {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    })?;

    let app = || {
        App::new()
            .route("/", web::get().to(root))
            .route("/api/v1/echo", web::post().to(echo))
    };
    // On Linux `[::]` also accepts IPv4 (net.ipv6.bindv6only is 0 by default).
    let server = match HttpServer::new(app)
        .workers(workers)
        .bind(SocketAddr::new(host, port))
    {
        Ok(server) => server,
        Err(_) if !host_set && host.is_ipv6() => HttpServer::new(app)
            .workers(workers)
            .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))?,
        Err(e) => return Err(e),
    };
    let addrs = server.addrs();
    let listening: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    println!("listening on {}", listening.join(", "));
    server.run().await
}
