//! Assembles the `HttpServer`: the app (the runtime's routes and middleware
//! around the service's own), workers, keep-alive, the service's readiness
//! checks and background tasks, and the drain that platforms expect on
//! SIGTERM and SIGINT.
//!
//! actix's own signal handling is off: it treats SIGINT as a forced stop
//! (Fly.io's default `kill_signal` is SIGINT) and knows nothing of readiness.
//! `serve` takes the signals over and runs the sequence platforms expect.

use std::io;
use std::net::SocketAddr;
#[cfg(feature = "postgres")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{KeepAlive, header};
use actix_web::middleware::Condition;
use actix_web::{App, Error, HttpResponse, HttpServer, web};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::Config;
use crate::error::{ApiError, json_error};
use crate::listener::Listeners;
use crate::service::{DrainHook, ReadinessCheck, Service, StopSignal, Task};
use crate::state::AppState;
use crate::telemetry::RequestContext;

/// The application: the runtime's routes and the service's, docs, error
/// bodies, and the request middleware. `HttpServer` builds one per worker;
/// tests build it directly too.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let settings = state.settings.clone();
    let json = web::JsonConfig::default()
        .limit(settings.max_body_bytes)
        .error_handler(|err, _req| json_error(&err).into());
    let payload = web::PayloadConfig::default().limit(settings.max_body_bytes);
    let query = web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request(format!("the query string is not valid: {err}")).into()
    });
    App::new()
        .app_data(web::Data::new(state.clone()))
        .app_data(json)
        .app_data(payload)
        .app_data(query)
        .wrap(Condition::new(
            !settings.cors_allowed_origins.is_empty(),
            cors(&settings.cors_allowed_origins),
        ))
        // Inside the request context, so a refusal gets its request id,
        // access line and problem body; outside CORS and the routes, so it
        // costs none of their work.
        .wrap(crate::overload::Overload(
            state.overload.clone(),
            settings.max_body_bytes,
            state.rate_limit.clone(),
        ))
        // Outermost: every response, CORS preflights included, gets its
        // request id, access line and problem body.
        .wrap(RequestContext::new(&state))
        .configure(|cfg| crate::routes::configure(cfg, settings.test_routes))
        .configure(|cfg| state.app.configure(cfg))
        .configure(|cfg| {
            if settings.docs_enabled {
                crate::openapi::configure_docs(cfg, &state);
            }
        })
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::not_found())
        }))
}

/// CORS for the configured origins (only mounted when there are some).
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "OPTIONS"])
        .allowed_headers([header::CONTENT_TYPE, header::ACCEPT])
        .allowed_header(crate::telemetry::request_id::X_REQUEST_ID)
        .expose_headers([crate::telemetry::request_id::X_REQUEST_ID])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin().send_wildcard()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// The metrics listener's app: `/metrics` and nothing else.
fn metrics_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    use crate::telemetry::request_id::{RequestId, X_REQUEST_ID};
    use actix_web::HttpMessage;
    use actix_web::dev::Service;
    // The problem a request gets, with the id the middleware below gave it.
    fn problem(req: &actix_web::HttpRequest, err: ApiError) -> HttpResponse {
        let id = req.extensions().get::<RequestId>().cloned();
        err.to_response(id.as_ref().map(RequestId::as_str))
    }
    App::new()
        .app_data(web::Data::new(state))
        // Every answer of this listener carries X-Request-ID, like the main
        // one's: the caller's id when it sent a valid one, else a new one.
        .wrap_fn(|req, srv| {
            let (id, _) = RequestId::with_origin(req.headers());
            req.extensions_mut().insert(id.clone());
            let res = srv.call(req);
            async move {
                let mut res = res.await?;
                res.headers_mut().insert(X_REQUEST_ID, id.header().clone());
                Ok(res)
            }
        })
        .service(
            web::resource("/metrics")
                // HEAD answers like GET, without the body (RFC 9110 §9.3.2).
                .route(web::get().to(scrape))
                .route(web::head().to(scrape))
                .default_service(web::to(|req: actix_web::HttpRequest| async move {
                    problem(&req, ApiError::method_not_allowed("GET, HEAD"))
                })),
        )
        .default_service(web::to(|req: actix_web::HttpRequest| async move {
            problem(
                &req,
                ApiError::new(
                    actix_web::http::StatusCode::NOT_FOUND,
                    "this listener serves only /metrics",
                ),
            )
        }))
}

