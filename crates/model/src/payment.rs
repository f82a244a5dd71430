//! Payment API DTOs (`/payment-api/v1`, JSON as the original ya-client spec
//! shapes it: camelCase, amounts as decimal strings) and the bus messages the
//! payment services of two nodes exchange at `/public/payment`.
//!
//! Amounts are [`Decimal`] everywhere, never floats; on the wire they are
//! decimal strings.

use chrono::{DateTime, Utc};
pub use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::bus::BusMessage;
use crate::{GolemError, NodeId};

/// Public endpoint of the payment service (reached as `/net/<node>/public/payment`).
pub const PAYMENT_PUBLIC_SERVICE: &str = "/public/payment";

/// The payment protocol version announced in demand decorations (a string, as yagna sends it).
pub const PAYMENT_PROTOCOL_VERSION: &str = "3";

/// The bus address of `node`'s payment service.
pub fn payment_address(node: NodeId) -> String {
    crate::bus::net_address(node, PAYMENT_PUBLIC_SERVICE)
}

/// Parse a decimal amount sent by a client: a decimal string (or JSON number), never negative.
pub fn parse_amount(what: &str, value: &serde_json::Value) -> Result<Decimal, GolemError> {
    let text = match value {
        serde_json::Value::String(text) => text.trim().to_string(),
        serde_json::Value::Number(number) => number.to_string(),
        other => {
            return Err(GolemError::bad_request(format!(
                "{what} must be a decimal string, got {other}"
            )))
        }
    };
    let amount: Decimal = text
        .parse()
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| GolemError::bad_request(format!("{what} {text:?} is not a decimal amount")))?;
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(GolemError::bad_request(format!(
            "{what} {text:?} must not be negative"
        )));
    }
    Ok(amount.normalize())
}

/// A budget reserved by the requestor for paying providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub allocation_id: String,
    pub address: String,
    pub payment_platform: String,
    pub total_amount: Decimal,
    pub spent_amount: Decimal,
    pub remaining_amount: Decimal,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DateTime<Utc>>,
    pub make_deposit: bool,
    pub created_ts: DateTime<Utc>,
    pub updated_ts: DateTime<Utc>,
}

/// `GET /demandDecorations`: what a demand must carry to use the allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketDecoration {
    pub properties: Vec<MarketProperty>,
    pub constraints: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketProperty {
    pub key: String,
    pub value: String,
}

/// Status of a debit note or an invoice, as the original names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DocumentStatus {
    Issued,
    Received,
    Accepted,
    Rejected,
    Failed,
    Settled,
    Cancelled,
}

impl DocumentStatus {
    /// Order of progress: a message that would move a document backwards changes nothing.
    pub fn rank(self) -> u8 {
        match self {
            DocumentStatus::Issued => 0,
            DocumentStatus::Received => 1,
            DocumentStatus::Rejected | DocumentStatus::Accepted => 2,
            DocumentStatus::Failed => 3,
            DocumentStatus::Settled | DocumentStatus::Cancelled => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebitNote {
    pub debit_note_id: String,
    pub issuer_id: NodeId,
    pub recipient_id: NodeId,
    pub payee_addr: String,
    pub payer_addr: String,
    pub payment_platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_debit_note_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub agreement_id: String,
    pub activity_id: String,
    pub total_amount_due: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_counter_vector: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_due_date: Option<DateTime<Utc>>,
    pub status: DocumentStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub invoice_id: String,
    pub issuer_id: NodeId,
    pub recipient_id: NodeId,
    pub payee_addr: String,
    pub payer_addr: String,
    pub payment_platform: String,
    pub timestamp: DateTime<Utc>,
    pub agreement_id: String,
    #[serde(default)]
    pub activity_ids: Vec<String>,
    pub amount: Decimal,
    pub payment_due_date: DateTime<Utc>,
    pub status: DocumentStatus,
}

/// `POST /debitNotes` body. The original derives the agreement from the
/// activity; here `agreementId` is required alongside `activityId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDebitNote {
    #[serde(default)]
    pub agreement_id: Option<String>,
    pub activity_id: String,
    pub total_amount_due: serde_json::Value,
    #[serde(default)]
    pub usage_counter_vector: Option<serde_json::Value>,
    #[serde(default)]
    pub payment_due_date: Option<DateTime<Utc>>,
}

/// `POST /invoices` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewInvoice {
    pub agreement_id: String,
    #[serde(default)]
    pub activity_ids: Option<Vec<String>>,
    pub amount: serde_json::Value,
    #[serde(default)]
    pub payment_due_date: Option<DateTime<Utc>>,
}

/// `POST /debitNotes/{id}/accept` and `/invoices/{id}/accept` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acceptance {
    pub total_amount_accepted: serde_json::Value,
    pub allocation_id: String,
}

