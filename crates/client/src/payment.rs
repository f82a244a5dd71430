//! Typed calls of the Golem Payment API (`/payment-api/v1`) on [`GolemClient`].

use golem_model::payment::{
    Account, Allocation, DebitNote, Invoice, MarketDecoration, Payment, PaymentDue, PaymentEvent,
};
use serde_json::json;

use crate::{ClientError, GolemClient};

const PAYMENT: &str = "/payment-api/v1";

/// Query-string encoding of a timestamp (`+` and `:` must be escaped).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

impl GolemClient {
    /// `POST /allocations` with yapapi's body (empty strings included).
    pub async fn create_allocation(
        &self,
        platform: &str,
        total_amount: &str,
    ) -> Result<Allocation, ClientError> {
        let body = json!({
            "allocationId": "",
            "paymentPlatform": platform,
            "totalAmount": total_amount,
            "spentAmount": "",
            "remainingAmount": "",
            "makeDeposit": false,
        });
        self.post(&format!("{PAYMENT}/allocations"), &body).await
    }

    pub async fn allocations(&self) -> Result<Vec<Allocation>, ClientError> {
        self.get(&format!("{PAYMENT}/allocations")).await
    }

    pub async fn allocation(&self, id: &str) -> Result<Allocation, ClientError> {
        self.get(&format!("{PAYMENT}/allocations/{id}")).await
    }

    pub async fn release_allocation(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("{PAYMENT}/allocations/{id}")).await
    }

    pub async fn demand_decorations(&self, ids: &[&str]) -> Result<MarketDecoration, ClientError> {
        self.get(&format!(
            "{PAYMENT}/demandDecorations?allocationIds={}",
            ids.join(",")
        ))
        .await
    }

    /// Provider: `POST /debitNotes`.
    pub async fn issue_debit_note(
        &self,
        agreement_id: &str,
        activity_id: &str,
        total_amount_due: &str,
    ) -> Result<DebitNote, ClientError> {
        let body = json!({
            "agreementId": agreement_id,
            "activityId": activity_id,
            "totalAmountDue": total_amount_due,
        });
        self.post(&format!("{PAYMENT}/debitNotes"), &body).await
    }

    pub async fn send_debit_note(&self, id: &str) -> Result<(), ClientError> {
        self.post_no_reply::<()>(&format!("{PAYMENT}/debitNotes/{id}/send"), None)
            .await
    }

    pub async fn debit_notes(&self) -> Result<Vec<DebitNote>, ClientError> {
        self.get(&format!("{PAYMENT}/debitNotes")).await
    }

    pub async fn debit_note(&self, id: &str) -> Result<DebitNote, ClientError> {
        self.get(&format!("{PAYMENT}/debitNotes/{id}")).await
    }

    pub async fn accept_debit_note(
        &self,
        id: &str,
        amount: &str,
        allocation_id: &str,
    ) -> Result<(), ClientError> {
        let body = json!({"totalAmountAccepted": amount, "allocationId": allocation_id});
        self.post_no_reply(&format!("{PAYMENT}/debitNotes/{id}/accept"), Some(&body))
            .await
    }

    pub async fn reject_debit_note(&self, id: &str, message: &str) -> Result<(), ClientError> {
        let body = json!({"rejectionReason": "UNSOLICITED_SERVICE", "totalAmountAccepted": "0", "message": message});
        self.post_no_reply(&format!("{PAYMENT}/debitNotes/{id}/reject"), Some(&body))
            .await
    }

    /// Provider: `POST /invoices`.
    pub async fn issue_invoice(
        &self,
        agreement_id: &str,
        amount: &str,
    ) -> Result<Invoice, ClientError> {
        let body = json!({"agreementId": agreement_id, "amount": amount});
        self.post(&format!("{PAYMENT}/invoices"), &body).await
    }

    pub async fn send_invoice(&self, id: &str) -> Result<(), ClientError> {
        self.post_no_reply::<()>(&format!("{PAYMENT}/invoices/{id}/send"), None)
            .await
    }

    pub async fn invoices(&self) -> Result<Vec<Invoice>, ClientError> {
        self.get(&format!("{PAYMENT}/invoices")).await
    }

    pub async fn invoice(&self, id: &str) -> Result<Invoice, ClientError> {
        self.get(&format!("{PAYMENT}/invoices/{id}")).await
    }

    pub async fn accept_invoice(
        &self,
        id: &str,
        amount: &str,
        allocation_id: &str,
    ) -> Result<(), ClientError> {
        let body = json!({"totalAmountAccepted": amount, "allocationId": allocation_id});
        self.post_no_reply(&format!("{PAYMENT}/invoices/{id}/accept"), Some(&body))
            .await
    }

    pub async fn reject_invoice(&self, id: &str, message: &str) -> Result<(), ClientError> {
        let body = json!({"rejectionReason": "UNSOLICITED_SERVICE", "totalAmountAccepted": "0", "message": message});
        self.post_no_reply(&format!("{PAYMENT}/invoices/{id}/reject"), Some(&body))
            .await
    }

    /// `GET /debitNoteEvents` (`invoices == false`) or `/invoiceEvents`;
    /// `after` is an RFC 3339 timestamp (the last event's `eventDate`).
    pub async fn payment_events(
        &self,
        invoices: bool,
        after: Option<&str>,
        timeout_seconds: f64,
        max_events: usize,
    ) -> Result<Vec<PaymentEvent>, ClientError> {
        let kind = if invoices {
            "invoiceEvents"
        } else {
            "debitNoteEvents"
        };
        let mut path = format!("{PAYMENT}/{kind}?timeout={timeout_seconds}&maxEvents={max_events}");
        if let Some(after) = after {
            path.push_str(&format!("&afterTimestamp={}", encode(after)));
        }
        self.get(&path).await
    }

    pub async fn payments(&self) -> Result<Vec<Payment>, ClientError> {
        self.get(&format!("{PAYMENT}/payments")).await
    }

    pub async fn requestor_accounts(&self) -> Result<Vec<Account>, ClientError> {
        self.get(&format!("{PAYMENT}/requestorAccounts")).await
    }

    pub async fn provider_accounts(&self) -> Result<Vec<Account>, ClientError> {
        self.get(&format!("{PAYMENT}/providerAccounts")).await
    }

    /// `GET /local-api/v1/late-payments`: accepted invoices this node issued
    /// that were not paid within the agreement's payment timeout.
    pub async fn late_payments(&self) -> Result<Vec<PaymentDue>, ClientError> {
        self.get("/local-api/v1/late-payments").await
    }
}