async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::metrics::render(&state))
}

/// A server that is bound and ready to run.
pub struct Server {
    /// The server, which runs once awaited.
    pub server: actix_web::dev::Server,
    /// The state every worker shares.
    pub state: AppState,
    /// The TCP addresses served (the real ports, also with `PORT=0`).
    pub addrs: Vec<SocketAddr>,
    /// Where every listener came from, for the startup log.
    pub origins: Vec<String>,
    /// The Prometheus listener, when `METRICS_PORT` is set.
    pub metrics: Option<(actix_web::dev::Server, SocketAddr)>,
    /// Unix socket files to remove once the server has stopped.
    pub socket_files: Vec<crate::listener::SocketFile>,
    /// The sockets this process bound itself, shut for new connections when
    /// the listener closes.
    pub owned_sockets: Vec<socket2::Socket>,
    /// The service's background tasks, started by `serve`.
    tasks: Vec<Task>,
    /// The service's drain hooks, run by `serve` at the end of the drain.
    hooks: Vec<DrainHook>,
}

impl Server {
    /// A handle that pauses, resumes or stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }
}

/// Builds the `HttpServer` for `service` on listeners that are already bound
/// (and the metrics listener, if configured), and starts the probes of the
/// backing services and readiness checks. The server runs once awaited (or
/// spawned); `serve` also starts the service's tasks and runs its drain.
pub fn build(config: &Config, listeners: Listeners, service: Service) -> io::Result<Server> {
    #[cfg(feature = "postgres")]
    let (service, database) = with_database(config, service)?;
    // The upstreams' limits, breakers and budgets, shared by the workers
    // (each keeps its own client).
    #[cfg(feature = "upstreams")]
    let service = service.app_data(actix_web::web::Data::new(crate::upstream::Registry::new(
        &config.services,
    )));
    let addrs = listeners.tcp_addrs()?;
    let mut shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    for l in &listeners.unix {
        if let Some(p) = l
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        {
            shown.push(format!("unix:{p}"));
        }
    }
    let state = AppState::new(
        config,
        shown,
        addrs.iter().map(SocketAddr::port).collect(),
        service.parts(),
    );
    if config.metrics_port.is_some() {
        crate::telemetry::metrics::install();
    }
    let factory_state = state.clone();
    let keep_alive = if config.keep_alive.is_zero() {
        KeepAlive::Disabled
    } else {
        KeepAlive::Timeout(config.keep_alive)
    };
    let mut http = HttpServer::new(move || app(factory_state.clone()))
        .workers(config.workers)
        .keep_alive(keep_alive)
        // actix's default, said out loud: a client gets 5 s to send the
        // request head (a slowloris sending one byte at a time is cut off);
        // the body and the whole request are bounded by REQUEST_TIMEOUT in
        // the request middleware.
        .client_request_timeout(Duration::from_secs(5))
        // A backstop only: `serve` ends the drain itself at SHUTDOWN_TIMEOUT
        // so it can count what it cuts; actix checks once a second.
        .shutdown_timeout(config.shutdown_timeout.as_secs() + 1)
        // Per-connection state for the request middleware (RFC 9112 §9.6:
        // nothing after a `Connection: close` is processed).
        .on_connect(|_, ext| {
            ext.insert(crate::telemetry::ConnectionState::default());
        })
        .disable_signals();
    let Listeners {
        tcp,
        unix,
        socket_files,
        origins,
        owned,
    } = listeners;
    for listener in tcp {
        http = if config.http2 {
            // HTTP/2 with prior knowledge (Cloud Run's end-to-end HTTP/2,
            // gRPC-style clients) and HTTP/1.1, told apart by the preface.
            http.listen_auto_h2c(listener)?
        } else {
            http.listen(listener)?
        };
    }
    for listener in unix {
        http = http.listen_uds(listener)?;
    }

    let metrics = match config.metrics_port {
        None => None,
        Some(port) => {
            let listener = crate::listener::bind_host_port(config, port)
                .map_err(|e| io::Error::other(format!("METRICS_PORT: {e}")))?;
            let addr = listener.local_addr()?;
            let metrics_state = state.clone();
            let server = HttpServer::new(move || metrics_app(metrics_state.clone()))
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)?
                .run();
            Some((server, addr))
        }
    };
    #[cfg(feature = "postgres")]
    if let Some(db) = database {
        // Readiness by a query through the pool, not a TCP connect.
        let query = service.readiness_query;
        state.probes.replace_probe(
            "DATABASE_URL",
            Arc::new(move |t| db.ping_blocking(t, query)),
        );
    }
    #[cfg(feature = "upstreams")]
    for service in &config.services {
        // An https:// upstream is probed by a GET over TLS, as an
        // http:// one is in plain text.
        if let Some(probe) = crate::upstream::https_probe(service) {
            state.probes.replace_probe(&service.variable, probe);
        }
    }
    state.probes.spawn(config.service_probe_interval);
    let Service {
        checks,
        tasks,
        hooks,
        ..
    } = service;
    spawn_checks(state.probes.clone(), checks, config.service_probe_interval);
    Ok(Server {
        server: http.run(),
        state,
        addrs,
        origins,
        metrics,
        socket_files,
        owned_sockets: owned,
        tasks,
        hooks,
    })
}

