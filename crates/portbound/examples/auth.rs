//! auth: the 12-factor article's second service, small on purpose. It
//! verifies a bearer token for the services that call it by name
//! (`AUTH_SERVICE_URL=http://auth:5001`): the `notes` example, started with
//! that variable, refuses writes unless this service says the caller's
//! token is good.
//!
//! The tokens come from `AUTH_TOKENS` (`token=subject,token2=subject2`):
//! an example's stand-in for a real identity provider.
//!
//! ```text
//! AUTH_TOKENS=s3cret=alice PORT=5001 cargo run -p portbound --example auth
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use portbound::Service;
use portbound::error::{ApiError, ProblemDetails};
use portbound::routes::Route;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// A token to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Verify {
    /// The bearer token the caller was given.
    token: String,
}

/// Whose token it is.
#[derive(Debug, Serialize, ToSchema)]
struct Verified {
    /// The subject the token belongs to.
    subject: String,
}

/// The tokens this service knows: token → subject.
struct Tokens(BTreeMap<String, String>);

/// Checks a token.
#[utoipa::path(
    post,
    path = "/api/v1/verify",
    tag = "auth",
    request_body(content = Verify, content_type = "application/json"),
    responses(
        (status = 200, description = "The token is good", body = Verified),
        (status = 401, description = "The token is not known", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
async fn verify(
    tokens: web::Data<Tokens>,
    body: web::Json<Verify>,
) -> Result<HttpResponse, ApiError> {
    // The token is a credential: it is never logged, and the answer does
    // not say whether it was close.
    match tokens.0.get(&body.token) {
        Some(subject) => Ok(HttpResponse::Ok().json(Verified {
            subject: subject.clone(),
        })),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token is not valid",
        )),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "auth", description = "Verifies bearer tokens: an example service on the portbound runtime."),
    paths(verify),
    tags((name = "auth", description = "Token checks"))
)]
struct AuthDoc;

fn main() -> ExitCode {
    let raw = std::env::var("AUTH_TOKENS").unwrap_or_default();
    let mut tokens = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((token, subject)) if !token.is_empty() && !subject.is_empty() => {
                tokens.insert(token.to_owned(), subject.to_owned());
            }
            // The value holds secrets: named, not shown.
            _ => {
                eprintln!(
                    "auth: AUTH_TOKENS is not valid: expected token=subject pairs separated \
                     by commas"
                );
                return ExitCode::from(78);
            }
        }
    }
    Service::new("auth", env!("CARGO_PKG_VERSION"))
        .openapi(AuthDoc::openapi())
        .app_data(web::Data::new(Tokens(tokens)))
        .configure(|cfg| {
            Route {
                path: "/api/v1/verify",
                allow: "POST",
                mount: |r| r.post(verify),
            }
            .register(cfg);
        })
        .run()
}
