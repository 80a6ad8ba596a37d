//! `GET /api/v1/info`: what this instance is and where it runs.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::platform::{InstanceFacts, Platform};
use crate::state::AppState;

/// Runtime facts about this instance.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "service": "notes",
    "version": "0.1.0",
    "runtime": crate::RUNTIME,
    "platform": "fly",
    "instance": {"service": "notes", "region": "ams", "instance": "e2865013b64d86"},
    "listeners": ["[::]:8080"],
    "ports": [8080],
    "workers": 2,
    "uptime_seconds": 42,
    "services": [{"name": "auth", "url": "http://auth-service:5001"}]
}))]
pub struct Info {
    /// The service's name.
    pub service: &'static str,
    /// The running version.
    pub version: &'static str,
    /// The runtime that serves it, `portbound VERSION`: which platform
    /// fixes this instance has.
    pub runtime: &'static str,
    /// The platform detected from the variables it injects.
    pub platform: Platform,
    /// What the platform says about this instance (when it says it).
    pub instance: InstanceFacts,
    /// Every address the service listens on.
    pub listeners: Vec<String>,
    /// The bound ports (the real ones, also when `PORT=0`).
    pub ports: Vec<u16>,
    /// Worker threads serving requests.
    pub workers: usize,
    /// Seconds since the process started serving.
    pub uptime_seconds: u64,
    /// The configured backing services (`*_SERVICE_URL`, `DATABASE_URL`,
    /// `REDIS_URL`) without credentials, and the service's own readiness
    /// checks.
    pub services: Vec<BackingServiceInfo>,
}

/// A backing service, as `/api/v1/info` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackingServiceInfo {
    /// `auth` for `AUTH_SERVICE_URL`.
    pub name: String,
    /// The URL without credentials, query or fragment; none for a readiness
    /// check of the service's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub url: Option<String>,
}

/// Runtime facts: version, platform, instance, ports, workers, uptime.
///
/// What the platform told this instance about itself, the listeners it
/// serves, and each backing service's last probe (URLs without credentials).
#[utoipa::path(
    get,
    path = "/api/v1/info",
    tag = "instance",
    responses((status = 200, description = "Facts about this instance", body = Info))
)]
pub async fn info(state: web::Data<AppState>) -> HttpResponse {
    let facts = &state.facts;
    HttpResponse::Ok().json(Info {
        service: facts.name,
        version: facts.version,
        runtime: crate::RUNTIME,
        platform: facts.platform,
        instance: facts.instance.clone(),
        listeners: facts.listeners.clone(),
        ports: facts.ports.clone(),
        workers: facts.workers,
        uptime_seconds: facts.started.elapsed().as_secs(),
        services: state
            .probes
            .reports()
            .into_iter()
            .map(|s| BackingServiceInfo {
                name: s.name,
                url: s.url,
            })
            .collect(),
    })
}