/// With the `postgres` feature and a PostgreSQL `DATABASE_URL`: opens the
/// pool (no connection yet), shares it with every worker as
/// `web::Data<Database>`, and closes it at the end of the drain, after the
/// service's own hooks (so they may still use it).
#[cfg(feature = "postgres")]
fn with_database(
    config: &Config,
    service: Service,
) -> io::Result<(Service, Option<crate::database::Database>)> {
    let Some(settings) = &config.database else {
        return Ok((service, None));
    };
    let db =
        crate::database::Database::open(settings, config.platform).map_err(io::Error::other)?;
    let closing = db.clone();
    let service = service
        .app_data(actix_web::web::Data::new(db.clone()))
        .on_drain("database", move || async move {
            closing.close().await;
            Ok::<(), crate::BoxError>(())
        });
    Ok((service, Some(db)))
}

/// Runs the service's readiness checks every `interval` on this thread (the
/// one that runs the server), each bounded by the probe timeout, and
/// records their results where `/readyz` reads them.
fn spawn_checks(probes: crate::backing::Probes, checks: Vec<ReadinessCheck>, interval: Duration) {
    if checks.is_empty() {
        return;
    }
    let timeout = crate::backing::probe_timeout(interval);
    actix_rt::spawn(async move {
        loop {
            for (index, check) in checks.iter().enumerate() {
                let started = Instant::now();
                // A task of its own, so that a check that panics is reported
                // down rather than ending every check's loop.
                let mut run = actix_rt::spawn((check.run)());
                let result = match actix_rt::time::timeout(timeout, &mut run).await {
                    Ok(Ok(Ok(()))) => Ok(started.elapsed()),
                    Ok(Ok(Err(e))) => Err(e.to_string()),
                    Ok(Err(_)) => Err("the check panicked".to_owned()),
                    Err(_) => {
                        run.abort();
                        Err(format!("no answer within {} ms", timeout.as_millis()))
                    }
                };
                probes.record_check(index, result);
            }
            actix_rt::time::sleep(interval).await;
        }
    });
}

/// Time for the accept loop to take what the kernel queued before the
/// listener's gate closed, and again between pausing the accept loop and the
/// graceful stop, for connections accepted just before the pause to send
/// their first request.
const ACCEPT_SETTLE: Duration = Duration::from_millis(100);

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request finished within the drain budget.
    Drained,
    /// The budget ran out; this many requests were cut.
    TimedOut {
        /// Requests still in flight when the budget ran out.
        cut: usize,
    },
    /// A second signal arrived during the drain: stopped at once.
    Forced {
        /// The second signal's number.
        signal: i32,
    },
    /// The server stopped without a signal (it should not).
    Stopped,
}