/// `POST .../reject` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    #[serde(default = "default_rejection_reason")]
    pub rejection_reason: String,
    #[serde(default)]
    pub total_amount_accepted: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn default_rejection_reason() -> String {
    "UNSOLICITED_SERVICE".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEventType {
    DebitNoteReceivedEvent,
    DebitNoteAcceptedEvent,
    DebitNoteRejectedEvent,
    InvoiceReceivedEvent,
    InvoiceAcceptedEvent,
    InvoiceRejectedEvent,
    InvoiceSettledEvent,
    /// The issuer cancelled a debit note the recipient had not accepted.
    DebitNoteCancelledEvent,
    /// The issuer cancelled an invoice the recipient had not accepted.
    InvoiceCancelledEvent,
}

impl PaymentEventType {
    pub fn is_invoice(self) -> bool {
        matches!(
            self,
            PaymentEventType::InvoiceReceivedEvent
                | PaymentEventType::InvoiceAcceptedEvent
                | PaymentEventType::InvoiceRejectedEvent
                | PaymentEventType::InvoiceSettledEvent
                | PaymentEventType::InvoiceCancelledEvent
        )
    }
}

/// One event of `/invoiceEvents` or `/debitNoteEvents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentEvent {
    pub event_type: PaymentEventType,
    pub event_date: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debit_note_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementPayment {
    pub agreement_id: String,
    pub amount: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<String>,
}

/// A payment made (requestor) or received (provider).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub payment_id: String,
    pub payer_id: NodeId,
    pub payee_id: NodeId,
    pub payer_addr: String,
    pub payee_addr: String,
    pub payment_platform: String,
    pub amount: Decimal,
    pub timestamp: DateTime<Utc>,
    pub agreement_payments: Vec<AgreementPayment>,
    #[serde(default)]
    pub activity_payments: Vec<serde_json::Value>,
    pub details: String,
}

/// `GET /requestorAccounts` and `/providerAccounts` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub platform: String,
    pub address: String,
    pub driver: String,
    pub network: String,
    pub token: String,
    pub send: bool,
    pub receive: bool,
}

// ---- bus messages between payment services (`/public/payment`) ----

/// Provider → requestor: a debit note issued for one of their agreements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendDebitNote(pub DebitNote);
impl BusMessage for SendDebitNote {
    const NAME: &'static str = "SendDebitNote";
    type Reply = ();
}

/// Provider → requestor: an invoice issued for one of their agreements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendInvoice(pub Invoice);
impl BusMessage for SendInvoice {
    const NAME: &'static str = "SendInvoice";
    type Reply = ();
}

/// Requestor → provider: a debit note was accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptDebitNote {
    pub debit_note_id: String,
    pub total_amount_accepted: Decimal,
}
impl BusMessage for AcceptDebitNote {
    const NAME: &'static str = "AcceptDebitNote";
    type Reply = ();
}

/// Requestor → provider: a debit note was rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectDebitNote {
    pub debit_note_id: String,
    pub rejection: Rejection,
}
impl BusMessage for RejectDebitNote {
    const NAME: &'static str = "RejectDebitNote";
    type Reply = ();
}

/// Requestor → provider: an invoice was accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptInvoice {
    pub invoice_id: String,
    pub total_amount_accepted: Decimal,
}
impl BusMessage for AcceptInvoice {
    const NAME: &'static str = "AcceptInvoice";
    type Reply = ();
}

/// Requestor → provider: an invoice was rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectInvoice {
    pub invoice_id: String,
    pub rejection: Rejection,
}
impl BusMessage for RejectInvoice {
    const NAME: &'static str = "RejectInvoice";
    type Reply = ();
}

/// Provider → requestor: the issuer cancels a debit note it sent. The
/// recipient refuses (Conflict) once it has accepted it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelDebitNote {
    pub debit_note_id: String,
}
impl BusMessage for CancelDebitNote {
    const NAME: &'static str = "CancelDebitNote";
    type Reply = ();
}

/// Provider → requestor: the issuer cancels an invoice it sent. The
/// recipient refuses (Conflict) once it has accepted it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelInvoice {
    pub invoice_id: String,
}
impl BusMessage for CancelInvoice {
    const NAME: &'static str = "CancelInvoice";
    type Reply = ();
}

/// Requestor → provider: a payment settling `invoice_ids` was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendPayment {
    pub payment: Payment,
    pub invoice_ids: Vec<String>,
}
impl BusMessage for SendPayment {
    const NAME: &'static str = "SendPayment";
    type Reply = ();
}

/// Local endpoint of the payment service (the `golem-daemon payment` commands).
pub const PAYMENT_LOCAL_SERVICE: &str = "/local/payment";

/// An accepted invoice whose payment a driver is still carrying out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPayment {
    pub payment_id: String,
    pub invoice_id: String,
    pub issuer_id: NodeId,
    pub agreement_id: String,
    pub allocation_id: String,
    pub platform: String,
    pub payer_addr: String,
    pub payee_addr: String,
    pub amount: Decimal,
    pub created: DateTime<Utc>,
    /// When it must be paid by: the acceptance plus the agreement's
    /// `golem.com.scheme.payu.payment-timeout-sec?`, or the invoice's
    /// `paymentDueDate`, whichever comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
    /// What the driver waits for, in words.
    #[serde(default)]
    pub status: String,
}

