//! The routes every port-bound service has (the probes, `/api/v1/info`, and
//! the test-only routes), and [`Route`], the table entry that gives any
//! resource a 405 problem with `Allow` for the methods it does not take.

pub mod health;
pub mod info;
pub mod testing;

use actix_web::{HttpResponse, Resource, web};

use crate::error::ApiError;

/// One resource: its path, the methods it answers (the `Allow` header of its
/// 405) and how its handlers are mounted.
///
/// ```
/// use actix_web::{HttpResponse, web};
/// use portbound::routes::Route;
///
/// async fn list() -> HttpResponse { HttpResponse::Ok().json(Vec::<String>::new()) }
/// async fn create() -> HttpResponse { HttpResponse::Created().finish() }
///
/// const NOTES: Route = Route {
///     path: "/api/v1/notes",
///     allow: "GET, HEAD, POST",
///     mount: |r| r.get(list).head(list).post(create),
/// };
///
/// fn configure(cfg: &mut web::ServiceConfig) {
///     NOTES.register(cfg);
/// }
/// # let _ = configure;
/// ```
#[derive(Clone, Copy)]
pub struct Route {
    /// The resource's pattern, as actix matches it (`/api/v1/notes/{id}`).
    pub path: &'static str,
    /// The methods the resource answers, as `Allow` lists them.
    pub allow: &'static str,
    /// Adds the resource's handlers.
    pub mount: fn(Resource) -> Resource,
}

impl Route {
    /// Registers the resource. It is named by its pattern, which is its
    /// metrics label (`telemetry::metrics::route_label`), and answers other
    /// methods with a 405 problem that carries `Allow`.
    pub fn register(&self, cfg: &mut web::ServiceConfig) {
        let allow = self.allow;
        let resource =
            (self.mount)(web::resource(self.path).name(self.path)).default_service(web::to(
                move || async move { Err::<HttpResponse, _>(ApiError::method_not_allowed(allow)) },
            ));
        cfg.service(resource);
    }
}

/// The routes the runtime serves for every service, all in its OpenAPI
/// document. HEAD is answered wherever GET is: probes and uptime checkers
/// use it.
pub fn builtin() -> [Route; 4] {
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
    ]
}

/// Registers the built-in routes, and the test routes when asked to.
pub fn configure(cfg: &mut web::ServiceConfig, test_routes: bool) {
    for route in builtin() {
        route.register(cfg);
    }
    if test_routes {
        testing::configure(cfg);
    }
}
