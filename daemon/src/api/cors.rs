//! CORS for browser clients (a golem-js app served from another origin): only
//! the origins of `api.allow-origin` (`--api-allow-origin`,
//! `GOLEM_API_ALLOW_ORIGIN`) are let in; `*` lets any origin in.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   from an allowed origin is answered here, before the app-key check (a
//!   browser never sends credentials on a preflight): 204 with the allowed
//!   methods, headers (`Authorization`, `Content-Type`, `Accept`) and max-age.
//! - A preflight from an origin not allowed gets 403 and no CORS headers.
//! - Any other request goes on as before (app-key required); when its
//!   `Origin` is allowed, the response (errors included) carries
//!   `Access-Control-Allow-Origin: <origin>` and `Vary: Origin`; otherwise it
//!   carries no CORS headers, so a browser does not let the page read it.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use golem_model::GolemError;

use super::error::ApiError;

/// Methods a browser may use across origins.
const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
/// Request headers a browser may send across origins.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Accept";
/// How long a browser may cache a preflight answer.
const MAX_AGE_SECONDS: &str = "3600";

/// The origins let in (shared by every worker).
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins {
    origins: Vec<String>,
    any: bool,
}

impl AllowedOrigins {
    /// Origins as configured (`scheme://host[:port]`, compared without a
    /// trailing slash, case-insensitively); `*` allows every origin.
    pub fn new(origins: &[String]) -> Self {
        let origins: Vec<String> = origins
            .iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|origin| !origin.is_empty())
            .collect();
        AllowedOrigins {
            any: origins.iter().any(|origin| origin == "*"),
            origins,
        }
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }

    fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }
}

fn is_preflight(request: &ServiceRequest) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

pub async fn cors(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = request.app_data::<web::Data<AllowedOrigins>>().cloned();
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.to_string());
    let (Some(allowed), Some(origin)) = (allowed, origin) else {
        return Ok(next.call(request).await?.map_into_left_body());
    };
    if allowed.is_empty() && !is_preflight(&request) {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let origin_allowed = allowed.allows(&origin);
    if is_preflight(&request) {
        if !origin_allowed {
            let refusal = ApiError(GolemError::forbidden(format!(
                "origin {origin} is not allowed (add it with the setting api.allow-origin, \
                 GOLEM_API_ALLOW_ORIGIN or --api-allow-origin)"
            )))
            .error_response();
            return Ok(request.into_response(refusal).map_into_right_body());
        }
        let mut answer = HttpResponse::NoContent();
        answer
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.as_str()))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECONDS))
            .insert_header((header::VARY, "Origin"));
        return Ok(request.into_response(answer.finish()).map_into_right_body());
    }
    let mut response = next.call(request).await?;
    if origin_allowed {
        if let Ok(value) = HeaderValue::from_str(&origin) {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    Ok(response.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_star() {
        let allowed = AllowedOrigins::new(&["http://localhost:3000/".into(), " ".into()]);
        assert!(allowed.allows("http://localhost:3000"));
        assert!(allowed.allows("HTTP://LOCALHOST:3000"));
        assert!(!allowed.allows("http://localhost:3001"));
        assert!(!allowed.allows("http://evil.example"));
        assert!(AllowedOrigins::new(&["*".into()]).allows("http://evil.example"));
        assert!(!AllowedOrigins::new(&[]).allows("http://localhost:3000"));
    }
}
