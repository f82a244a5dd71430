//! The REST side of the shared error: [`ApiError`] maps a [`GolemError`]'s code
//! to an HTTP status and a `{"message": ...}` body, and the extractor configs
//! turn malformed JSON, bad query strings and oversized bodies into the same shape.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use golem_model::{ErrorCode, GolemError};

#[derive(Debug)]
pub struct ApiError(pub GolemError);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl From<GolemError> for ApiError {
    fn from(error: GolemError) -> Self {
        ApiError(error)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if self.0.code == ErrorCode::Internal {
            tracing::error!(message = %self.0.message, "internal error answered to a REST client");
        }
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "message": self.0.message }))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(false)
        .error_handler(|error, _request: &HttpRequest| {
            let api_error = match &error {
                JsonPayloadError::Overflow { limit }
                | JsonPayloadError::OverflowKnownLength { limit, .. } => GolemError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body exceeds the limit of {limit} bytes"),
                ),
                JsonPayloadError::Deserialize(serde_error) => {
                    GolemError::bad_request(format!("malformed JSON body: {serde_error}"))
                }
                other => GolemError::bad_request(format!("cannot read the JSON body: {other}")),
            };
            ApiError(api_error).into()
        })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error: QueryPayloadError, _request| {
        ApiError(GolemError::bad_request(format!(
            "invalid query string: {error}"
        )))
        .into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error: PathError, _request| {
        ApiError(GolemError::bad_request(format!(
            "invalid path parameter: {error}"
        )))
        .into()
    })
}

/// Answer for routes that do not exist.
pub async fn no_such_route(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError(GolemError::not_found(format!(
        "no such endpoint: {} {}",
        request.method(),
        request.path()
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
    }

    async fn echo(_body: web::Json<Sample>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    #[actix_web::test]
    async fn malformed_json_says_where_and_oversized_is_413() {
        let app = test::init_service(
            App::new()
                .app_data(json_config(64))
                .route("/sample", web::post().to(echo)),
        )
        .await;
        let request = test::TestRequest::post()
            .uri("/sample")
            .insert_header(("content-type", "application/json"))
            .set_payload("{\"name\": \"x\",,}")
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = test::read_body_json(response).await;
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("malformed JSON body") && message.contains("line 1 column"),
            "{message}"
        );

        let request = test::TestRequest::post()
            .uri("/sample")
            .insert_header(("content-type", "application/json"))
            .set_payload(format!("{{\"name\": \"{}\"}}", "x".repeat(100)))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 413);

        let request = test::TestRequest::post()
            .uri("/sample")
            .insert_header(("content-type", "application/json"))
            .set_payload("{\"other\": 1}")
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("missing field `name`"),
            "{body}"
        );
    }
}
