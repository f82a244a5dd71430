//! The dashboard's HTTP server: the page's three files, the login routes, the
//! JSON API (`/api/...`, every call checked against a session) with its
//! server-sent events, and the two buttons' operations. One actix-web worker:
//! the dashboard serves one person.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use golem_client::GolemClient;
use golem_model::error::{ErrorCode, GolemError};
use serde_json::Value;

use super::auth::{self, Sessions};
use super::sources::DashboardSources;
use super::{page, view, DashboardConfig};

/// How often the event stream looks for changes.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot serve the dashboard on {address}: {source} (choose another address with --dashboard ADDR)")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The running server; [`DashboardServer::stop`] ends it.
pub struct DashboardServer {
    pub address: SocketAddr,
    /// `http://ADDR/login?token=...`, good for one login.
    pub login_url: String,
    handle: actix_web::dev::ServerHandle,
}

impl DashboardServer {
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

pub(super) struct Shared {
    pub sources: DashboardSources,
    pub sessions: Sessions,
    pub event_interval: Duration,
}

/// Bind `config.address` and serve; logs the one-time login link (and a
/// warning when the address is not loopback).
pub fn start(
    config: &DashboardConfig,
    sources: DashboardSources,
) -> Result<DashboardServer, DashboardError> {
    let bind_error = |source| DashboardError::Bind {
        address: config.address,
        source,
    };
    let listener = TcpListener::bind(config.address).map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    let shared = web::Data::new(Shared {
        sessions: Sessions::new(&sources.app_key),
        sources,
        event_interval: EVENT_INTERVAL,
    });
    let token = shared.sessions.one_time_token();
    let api_url = shared.sources.api_url.clone();
    let app_key = shared.sources.app_key.clone();
    let server = HttpServer::new(move || {
        // A client per worker: its connections belong to the worker's runtime.
        let client = GolemClient::new(&api_url, &app_key);
        App::new().configure(configure(shared.clone(), client))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(bind_error)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    let host = if address.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
    } else {
        address
    };
    let login_url = format!("http://{host}/login?token={token}");
    if config.remote {
        tracing::warn!(%address, "the dashboard listens beyond this machine (dashboard-allow-remote): anyone who reaches it can try app-keys, and its traffic is not encrypted");
    }
    tracing::info!(%address, %login_url, "dashboard ready: open {login_url} once, or {} with the app-key", format!("http://{host}/"));
    Ok(DashboardServer {
        address,
        login_url,
        handle,
    })
}

/// Every route, on an App being built (shared by the server and the tests).
pub(super) fn configure(
    shared: web::Data<Shared>,
    client: GolemClient,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        config
            .app_data(shared)
            .app_data(web::Data::new(client))
            .route("/", web::get().to(index))
            .route("/app.js", web::get().to(script))
            .route("/app.css", web::get().to(style))
            .route("/login", web::get().to(login_by_link))
            .route("/api/session", web::post().to(login_by_key))
            .route("/api/session", web::delete().to(logout))
            .route("/api/dashboard", web::get().to(whole))
            .route("/api/events", web::get().to(events))
            .route("/api/offers/pause", web::post().to(pause_offers))
            .route(
                "/api/presets/{name}/active",
                web::post().to(set_preset_active),
            )
            .route("/api/{section}", web::get().to(section))
            .default_service(web::to(no_such_route));
    }
}

/// A handler's failure: `{"message": ...}` with the status of its code.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ApiError(#[from] GolemError);

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "message": self.0.message }))
    }
}

type ApiResult = Result<HttpResponse, ApiError>;

fn unauthorized() -> GolemError {
    GolemError::new(
        ErrorCode::Unauthorized,
        "no dashboard session: open the login link the agent printed at start, or log in with the app-key",
    )
}

/// The session cookie's value, if the request carries one.
fn session_of(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(auth::COOKIE)?.strip_prefix('='))
}

/// `Err(401)` unless the request has a live session.
fn check(request: &HttpRequest, shared: &Shared) -> Result<(), GolemError> {
    match session_of(request) {
        Some(session) if shared.sessions.is_valid(session) => Ok(()),
        _ => Err(unauthorized()),
    }
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", page::INDEX)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", page::SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", page::STYLE)
}

async fn login_by_link(
    shared: web::Data<Shared>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let session = query
        .get("token")
        .and_then(|token| shared.sessions.login_with_token(token));
    match session {
        Some(session) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .insert_header((header::SET_COOKIE, auth::session_cookie(&session)))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .finish(),
        None => HttpResponse::Unauthorized()
            .content_type("text/plain; charset=utf-8")
            .body("This login link was used already or is wrong: open / and log in with the app-key.\n"),
    }
}