/// The agreement property bounding how long a requestor may take to pay an
/// accepted invoice (seconds; the provider's offer states it).
pub const PAYMENT_TIMEOUT_PROPERTY: &str = "golem.com.scheme.payu.payment-timeout-sec?";

/// Provider: an invoice this node issued that its requestor accepted, under
/// an agreement with a payment timeout: when its payment is due and whether
/// the requestor is late with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDue {
    pub invoice_id: String,
    pub agreement_id: String,
    /// The requestor, who owes the payment.
    pub payer_id: NodeId,
    pub amount: Decimal,
    pub accepted_at: DateTime<Utc>,
    pub payment_timeout_sec: u64,
    pub due: DateTime<Utc>,
    /// Set once `due` passed with the invoice not settled: a late payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_since: Option<DateTime<Utc>>,
    /// When the invoice was settled after all (a late payer that paid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<DateTime<Utc>>,
}

/// Amounts of one direction (this node paying, or being paid) on one platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowStatus {
    /// Asked for by debit notes and invoices (the latest per activity or agreement).
    pub requested: Decimal,
    pub accepted: Decimal,
    pub paid: Decimal,
    /// Accepted and handed to a driver, not settled yet (incoming: reported by
    /// the payer, its transaction not confirmed on chain yet).
    pub pending: Decimal,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationSummary {
    pub count: usize,
    pub released: usize,
    pub total: Decimal,
    pub spent: Decimal,
    pub remaining: Decimal,
}

/// `golem-daemon payment status` for one platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformStatus {
    pub platform: String,
    /// This node as requestor.
    pub outgoing: FlowStatus,
    /// This node as provider.
    pub incoming: FlowStatus,
    pub allocations: AllocationSummary,
    pub pending_payments: Vec<PendingPayment>,
}

impl PlatformStatus {
    pub fn new(platform: &str) -> PlatformStatus {
        PlatformStatus {
            platform: platform.to_string(),
            ..Default::default()
        }
    }

    /// Amounts without trailing zeros.
    pub fn normalized(mut self) -> PlatformStatus {
        for flow in [&mut self.outgoing, &mut self.incoming] {
            flow.requested = flow.requested.normalize();
            flow.accepted = flow.accepted.normalize();
            flow.paid = flow.paid.normalize();
            flow.pending = flow.pending.normalize();
        }
        let allocations = &mut self.allocations;
        allocations.total = allocations.total.normalize();
        allocations.spent = allocations.spent.normalize();
        allocations.remaining = allocations.remaining.normalize();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentStatusReport {
    pub node_id: NodeId,
    pub platforms: Vec<PlatformStatus>,
    /// Provider: accepted invoices paid late or not yet paid past their due date.
    #[serde(default)]
    pub late_payments: Vec<PaymentDue>,
}

/// Ask the local payment service for its [`PaymentStatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetPaymentStatus;
impl BusMessage for GetPaymentStatus {
    const NAME: &'static str = "GetPaymentStatus";
    type Reply = PaymentStatusReport;
}

/// The drivers and their networks (JSON objects, one per network).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPaymentDrivers;
impl BusMessage for ListPaymentDrivers {
    const NAME: &'static str = "ListPaymentDrivers";
    type Reply = Vec<serde_json::Value>;
}

/// Requestor and provider accounts of this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListAccounts;
impl BusMessage for ListAccounts {
    const NAME: &'static str = "ListAccounts";
    type Reply = Vec<Account>;
}

/// Release every live allocation; replies with their ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseAllocations;
impl BusMessage for ReleaseAllocations {
    const NAME: &'static str = "ReleaseAllocations";
    type Reply = Vec<String>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_parse_as_decimals() {
        assert_eq!(
            parse_amount("x", &json!("0.1")).unwrap() + parse_amount("x", &json!("0.2")).unwrap(),
            parse_amount("x", &json!("0.3")).unwrap()
        );
        assert_eq!(parse_amount("x", &json!(5)).unwrap().to_string(), "5");
        assert!(parse_amount("x", &json!("abc")).is_err());
        assert!(parse_amount("x", &json!("")).is_err());
        assert!(parse_amount("x", &json!("-1")).is_err());
        assert!(parse_amount("x", &json!(null)).is_err());
    }

    #[test]
    fn amounts_serialize_as_strings() {
        let payment = AgreementPayment {
            agreement_id: "a".into(),
            amount: parse_amount("x", &json!("1.50")).unwrap(),
            allocation_id: None,
        };
        assert_eq!(
            serde_json::to_value(&payment).unwrap(),
            json!({"agreementId": "a", "amount": "1.5"})
        );
    }

    #[test]
    fn statuses_progress_only_forward() {
        assert!(DocumentStatus::Settled.rank() > DocumentStatus::Accepted.rank());
        assert_eq!(
            serde_json::to_value(DocumentStatus::Received).unwrap(),
            json!("RECEIVED")
        );
    }
}
