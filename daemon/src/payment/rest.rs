//! REST routes of the Payment API (`/payment-api/v1`): allocations and demand
//! decorations, debit notes and invoices (issue and send on the provider's
//! node, accept and reject on the requestor's), their event long-polls,
//! payments and accounts. JSON follows the original (camelCase, amounts as
//! decimal strings, statuses in capitals). The event long-polls hold a
//! permit of their app-key and are cut to [`PAYMENT_MAX_TIMEOUT`].

use std::time::Duration;

use actix_web::{web, HttpResponse};
use golem_model::payment::{Acceptance, NewDebitNote, NewInvoice, Rejection};
use golem_model::GolemError;
use serde::Deserialize;

use super::PaymentService;
use crate::api::error::{ApiError, ApiResult};
use crate::api::long_polls::LongPoll;
use crate::api::query::{parse_timestamp, timeout_seconds, PAYMENT_MAX_TIMEOUT};

const DEFAULT_EVENTS_TIMEOUT: Duration = Duration::from_secs(5);

pub fn configure(payment: PaymentService) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        let local = payment.clone();
        config.service(
            web::scope("/payment-api/v1")
                .app_data(web::Data::new(payment))
                .route("/allocations", web::post().to(create_allocation))
                .route("/allocations", web::get().to(allocations))
                .route("/allocations/{id}", web::get().to(allocation))
                .route("/allocations/{id}", web::put().to(amend_allocation))
                .route("/allocations/{id}", web::delete().to(release_allocation))
                .route("/demandDecorations", web::get().to(demand_decorations))
                .route("/debitNotes", web::post().to(issue_debit_note))
                .route("/debitNotes", web::get().to(debit_notes))
                .route("/debitNotes/{id}", web::get().to(debit_note))
                .route("/debitNotes/{id}/send", web::post().to(send_debit_note))
                .route("/debitNotes/{id}/accept", web::post().to(accept_debit_note))
                .route("/debitNotes/{id}/reject", web::post().to(reject_debit_note))
                .route("/debitNotes/{id}/cancel", web::post().to(cancel_debit_note))
                .route(
                    "/debitNotes/{id}/payments",
                    web::get().to(debit_note_payments),
                )
                .route("/debitNoteEvents", web::get().to(debit_note_events))
                .route("/invoices", web::post().to(issue_invoice))
                .route("/invoices", web::get().to(invoices))
                .route("/invoices/{id}", web::get().to(invoice))
                .route("/invoices/{id}/send", web::post().to(send_invoice))
                .route("/invoices/{id}/accept", web::post().to(accept_invoice))
                .route("/invoices/{id}/reject", web::post().to(reject_invoice))
                .route("/invoices/{id}/cancel", web::post().to(cancel_invoice))
                .route("/invoices/{id}/payments", web::get().to(invoice_payments))
                .route("/invoiceEvents", web::get().to(invoice_events))
                .route("/payments", web::get().to(payments))
                .route("/payments/status", web::get().to(payment_status))
                .route("/payments/{id}", web::get().to(payment_by_id))
                .route("/requestorAccounts", web::get().to(requestor_accounts))
                .route("/providerAccounts", web::get().to(provider_accounts)),
        );
        // A resource of its own: a `/local-api/v1` scope would hide the other local routes.
        config.service(
            web::resource("/local-api/v1/late-payments")
                .app_data(web::Data::new(local))
                .route(web::get().to(late_payments)),
        );
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &web::Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError(GolemError::bad_request(format!(
            "malformed {what} body: {error}"
        )))
    })
}

async fn create_allocation(
    payment: web::Data<PaymentService>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let value: serde_json::Value = json_body(&body, "allocation")?;
    if !value.is_object() {
        return Err(ApiError(GolemError::bad_request(
            "the allocation body must be a JSON object",
        )));
    }
    let allocation = payment.create_allocation(&value).await?;
    Ok(HttpResponse::Created().json(allocation))
}

async fn allocations(payment: web::Data<PaymentService>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.allocations().await?))
}

async fn allocation(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.allocation(&path).await?))
}

/// `PUT /allocations/{id}`: `{"totalAmount"?, "timeout"?}` (AllocationUpdate).
async fn amend_allocation(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let update: serde_json::Value = json_body(&body, "allocation update")?;
    Ok(HttpResponse::Ok().json(payment.amend_allocation(&path, &update).await?))
}

async fn release_allocation(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    payment.release_allocation(&path).await?;
    Ok(HttpResponse::Ok().json(()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecorationsQuery {
    #[serde(default)]
    allocation_ids: String,
}

async fn demand_decorations(
    payment: web::Data<PaymentService>,
    query: web::Query<DecorationsQuery>,
) -> ApiResult<HttpResponse> {
    let ids: Vec<String> = query
        .allocation_ids
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return Err(ApiError(GolemError::bad_request(
            "allocationIds is required: comma-separated allocation ids",
        )));
    }
    Ok(HttpResponse::Ok().json(payment.demand_decorations(&ids).await?))
}

async fn issue_debit_note(
    payment: web::Data<PaymentService>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let new: NewDebitNote = json_body(&body, "debit note")?;
    let note = payment.issue_debit_note(new).await?;
    Ok(HttpResponse::Created().json(note))
}

async fn debit_notes(payment: web::Data<PaymentService>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.debit_notes().await?))
}

async fn debit_note(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.debit_note(&path).await?))
}