async fn login_by_key(shared: web::Data<Shared>, body: web::Bytes) -> ApiResult {
    let app_key = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body["appKey"].as_str().map(String::from))
        .ok_or_else(|| {
            GolemError::bad_request(
                "send {\"appKey\": \"...\"}: the app-key the agent uses (YAGNA_APPKEY)",
            )
        })?;
    let session = shared.sessions.login_with_key(&app_key).ok_or_else(|| {
        GolemError::new(
            ErrorCode::Unauthorized,
            "wrong app-key: give the one the agent runs with (YAGNA_APPKEY or --app-key)",
        )
    })?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, auth::session_cookie(&session)))
        .finish())
}

async fn logout(request: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(session) = session_of(&request) {
        shared.sessions.close(session);
    }
    HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, auth::expired_cookie()))
        .finish()
}

async fn document(shared: &Shared, client: &GolemClient) -> Value {
    let state = view::agent_state(&shared.sources.data_dir);
    let daemon = view::gather(client, &state).await;
    view::dashboard_document(&shared.sources, &state, &daemon, Utc::now())
}

async fn whole(
    request: HttpRequest,
    shared: web::Data<Shared>,
    client: web::Data<GolemClient>,
) -> ApiResult {
    check(&request, &shared)?;
    Ok(HttpResponse::Ok().json(document(&shared, &client).await))
}

/// The sections of `/api/{section}`.
const SECTIONS: [&str; 5] = ["status", "offers", "negotiations", "agreements", "earnings"];

async fn section(
    request: HttpRequest,
    shared: web::Data<Shared>,
    client: web::Data<GolemClient>,
    name: web::Path<String>,
) -> ApiResult {
    check(&request, &shared)?;
    if !SECTIONS.contains(&name.as_str()) {
        return Err(no_such_route_error().into());
    }
    let mut document = document(&shared, &client).await;
    Ok(HttpResponse::Ok().json(document[name.as_str()].take()))
}

/// `text/event-stream`: a `dashboard` event with the whole document when it
/// changed, else a comment line, every [`EVENT_INTERVAL`].
async fn events(
    request: HttpRequest,
    shared: web::Data<Shared>,
    client: web::Data<GolemClient>,
) -> ApiResult {
    check(&request, &shared)?;
    let shared: Arc<Shared> = shared.into_inner();
    let client = client.into_inner();
    let stream = futures::stream::unfold(
        (shared, client, None::<String>, true),
        |(shared, client, last, first)| async move {
            if !first {
                tokio::time::sleep(shared.event_interval).await;
            }
            let mut document = document(&shared, &client).await;
            let at = document["at"].take();
            let text = document.to_string();
            let (frame, last) = if last.as_deref() == Some(text.as_str()) {
                (": unchanged\n\n".to_string(), last)
            } else {
                document["at"] = at;
                (
                    format!("event: dashboard\ndata: {document}\n\n"),
                    Some(text),
                )
            };
            Some((
                Ok::<_, actix_web::Error>(web::Bytes::from(frame)),
                (shared, client, last, false),
            ))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream))
}

fn bool_field(body: &[u8], field: &str) -> Result<bool, GolemError> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|body| body[field].as_bool())
        .ok_or_else(|| {
            GolemError::bad_request(format!(
                "send {{\"{field}\": true}} or {{\"{field}\": false}}"
            ))
        })
}

/// Apply `change` to the offer controls; answers their new state.
fn change_controls(
    shared: &Shared,
    what: std::fmt::Arguments<'_>,
    change: impl FnOnce(&mut super::ControlState),
) -> ApiResult {
    let state = shared
        .sources
        .link
        .controls
        .change(change)
        .map_err(|error| GolemError::internal(error.to_string()))?;
    tracing::info!("{what} from the dashboard");
    Ok(HttpResponse::Ok().json(state))
}