impl Shutdown {
    /// The process exit code: 0 for an orderly stop, 128 + signal for a
    /// forced one (the shell's convention).
    pub fn exit_code(self) -> i32 {
        match self {
            Shutdown::Forced { signal } => 128 + signal,
            _ => 0,
        }
    }
}

/// SIGTERM and SIGINT, both meaning "drain and stop".
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn install() -> io::Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next stop signal; returns its name and number.
    async fn next(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.term.recv() => ("SIGTERM", 15),
            _ = self.int.recv() => ("SIGINT", 2),
        }
    }
}

/// Runs the server until a stop signal, then drains:
///
/// 1. the signal arrives: `/readyz` answers 503 and responses carry
///    `Connection: close`, but the listener still accepts;
/// 2. after `SHUTDOWN_DELAY` the listener closes and idle connections go;
/// 3. in-flight requests and the service's background tasks get until
///    `SHUTDOWN_TIMEOUT` to finish (the tasks were told at step 1);
/// 4. the service's drain hooks run in what is left of that budget;
/// 5. a second signal at any point stops at once.
pub async fn serve(config: &Config, server: Server) -> io::Result<Shutdown> {
    let mut signals = StopSignals::install()?;
    let handle = server.handle();
    let tasks = start_tasks(server.tasks, &server.state.drain);
    // Scrapes keep working through the drain; the metrics listener stops last.
    let metrics = server.metrics.map(|(m, _)| {
        let handle = m.handle();
        actix_rt::spawn(m);
        handle
    });
    let hooks_reserve = if server.hooks.is_empty() {
        Duration::ZERO
    } else {
        hooks_reserve(config.shutdown_timeout)
    };
    let result = drain_on_signal(
        config,
        server.server,
        handle,
        &server.state,
        &server.owned_sockets,
        &mut signals,
        hooks_reserve,
    )
    .await;
    let result = match result {
        Ok((shutdown @ (Shutdown::Drained | Shutdown::TimedOut { .. }), deadline)) => {
            tokio::select! {
                () = finish_background(tasks, server.hooks, deadline) => Ok(shutdown),
                (name, signal) = signals.next() => Ok(forced(name, signal, &server.state.drain)),
            }
        }
        other => other.map(|(shutdown, _)| shutdown),
    };
    if let Some(m) = metrics {
        drop(m.stop(false));
    }
    // Unix socket files go with the server (the drop removes them).
    drop(server.socket_files);
    result
}

/// The part of SHUTDOWN_TIMEOUT kept for drain hooks when requests take all
/// the rest (a quarter, at most 5 s): requests that finish sooner leave the
/// hooks more.
fn hooks_reserve(shutdown_timeout: Duration) -> Duration {
    (shutdown_timeout / 4).min(Duration::from_secs(5))
}

/// A background task as it runs: its name and its handle.
struct RunningTask {
    name: String,
    handle: tokio::task::JoinHandle<()>,
}

/// Starts each task on this thread with its stop signal; each logs how it
/// ended when it ends.
fn start_tasks(tasks: Vec<Task>, drain: &crate::state::DrainState) -> Vec<RunningTask> {
    tasks
        .into_iter()
        .map(|task| {
            let name = task.name;
            let run = (task.run)(StopSignal::new(drain.clone()));
            let label = name.clone();
            let drain = drain.clone();
            let handle = actix_rt::spawn(async move {
                match run.await {
                    Ok(()) if drain.is_draining() => log::info!("task {label} stopped"),
                    // A task that returns while the service serves is
                    // reported; the service goes on serving.
                    Ok(()) => log::warn!("task {label} finished before any stop signal"),
                    Err(e) => log::error!("task {label} failed: {e}"),
                }
            });
            log::info!("task {name} started");
            RunningTask { name, handle }
        })
        .collect()
}

