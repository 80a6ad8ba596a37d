//! Every route the service serves, in one table. The table drives both the
//! registration and the test that proves each route is in the OpenAPI spec.

pub mod echo;
pub mod health;
pub mod info;
pub mod testing;
pub mod ws;

use actix_web::{HttpResponse, Resource, web};

use crate::error::ApiError;

/// One resource: its path, the methods it answers (the `Allow` header of its
/// 405) and how its handlers are mounted.
pub struct Route {
    pub path: &'static str,
    pub allow: &'static str,
    pub mount: fn(Resource) -> Resource,
}

/// The documented routes. HEAD is answered wherever GET is: probes and
/// uptime checkers use it.
pub fn routes() -> [Route; 5] {
    [
        Route {
            path: "/",
            allow: "GET, HEAD",
            mount: |r| r.get(health::root).head(health::root),
        },
        Route {
            path: "/healthz",
            allow: "GET, HEAD",
            mount: |r| r.get(health::healthz).head(health::healthz),
        },
        Route {
            path: "/readyz",
            allow: "GET, HEAD",
            mount: |r| r.get(health::readyz).head(health::readyz),
        },
        Route {
            path: "/api/v1/info",
            allow: "GET, HEAD",
            mount: |r| r.get(info::info).head(info::info),
        },
        Route {
            path: "/api/v1/echo",
            allow: "POST",
            mount: |r| r.post(echo::echo),
        },
    ]
}

/// Registers every route; each resource answers other methods with a 405
/// problem that carries `Allow`. Every resource is named by its pattern: the
/// name is its metrics label (`telemetry::metrics::route_label`).
pub fn configure(cfg: &mut web::ServiceConfig, test_routes: bool) {
    for route in routes() {
        let allow = route.allow;
        let resource =
            (route.mount)(web::resource(route.path).name(route.path)).default_service(web::to(
                move || async move { Err::<HttpResponse, _>(ApiError::method_not_allowed(allow)) },
            ));
        cfg.service(resource);
    }
    // Not in `routes()`: that table is the OpenAPI-documented list, and
    // OpenAPI cannot describe a WebSocket.
    cfg.service(
        web::resource(ws::PATH)
            .name(ws::PATH)
            .route(web::get().to(ws::echo))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::method_not_allowed("GET"))
            })),
    );
    if test_routes {
        testing::configure(cfg);
    }
}
