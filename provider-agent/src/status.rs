//! `golem-provider status [--json]`: the offers, agreements, activities and
//! earnings of this agent, from its state file and (when reachable) the daemon.

use std::collections::HashSet;

use chrono::Utc;
use golem_client::GolemClient;
use golem_model::payment::PaymentDue;
use serde_json::{json, Value};

use crate::earnings;
use crate::state::AgentState;

/// Build the status document.
pub async fn status(state: &AgentState, client: Option<&GolemClient>) -> Value {
    let mut daemon = json!({"reachable": false,
        "error": "not asked: no app-key (pass --app-key or set YAGNA_APPKEY)"});
    let mut live_offers: Option<HashSet<String>> = None;
    let mut invoices = None;
    let mut late_payers = Vec::new();
    if let Some(client) = client {
        if let Ok(late) = client.late_payments().await {
            late_payers = late.iter().map(late_payer).collect();
        }
        match client.offers().await {
            Ok(offers) => {
                live_offers = Some(offers.into_iter().map(|offer| offer.offer_id).collect());
                daemon = json!({"reachable": true, "apiUrl": client.base_url()});
            }
            Err(error) => {
                daemon = json!({"reachable": false, "apiUrl": client.base_url(), "error": error.to_string()});
            }
        }
        if let Ok(all) = client.invoices().await {
            invoices = Some(earnings::ours(state, &all));
        }
    }
    let invoices = invoices.unwrap_or_else(|| earnings::from_state(state));
    let totals = earnings::totals(&invoices, Utc::now());
    let offers: Vec<Value> = state
        .offers
        .iter()
        .filter(|offer| {
            live_offers
                .as_ref()
                .is_none_or(|live| live.contains(&offer.subscription_id))
        })
        .map(|offer| {
            json!({
                "subscriptionId": offer.subscription_id,
                "runtime": offer.runtime,
                "preset": offer.preset,
                "coeffs": offer.coeffs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut agreements = Vec::new();
    let mut activities = Vec::new();
    for agreement in state.agreements.values() {
        agreements.push(json!({
            "agreementId": agreement.agreement_id,
            "runtime": agreement.runtime,
            "requestorId": agreement.requestor_id,
            "state": if agreement.live() { "live" } else { "ended" },
            "endedReason": agreement.ended,
            "approvedAt": agreement.approved_at,
            "validTo": agreement.valid_to,
            "debitNoteIntervalSec": agreement.debit_note_interval_sec,
            "amountSoFar": agreement.total().to_string(),
            "invoiceId": agreement.invoice.as_ref().map(|i| i.invoice_id.clone()),
            "invoiceAmount": agreement.invoice.as_ref().map(|i| i.amount.to_string()),
            "invoiceSent": agreement.invoice.as_ref().is_some_and(|i| i.sent),
            "invoiceError": agreement.invoice_error,
            "activities": agreement.activities.len(),
        }));
        for activity in agreement.activities.values() {
            activities.push(json!({
                "activityId": activity.activity_id,
                "agreementId": agreement.agreement_id,
                "alive": activity.alive,
                "pid": activity.pid,
                "usage": activity.usage,
                "amount": activity.amount.to_string(),
                "endedReason": activity.ended_reason,
            }));
        }
    }
    json!({
        "daemon": daemon,
        "offers": offers,
        "agreements": agreements,
        "activities": activities,
        "earnings": earnings_document(&totals),
        "latePayers": late_payers,
    })
}

/// One late payment as the status shows it.
fn late_payer(payment: &PaymentDue) -> Value {
    json!({
        "requestorId": payment.payer_id,
        "invoiceId": payment.invoice_id,
        "agreementId": payment.agreement_id,
        "amount": payment.amount.to_string(),
        "acceptedAt": payment.accepted_at,
        "paymentTimeoutSec": payment.payment_timeout_sec,
        "due": payment.due,
        "lateSince": payment.late_since,
        "paidAt": payment.settled_at,
        "state": if payment.settled_at.is_some() { "paid late" } else { "unpaid" },
    })
}

/// The earnings of the status document: each step's amount (the keys
/// `invoiced`, `accepted`, `paid`, `late`, `rejected`) and, under `counts`,
/// its number of invoices.
pub fn earnings_document(totals: &earnings::Totals) -> Value {
    let steps = [
        ("invoiced", totals.invoiced),
        ("accepted", totals.accepted),
        ("paid", totals.paid),
        ("late", totals.late),
        ("rejected", totals.rejected),
    ];
    let mut document = serde_json::Map::new();
    let mut counts = serde_json::Map::new();
    for (key, tally) in steps {
        document.insert(key.into(), json!(tally.amount.to_string()));
        counts.insert(key.into(), json!(tally.count));
    }
    document.insert("counts".into(), Value::Object(counts));
    Value::Object(document)
}

/// A few human lines of the status document.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let reachable = status["daemon"]["reachable"].as_bool().unwrap_or(false);
    out.push_str(&format!(
        "daemon: {}\n",
        if reachable {
            "reachable".to_string()
        } else {
            format!(
                "NOT reachable ({})",
                status["daemon"]["error"]
                    .as_str()
                    .unwrap_or("unknown error")
            )
        }
    ));
    let list = |key: &str| status[key].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("offers: {}\n", list("offers").len()));
    for offer in list("offers") {
        out.push_str(&format!(
            "  {} {} (preset {}, coeffs {})\n",
            offer["runtime"].as_str().unwrap_or("?"),
            offer["subscriptionId"].as_str().unwrap_or("?"),
            offer["preset"].as_str().unwrap_or("?"),
            offer["coeffs"]
        ));
    }
    let agreements = list("agreements");
    let live = agreements.iter().filter(|a| a["state"] == "live").count();
    out.push_str(&format!(
        "agreements: {live} live, {} ended\n",
        agreements.len() - live
    ));
    let activities = list("activities");
    let running = activities.iter().filter(|a| a["alive"] == true).count();
    out.push_str(&format!(
        "activities: {running} running, {} total\n",
        activities.len()
    ));
    let earned = |key: &str| status["earnings"][key].as_str().unwrap_or("0").to_string();
    out.push_str(&format!(
        "earnings: invoiced {} GLM, accepted {} GLM, paid {} GLM, late {} GLM, rejected {} GLM\n",
        earned("invoiced"),
        earned("accepted"),
        earned("paid"),
        earned("late"),
        earned("rejected")
    ));
    let late = list("latePayers");
    if !late.is_empty() {
        let unpaid = late.iter().filter(|l| l["state"] == "unpaid").count();
        out.push_str(&format!(
            "late payers: {unpaid} unpaid, {} paid late\n",
            late.len() - unpaid
        ));
        for payer in late {
            out.push_str(&format!(
                "  requestor {} invoice {} ({} GLM): due {} (payment timeout {} s), {}\n",
                payer["requestorId"].as_str().unwrap_or("?"),
                payer["invoiceId"].as_str().unwrap_or("?"),
                payer["amount"].as_str().unwrap_or("?"),
                payer["due"].as_str().unwrap_or("?"),
                payer["paymentTimeoutSec"],
                payer["state"].as_str().unwrap_or("?"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::earnings::InvoiceFacts;
    use golem_model::payment::DocumentStatus;
    use rust_decimal::Decimal;

    #[test]
    fn a_settled_invoice_is_shown_accepted_and_paid() {
        let now = Utc::now();
        let settled = InvoiceFacts {
            invoice_id: "i1".into(),
            agreement_id: "a1".into(),
            platform: "dummy-local-tglm".into(),
            amount: "1.5".parse().unwrap(),
            status: DocumentStatus::Settled,
            issued_at: now,
            due_at: now,
        };
        let document = json!({
            "daemon": {"reachable": true},
            "earnings": earnings_document(&earnings::totals(&[settled], now)),
        });
        assert_eq!(document["earnings"]["accepted"], "1.5");
        assert_eq!(document["earnings"]["counts"]["paid"], 1);
        let text = render(&document);
        assert!(
            text.contains("invoiced 1.5 GLM, accepted 1.5 GLM, paid 1.5 GLM, late 0 GLM"),
            "{text}"
        );
    }

    #[test]
    fn late_payers_are_listed_by_requestor_and_state() {
        let payment = PaymentDue {
            invoice_id: "inv-1".into(),
            agreement_id: "agr-1".into(),
            payer_id: golem_model::NodeId::from_bytes([7; 20]),
            amount: Decimal::new(25, 1),
            accepted_at: chrono::Utc::now(),
            payment_timeout_sec: 120,
            due: chrono::Utc::now(),
            late_since: Some(chrono::Utc::now()),
            settled_at: None,
        };
        let mut paid = payment.clone();
        paid.invoice_id = "inv-2".into();
        paid.settled_at = Some(chrono::Utc::now());
        let status = json!({
            "daemon": {"reachable": true},
            "earnings": {},
            "latePayers": [late_payer(&payment), late_payer(&paid)],
        });
        assert_eq!(status["latePayers"][0]["state"], "unpaid");
        assert_eq!(status["latePayers"][0]["paymentTimeoutSec"], 120);
        assert_eq!(status["latePayers"][1]["state"], "paid late");
        let text = render(&status);
        assert!(
            text.contains("late payers: 1 unpaid, 1 paid late"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "requestor {} invoice inv-1 (2.5 GLM)",
                payment.payer_id
            )),
            "{text}"
        );
        let without = render(&json!({"daemon": {"reachable": true}, "earnings": {}}));
        assert!(!without.contains("late payers"), "{without}");
    }
}