/// Waits for the tasks until `deadline` and cuts those still running, then
/// runs the drain hooks one by one in what is left.
async fn finish_background(tasks: Vec<RunningTask>, hooks: Vec<DrainHook>, deadline: Instant) {
    let deadline = tokio::time::Instant::from_std(deadline);
    for task in tasks {
        let RunningTask { name, mut handle } = task;
        match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(Ok(())) => {}
            // The panic hook has logged the panic itself.
            Ok(Err(e)) if e.is_panic() => log::error!("task {name} panicked"),
            Ok(Err(_)) => {}
            Err(_) => {
                handle.abort();
                log::warn!("task {name} cut: still running when SHUTDOWN_TIMEOUT ran out");
            }
        }
    }
    for hook in hooks {
        let name = hook.name;
        if tokio::time::Instant::now() >= deadline {
            log::warn!("drain hook {name} skipped: SHUTDOWN_TIMEOUT ran out");
            continue;
        }
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, (hook.run)()).await {
            Ok(Ok(())) => log::info!(
                "drain hook {name} done ({} ms)",
                started.elapsed().as_millis()
            ),
            Ok(Err(e)) => log::error!("drain hook {name} failed: {e}"),
            Err(_) => log::warn!("drain hook {name} cut: SHUTDOWN_TIMEOUT ran out"),
        }
    }
}

/// How the requests' drain ended, and when the drain's budget ends (now,
/// when there is nothing left to wait for).
async fn drain_on_signal(
    config: &Config,
    server: actix_web::dev::Server,
    handle: ServerHandle,
    state: &AppState,
    owned_sockets: &[socket2::Socket],
    signals: &mut StopSignals,
    hooks_reserve: Duration,
) -> io::Result<(Shutdown, Instant)> {
    let drain = state.drain.clone();
    let mut running = std::pin::pin!(server);

    let (name, _) = tokio::select! {
        res = &mut running => { res?; return Ok((Shutdown::Stopped, Instant::now())) }
        sig = signals.next() => sig,
    };
    drain.begin();
    let started = Instant::now();
    log::info!(
        "{name} received: draining (readiness 503 now; listener closes in {} s; in-flight \
         requests get {} s; {} in flight; send the signal again to stop at once)",
        config.shutdown_delay.as_secs(),
        (config.shutdown_timeout - hooks_reserve).as_secs_f32(),
        drain.in_flight()
    );

    if !config.shutdown_delay.is_zero() {
        tokio::select! {
            res = &mut running => { res?; return Ok((Shutdown::Stopped, Instant::now())) }
            _ = actix_rt::time::sleep(config.shutdown_delay) => {}
            (name, signal) = signals.next() => return Ok((forced(name, signal, &drain), Instant::now())),
        }
    }

    // Stop accepting first, then let connections accepted a moment ago send
    // their request before the graceful stop: actix closes a connection that
    // has not sent a request yet as idle, and one accepted just before the
    // stop would otherwise be closed with no answer. When the listening
    // socket is shared (systemd, a handover), the kernel queue now feeds the
    // other process instead.
    //
    // On our own sockets that takes two steps. The gate closes (no new
    // handshake completes) while actix still accepts what the kernel has
    // queued; then the socket is shut, and new connections are refused (a
    // proxy retries those elsewhere, whatever the method). Shutting it at
    // once would reset the queued ones, requests and all.
    crate::listener::close_gate(owned_sockets);
    tokio::select! {
        res = &mut running => { res?; return Ok((Shutdown::Stopped, Instant::now())) }
        _ = actix_rt::time::sleep(ACCEPT_SETTLE) => {}
        (name, signal) = signals.next() => return Ok((forced(name, signal, &drain), Instant::now())),
    }
    crate::telemetry::protocol_errors::listeners_shut();
    crate::listener::stop_accepting(owned_sockets);
    // The command is processed by the server future, so poll it meanwhile.
    let paused = handle.pause();
    tokio::select! {
        res = &mut running => { res?; return Ok((Shutdown::Stopped, Instant::now())) }
        _ = paused => {}
        (name, signal) = signals.next() => return Ok((forced(name, signal, &drain), Instant::now())),
    }
    tokio::select! {
        res = &mut running => { res?; return Ok((Shutdown::Stopped, Instant::now())) }
        _ = actix_rt::time::sleep(ACCEPT_SETTLE) => {}
        (name, signal) = signals.next() => return Ok((forced(name, signal, &drain), Instant::now())),
    }
    log::info!(
        "listener closed; waiting for {} in-flight request(s)",
        drain.in_flight()
    );
    // Sends the command now; completion is observed through `running`.
    drop(handle.stop(true));
    // Requests get the budget less what is kept for the drain hooks; the
    // tasks and hooks get until the end of it.
    let deadline = Instant::now() + config.shutdown_timeout;
    tokio::select! {
        res = &mut running => {
            res?;
            log::info!("drain complete: every request finished ({} ms)", started.elapsed().as_millis());
            Ok((Shutdown::Drained, deadline))
        }
        _ = actix_rt::time::sleep(config.shutdown_timeout - hooks_reserve) => {
            // actix notices finished workers only once a second.
            let cut = drain.in_flight();
            if cut == 0 {
                log::info!("drain complete: every request finished ({} ms)", started.elapsed().as_millis());
                Ok((Shutdown::Drained, deadline))
            } else {
                log::warn!(
                    "drain timed out after {} s (SHUTDOWN_TIMEOUT): cutting {cut} in-flight request(s)",
                    (config.shutdown_timeout - hooks_reserve).as_secs_f32()
                );
                Ok((Shutdown::TimedOut { cut }, deadline))
            }
        }
        (name, signal) = signals.next() => Ok((forced(name, signal, &drain), Instant::now())),
    }
    // Returning drops the server future, which stops every worker at once.
}