async fn send_debit_note(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    payment.send_debit_note(&path).await?;
    Ok(HttpResponse::Ok().json(()))
}

async fn accept_debit_note(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let acceptance: Acceptance = json_body(&body, "acceptance")?;
    payment.accept_debit_note(&path, &acceptance).await?;
    Ok(HttpResponse::Ok().json(()))
}

async fn reject_debit_note(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let rejection: Rejection = json_body(&body, "rejection")?;
    payment.reject_debit_note(&path, rejection).await?;
    Ok(HttpResponse::Ok().json(()))
}

/// `POST /debitNotes/{id}/cancel` (issuer).
async fn cancel_debit_note(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    payment.cancel_debit_note(&path).await?;
    Ok(HttpResponse::Ok().json(()))
}

/// `GET /debitNotes/{id}/payments` (deprecated in the spec).
async fn debit_note_payments(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.document_payments(&path, false).await?))
}

async fn issue_invoice(
    payment: web::Data<PaymentService>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let new: NewInvoice = json_body(&body, "invoice")?;
    let invoice = payment.issue_invoice(new).await?;
    Ok(HttpResponse::Created().json(invoice))
}

async fn invoices(payment: web::Data<PaymentService>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.invoices().await?))
}

async fn invoice(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.invoice(&path).await?))
}

async fn send_invoice(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    payment.send_invoice(&path).await?;
    Ok(HttpResponse::Ok().json(()))
}

async fn accept_invoice(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let acceptance: Acceptance = json_body(&body, "acceptance")?;
    payment.accept_invoice(&path, &acceptance).await?;
    Ok(HttpResponse::Ok().json(()))
}

async fn reject_invoice(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let rejection: Rejection = json_body(&body, "rejection")?;
    payment.reject_invoice(&path, rejection).await?;
    Ok(HttpResponse::Ok().json(()))
}

/// `POST /invoices/{id}/cancel` (issuer).
async fn cancel_invoice(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    payment.cancel_invoice(&path).await?;
    Ok(HttpResponse::Ok().json(()))
}

/// `GET /invoices/{id}/payments` (deprecated in the spec).
async fn invoice_payments(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.document_payments(&path, true).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    after_timestamp: Option<String>,
    timeout: Option<f64>,
    max_events: Option<usize>,
    /// Only events of documents whose agreement has this appSessionId.
    app_session_id: Option<String>,
}

async fn events(
    payment: &PaymentService,
    query: &EventsQuery,
    invoices: bool,
) -> ApiResult<HttpResponse> {
    let after = query
        .after_timestamp
        .as_deref()
        .map(|text| parse_timestamp("afterTimestamp", text))
        .transpose()?;
    let timeout = timeout_seconds(query.timeout, DEFAULT_EVENTS_TIMEOUT, PAYMENT_MAX_TIMEOUT)?;
    let max_events = query.max_events.unwrap_or(100).clamp(1, 1000);
    // The response is built once the events are there: a builder made
    // before the wait would hold a pooled response head for all of it.
    let events = payment
        .events_for_session(
            invoices,
            after,
            timeout,
            max_events,
            query.app_session_id.as_deref(),
        )
        .await;
    Ok(HttpResponse::Ok().json(events))
}

async fn debit_note_events(
    _poll: LongPoll,
    payment: web::Data<PaymentService>,
    query: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    events(&payment, &query, false).await
}

async fn invoice_events(
    _poll: LongPoll,
    payment: web::Data<PaymentService>,
    query: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    events(&payment, &query, true).await
}

/// `GET /local-api/v1/late-payments` (not in the Golem API, whose invoices
/// have no field for it): accepted invoices the requestor did not pay within
/// the agreement's payment timeout, for `golem-provider status`.
async fn late_payments(payment: web::Data<PaymentService>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.late_payments().await?))
}

async fn payments(payment: web::Data<PaymentService>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.payments().await?))
}

async fn payment_by_id(
    payment: web::Data<PaymentService>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(payment.payment(&path).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusQuery {
    platform: Option<String>,
    driver: Option<String>,
    network: Option<String>,
}

/// `GET /payments/status?platform=|driver=&network=`: what `golem-daemon
/// payment status` shows (`{nodeId, platforms: [...]}`), limited to the
/// platforms that match every parameter given.
async fn payment_status(
    payment: web::Data<PaymentService>,
    query: web::Query<StatusQuery>,
) -> ApiResult<HttpResponse> {
    let mut report = payment.status_report().await?;
    let matches = |platform: &str| {
        let parsed = super::Platform::parse(platform).ok();
        let part = |wanted: &Option<String>, actual: Option<&str>| match wanted {
            None => true,
            Some(wanted) => actual.is_some_and(|actual| actual.eq_ignore_ascii_case(wanted)),
        };
        part(&query.platform, Some(platform))
            && part(&query.driver, parsed.as_ref().map(|p| p.driver.as_str()))
            && part(&query.network, parsed.as_ref().map(|p| p.network.as_str()))
    };
    report.platforms.retain(|status| matches(&status.platform));
    Ok(HttpResponse::Ok().json(report))
}

async fn requestor_accounts(payment: web::Data<PaymentService>) -> HttpResponse {
    HttpResponse::Ok().json(payment.accounts(true))
}

async fn provider_accounts(payment: web::Data<PaymentService>) -> HttpResponse {
    HttpResponse::Ok().json(payment.accounts(false))
}
