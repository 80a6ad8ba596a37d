//! The baseline of `bench/run`: bare actix-web answering what portbound
//! answers on `GET /` and `POST /api/v1/echo`, with no middleware, no
//! logging, no validation and no drain sequence. Everything portbound costs
//! on top of actix is measured against this.
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

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
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

#[derive(Deserialize)]
struct EchoRequest {
    message: String,
}

#[derive(Serialize)]
struct EchoResponse {
    message: String,
    length: usize,
    request: RequestMeta,
}

#[derive(Serialize)]
struct RequestMeta {
    method: String,
    path: String,
}

async fn echo(req: HttpRequest, body: web::Json<EchoRequest>) -> HttpResponse {
    let message = body.into_inner().message;
    let length = message.chars().count();
    HttpResponse::Ok().json(EchoResponse {
        message,
        length,
        request: RequestMeta {
            method: req.method().to_string(),
            path: req.path().to_owned(),
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