fn forced(name: &str, signal: i32, drain: &crate::state::DrainState) -> Shutdown {
    log::warn!(
        "second stop signal ({name}): stopping at once, cutting {} in-flight request(s)",
        drain.in_flight()
    );
    Shutdown::Forced { signal }
}

/// The one startup line operators look for, and the links a developer clicks.
pub fn log_startup(config: &Config, server: &Server) {
    let addrs = &server.addrs;
    let listening: Vec<String> = server
        .state
        .facts
        .listeners
        .iter()
        .map(|l| {
            if l.starts_with("unix:") {
                l.clone()
            } else {
                format!("http://{l}")
            }
        })
        .collect();
    log::info!(
        "{} {} on {} listening on {} with {} worker(s); platform {}; keep-alive {} s; drain {} s \
         after a {} s delay",
        server.state.facts.name,
        server.state.facts.version,
        crate::RUNTIME,
        listening.join(", "),
        config.workers,
        config.platform,
        config.keep_alive.as_secs(),
        config.shutdown_timeout.as_secs(),
        config.shutdown_delay.as_secs(),
    );
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    if let Some(addr) = addrs.first() {
        let host = match addr.ip() {
            ip if ip.is_unspecified() || ip.is_loopback() => "localhost".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let base = format!("http://{host}:{}", addr.port());
        if config.docs_enabled {
            log::info!(
                "docs: {base}/docs/  health: {base}/healthz  spec: {base}/api-docs/openapi.json"
            );
        } else {
            log::info!("health: {base}/healthz (docs are off: DOCS_ENABLED=false)");
        }
    }
    for origin in &server.origins {
        log::info!("listener {origin}");
    }
    if config.http2 {
        log::info!("HTTP/2 with prior knowledge (h2c) is on beside HTTP/1.1 (HTTP2)");
    }
    if let Some((_, addr)) = &server.metrics {
        log::info!("metrics: http://{addr}/metrics");
    }
    for s in &config.services {
        log::info!(
            "backing service {} at {} ({})",
            s.name,
            s.display_url,
            s.variable
        );
    }
    for name in &server.state.app.checks {
        log::info!("readiness check {name}");
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::state::DrainState;

    /// Sets its flag when dropped: shows a task's future was cut.
    struct DropFlag(Rc<Cell<bool>>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    fn task(name: &str, run: impl FnOnce(StopSignal) -> LocalFuture + 'static) -> Task {
        Task {
            name: name.to_owned(),
            run: Box::new(run),
        }
    }

    type LocalFuture = crate::service::LocalFuture<Result<(), crate::BoxError>>;

    #[actix_rt::test]
    async fn tasks_hear_the_drain_and_those_still_running_at_the_deadline_are_cut() {
        let drain = DrainState::default();
        let polite_stopped = Rc::new(Cell::new(false));
        let stubborn_dropped = Rc::new(Cell::new(false));
        let hook_ran = Rc::new(Cell::new(false));
        let tasks = start_tasks(
            vec![
                task("polite", {
                    let stopped = polite_stopped.clone();
                    move |stop| {
                        Box::pin(async move {
                            stop.requested().await;
                            stopped.set(true);
                            Ok(())
                        })
                    }
                }),
                task("stubborn", {
                    let flag = DropFlag(stubborn_dropped.clone());
                    move |_| {
                        Box::pin(async move {
                            let _flag = flag;
                            std::future::pending::<()>().await;
                            Ok(())
                        })
                    }
                }),
            ],
            &drain,
        );
        let hooks = vec![DrainHook {
            name: "late".to_owned(),
            run: Box::new({
                let ran = hook_ran.clone();
                move || {
                    Box::pin(async move {
                        ran.set(true);
                        Ok(())
                    })
                }
            }),
        }];
        drain.begin();
        finish_background(tasks, hooks, Instant::now() + Duration::from_millis(200)).await;
        assert!(polite_stopped.get(), "the polite task heard the drain");
        // The stubborn task was cut at the deadline; its abort drops its
        // future on the next turn of the runtime.
        actix_rt::task::yield_now().await;
        assert!(stubborn_dropped.get(), "the stubborn task was cut");
        assert!(!hook_ran.get(), "no budget was left for the hook");
    }

    #[actix_rt::test]
    async fn a_check_that_panics_is_down_and_the_checks_after_it_still_run() {
        let probes = crate::backing::Probes::new(&[], &["boom".to_owned(), "fine".to_owned()]);
        let check = |fails: bool| ReadinessCheck {
            name: String::new(),
            run: Rc::new(move || {
                Box::pin(async move {
                    assert!(!fails, "the check's own panic");
                    Ok(())
                })
            }),
        };
        spawn_checks(
            probes.clone(),
            vec![check(true), check(false)],
            Duration::from_secs(60),
        );
        let up = |name: &str| {
            probes
                .reports()
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.up)
        };
        // The first round of checks runs on this thread at once: yield to
        // it (a bounded number of times) rather than wait for a clock.
        for _ in 0..10_000 {
            if up("fine") == Some(true) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(up("fine"), Some(true), "{:?}", probes.reports());
        assert_eq!(up("boom"), Some(false), "{:?}", probes.reports());
    }

    #[test]
    fn drain_hooks_keep_a_quarter_of_the_budget_at_most_five_seconds() {
        assert_eq!(
            hooks_reserve(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
        assert_eq!(
            hooks_reserve(Duration::from_secs(25)),
            Duration::from_secs(5)
        );
        assert_eq!(
            hooks_reserve(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
    }

    #[actix_rt::test]
    async fn drain_hooks_run_in_order_within_the_budget() {
        let order = Rc::new(std::cell::RefCell::new(Vec::new()));
        let hook = |name: &'static str| DrainHook {
            name: name.to_owned(),
            run: Box::new({
                let order = order.clone();
                move || {
                    Box::pin(async move {
                        order.borrow_mut().push(name);
                        Ok(())
                    })
                }
            }),
        };
        let hooks = vec![hook("first"), hook("second")];
        finish_background(Vec::new(), hooks, Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(*order.borrow(), ["first", "second"]);
    }
}
