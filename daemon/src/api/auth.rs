//! App-key authentication for every REST route: `Authorization: Bearer <key>`
//! (or `?authToken=<key>`, as the original accepts for WebSockets). Also refuses
//! bodies whose declared length is over the limit before reading them.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use golem_model::identity::AppKeyInfo;
use golem_model::{ErrorCode, GolemError};

use super::error::ApiError;
use crate::identity::IdentityService;

/// Paths served without an app-key (golem-js calls `/version/get` before it has one).
const PUBLIC_PATHS: &[&str] = &["/version/get"];

/// The app-key a request was authenticated with.
#[derive(Clone)]
pub struct Authenticated(pub Arc<AppKeyInfo>);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let found = request.extensions().get::<Authenticated>().cloned();
        std::future::ready(
            found.ok_or_else(|| {
                ApiError(GolemError::new(ErrorCode::Unauthorized, "missing app-key"))
            }),
        )
    }
}

/// Limits the middleware enforces.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

fn bearer_token(request: &ServiceRequest) -> Option<String> {
    if let Some(header) = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
    {
        let text = header.to_str().ok()?.trim();
        let (scheme, token) = text.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(token.trim().to_string());
        }
        return None;
    }
    let query = request.query_string();
    web::Query::<std::collections::HashMap<String, String>>::from_query(query)
        .ok()
        .and_then(|map| map.get(TOKEN_PARAMETER).cloned())
}

/// The query parameter that carries an app-key for WebSocket clients.
const TOKEN_PARAMETER: &str = "authToken";

/// `uri` as it may be logged: the value of every `authToken` parameter is
/// replaced, so an app-key never reaches a log line.
pub fn redacted_uri(uri: &actix_web::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            if percent_decoded(name).eq_ignore_ascii_case(TOKEN_PARAMETER) {
                format!("{name}=<redacted>")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

/// A query parameter name as the query extractor sees it (`%XX` and `+` decoded).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

pub async fn require_app_key(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refuse = |request: ServiceRequest, error: GolemError| {
        let response = ApiError(error).error_response();
        Ok(request.into_response(response).map_into_right_body())
    };
    if !PUBLIC_PATHS.contains(&request.path()) {
        let Some(token) = bearer_token(&request) else {
            return refuse(
                request,
                GolemError::new(
                    ErrorCode::Unauthorized,
                    "missing app-key: send 'Authorization: Bearer <app-key>'",
                ),
            );
        };
        let identity = request.app_data::<web::Data<IdentityService>>().cloned();
        let Some(info) = identity.and_then(|identity| identity.authenticate(&token)) else {
            return refuse(
                request,
                GolemError::new(
                    ErrorCode::Unauthorized,
                    "invalid app-key (see `golem-daemon app-key list`)",
                ),
            );
        };
        request.extensions_mut().insert(Authenticated(info));
    }
    let limit = request
        .app_data::<web::Data<BodyLimit>>()
        .map(|limit| limit.0)
        .unwrap_or(usize::MAX);
    let declared_length = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared_length {
        if length > limit as u64 {
            return refuse(
                request,
                GolemError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body of {length} bytes exceeds the limit of {limit} bytes"),
                ),
            );
        }
    }
    Ok(next.call(request).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_token_never_reaches_a_logged_uri() {
        let uri: actix_web::http::Uri =
            "/gsb-api/v1/services/1?authToken=secret-key&x=1&auth%54oken=k2"
                .parse()
                .unwrap_or_else(|error| panic!("{error}"));
        let logged = redacted_uri(&uri);
        assert_eq!(
            logged,
            "/gsb-api/v1/services/1?authToken=<redacted>&x=1&auth%54oken=<redacted>"
        );
        let plain: actix_web::http::Uri = "/me?timeout=1"
            .parse()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(redacted_uri(&plain), "/me?timeout=1");
    }
}