async fn pause_offers(
    request: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> ApiResult {
    check(&request, &shared)?;
    let paused = bool_field(&body, "paused")?;
    let what = if paused {
        "offers paused"
    } else {
        "offers resumed"
    };
    change_controls(&shared, format_args!("{what}"), |state| {
        state.paused = paused
    })
}

async fn set_preset_active(
    request: HttpRequest,
    shared: web::Data<Shared>,
    name: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    check(&request, &shared)?;
    let active = bool_field(&body, "active")?;
    // The same edit of presets.toml as `golem-provider preset activate|deactivate`;
    // the agent re-subscribes its offers when it sees the file change.
    let preset = crate::presets::set_active(&shared.sources.data_dir, &name, active).map_err(
        |error| match error {
            crate::presets::PresetError::Missing(_) => GolemError::not_found(format!(
                "no preset {:?} in presets.toml: create it with `golem-provider preset create` (a built-in default preset cannot be deactivated)",
                name.as_str()
            )),
            other => GolemError::internal(other.to_string()),
        },
    )?;
    let verb = if active { "activated" } else { "deactivated" };
    tracing::info!("preset {name} {verb} from the dashboard");
    Ok(HttpResponse::Ok().json(preset))
}

fn no_such_route_error() -> GolemError {
    GolemError::not_found(
        "no such dashboard route: the API is /api/dashboard, /api/{status,offers,negotiations,agreements,earnings} and /api/events",
    )
}

async fn no_such_route() -> ApiResult {
    Err(no_such_route_error().into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dashboard::sources::{ExeUnitFacts, LiveSettings, OfferedResources};
    use crate::dashboard::AgentLink;
    use actix_web::test::{call_service, init_service, read_body_json, TestRequest};

    const KEY: &str = "the-app-key";

    /// Sources over an empty data dir and a daemon nobody answers at.
    fn sources(dir: &std::path::Path) -> DashboardSources {
        DashboardSources {
            data_dir: dir.to_path_buf(),
            api_url: "http://127.0.0.1:1".into(),
            app_key: KEY.into(),
            settings: Box::new(|| LiveSettings {
                node_name: "box".into(),
                subnet: "s1".into(),
                resources: OfferedResources::default(),
            }),
            exe_units: vec![ExeUnitFacts {
                runtime: "wasmtime".into(),
                binary: "/bin/exe-unit-wasm".into(),
                sandbox: None,
            }],
            link: AgentLink::open(dir),
            started_at: Utc::now(),
        }
    }

    fn shared(dir: &std::path::Path) -> web::Data<Shared> {
        web::Data::new(Shared {
            sessions: Sessions::new(KEY),
            sources: sources(dir),
            event_interval: Duration::from_millis(10),
        })
    }

    #[test]
    fn an_address_in_use_is_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let config = DashboardConfig {
            address: taken.local_addr().unwrap(),
            remote: false,
        };
        let Err(error) = start(&config, sources(dir.path())) else {
            panic!("bound an address in use")
        };
        let message = error.to_string();
        assert!(
            message.contains(&config.address.to_string()) && message.contains("--dashboard ADDR"),
            "{message}"
        );
    }

    fn cookie_of(response: &actix_web::dev::ServiceResponse) -> String {
        let set = response
            .headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        set.split(';').next().unwrap().to_string()
    }

    #[actix_web::test]
    async fn every_api_call_needs_a_session_and_a_wrong_key_gets_none() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let client = GolemClient::new("http://127.0.0.1:1", KEY);
        let app = init_service(App::new().configure(configure(shared.clone(), client))).await;
        for (method, path) in [
            ("GET", "/api/dashboard"),
            ("GET", "/api/status"),
            ("GET", "/api/offers"),
            ("GET", "/api/negotiations"),
            ("GET", "/api/agreements"),
            ("GET", "/api/earnings"),
            ("GET", "/api/events"),
            ("POST", "/api/offers/pause"),
            ("POST", "/api/presets/default-wasmtime/active"),
        ] {
            let request = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(path)
                .insert_header((header::COOKIE, format!("{}=forged", auth::COOKIE)))
                .to_request();
            let response = call_service(&app, request).await;
            assert_eq!(response.status(), 401, "{method} {path}");
        }
        let wrong = TestRequest::post()
            .uri("/api/session")
            .set_payload(r#"{"appKey": "not-the-key"}"#)
            .to_request();
        assert_eq!(call_service(&app, wrong).await.status(), 401);
        let malformed = TestRequest::post()
            .uri("/api/session")
            .set_payload("key")
            .to_request();
        let response = call_service(&app, malformed).await;
        assert_eq!(response.status(), 400);
        let body: Value = read_body_json(response).await;
        assert!(
            body["message"].as_str().unwrap().contains("appKey"),
            "{body}"
        );
        // The page itself is public: it asks for the key.
        let page = call_service(&app, TestRequest::get().uri("/").to_request()).await;
        assert_eq!(page.status(), 200);
        assert!(page
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .is_some());
    }

    #[actix_web::test]
    async fn the_app_key_or_the_link_opens_a_session_that_reads_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let token = shared.sessions.one_time_token();
        let client = GolemClient::new("http://127.0.0.1:1", KEY);
        let app = init_service(App::new().configure(configure(shared.clone(), client))).await;

        let link = format!("/login?token={token}");
        let response = call_service(&app, TestRequest::get().uri(&link).to_request()).await;
        assert_eq!(response.status(), 303);
        let by_link = cookie_of(&response);
        let again = call_service(&app, TestRequest::get().uri(&link).to_request()).await;
        assert_eq!(again.status(), 401, "the link works once");

        let login = TestRequest::post()
            .uri("/api/session")
            .set_payload(format!(r#"{{"appKey": "{KEY}"}}"#))
            .to_request();
        let response = call_service(&app, login).await;
        assert_eq!(response.status(), 204);
        let by_key = cookie_of(&response);

        let get = |path: &str, cookie: &str| {
            TestRequest::get()
                .uri(path)
                .insert_header((header::COOKIE, cookie.to_string()))
                .to_request()
        };
        let response = call_service(&app, get("/api/dashboard", &by_link)).await;
        assert_eq!(response.status(), 200);
        let document: Value = read_body_json(response).await;
        assert_eq!(document["status"]["daemon"]["reachable"], false);
        assert_eq!(document["status"]["subnet"], "s1");
        assert_eq!(document["status"]["exeUnits"][0]["runtime"], "wasmtime");
        assert_eq!(
            document["offers"]["offers"][0]["preset"],
            "default-wasmtime"
        );
        assert_eq!(
            document["offers"]["offers"][0]["published"], false,
            "not subscribed"
        );
        assert_eq!(document["agreements"]["agreements"], serde_json::json!([]));
        assert_eq!(document["earnings"]["days"].as_array().unwrap().len(), 30);
        assert_eq!(document["earnings"]["totals"]["paid"], "0");
        for name in SECTIONS {
            let response = call_service(&app, get(&format!("/api/{name}"), &by_key)).await;
            assert_eq!(response.status(), 200, "{name}");
            let section: Value = read_body_json(response).await;
            assert!(section.is_object(), "{name}: {section}");
        }
        let missing = call_service(&app, get("/api/nothing", &by_key)).await;
        assert_eq!(missing.status(), 404);

        let events = call_service(&app, get("/api/events", &by_key)).await;
        assert_eq!(events.status(), 200);
        assert_eq!(
            events.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/event-stream"
        );

        let logout = TestRequest::delete()
            .uri("/api/session")
            .insert_header((header::COOKIE, by_key.clone()))
            .to_request();
        assert_eq!(call_service(&app, logout).await.status(), 204);
        let after = call_service(&app, get("/api/status", &by_key)).await;
        assert_eq!(after.status(), 401, "logged out");
    }

    #[actix_web::test]
    async fn buttons_change_the_offer_controls_and_bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let session = shared.sessions.login_with_key(KEY).unwrap();
        let cookie = format!("{}={session}", auth::COOKIE);
        let client = GolemClient::new("http://127.0.0.1:1", KEY);
        let app = init_service(App::new().configure(configure(shared.clone(), client))).await;
        let post = |path: &str, body: &str| {
            TestRequest::post()
                .uri(path)
                .insert_header((header::COOKIE, cookie.clone()))
                .set_payload(body.to_string())
                .to_request()
        };
        let response = call_service(&app, post("/api/offers/pause", r#"{"paused": true}"#)).await;
        assert_eq!(response.status(), 200);
        assert!(shared.sources.link.controls.current().paused);
        let response = call_service(&app, post("/api/offers/pause", r#"{"paused": "yes"}"#)).await;
        assert_eq!(response.status(), 400);
        assert!(shared.sources.link.controls.current().paused, "unchanged");

        let mut cheap = crate::presets::Preset::default_for("wasmtime");
        cheap.name = "cheap".into();
        crate::presets::create(dir.path(), cheap).unwrap();
        let is_active = || crate::presets::load(dir.path()).unwrap()[0].active;
        let path = "/api/presets/cheap/active";
        let response = call_service(&app, post(path, r#"{"active": false}"#)).await;
        assert_eq!(response.status(), 200);
        assert!(!is_active(), "presets.toml says inactive");
        let response = call_service(
            &app,
            post("/api/presets/nope/active", r#"{"active": false}"#),
        )
        .await;
        assert_eq!(response.status(), 404);
        let body: Value = read_body_json(response).await;
        assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
        let response = call_service(&app, post(path, r#"{"active": true}"#)).await;
        assert_eq!(response.status(), 200);
        assert!(is_active());
    }
}
