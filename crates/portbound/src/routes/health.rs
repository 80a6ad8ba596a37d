//! The probes: `/` (the 12-factor article's health answer), `/healthz`
//! (liveness) and `/readyz` (readiness, 503 while draining).

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::backing::ServiceReport;
use crate::state::AppState;

/// The answer of `GET /`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "healthy", "service": "notes", "version": "0.1.0"}))]
pub struct Health {
    /// Always `healthy` while the process serves.
    pub status: &'static str,
    /// The service's name.
    pub service: &'static str,
    /// The running version.
    pub version: &'static str,
}

/// The answer of the probes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct ProbeStatus {
    /// `ok` (liveness); `ready`, `draining` or `unavailable` (readiness).
    pub status: &'static str,
    /// Readiness only: every backing service (`*_SERVICE_URL`,
    /// `DATABASE_URL`, `REDIS_URL`) and readiness check, with its last probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceReport>>,
}

/// The service is up.
///
/// The service's name and version; 200 whenever the process answers at all.
#[utoipa::path(
    get,
    path = "/",
    tag = "health",
    responses((status = 200, description = "The service is up", body = Health))
)]
pub async fn root(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "healthy",
        service: state.facts.name,
        version: state.facts.version,
    })
}

/// Liveness: 200 while the process runs.
///
/// Platforms restart the instance when this fails, so it checks nothing that
/// a restart would not fix: no backing service, no disk, no drain state.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is alive", body = ProbeStatus))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(ProbeStatus {
        status: "ok",
        services: None,
    })
}

/// Readiness: 200 while the instance should receive traffic.
///
/// 503 from the moment a stop signal arrives (so load balancers stop routing
/// to it before the listener closes), and while a backing service is down.
/// Backing services are probed in the background: this answers from the last
/// result and never waits on a dependency.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready for traffic", body = ProbeStatus,
            example = json!({"status": "ready", "services": [
                {"name": "auth", "url": "http://auth-service:5001", "up": true, "latency_ms": 0.4}
            ]})),
        (status = 503, description = "Draining (a stop signal arrived) or a backing service \
            is down", body = ProbeStatus,
            example = json!({"status": "unavailable", "services": [
                {"name": "auth", "url": "http://auth-service:5001", "up": false}
            ]}))
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let services = (!state.probes.is_empty()).then(|| state.probes.reports());
    let (ok, status) = if state.drain.is_draining() {
        (false, "draining")
    } else if !state.probes.all_up() {
        (false, "unavailable")
    } else {
        (true, "ready")
    };
    let body = ProbeStatus { status, services };
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
