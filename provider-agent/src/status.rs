//! `golem-provider status [--json]`: the offers, agreements, activities and
//! earnings of this agent, from its state file and (when reachable) the daemon.

use std::collections::HashSet;

use golem_client::GolemClient;
use golem_model::payment::{DocumentStatus, PaymentDue};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::state::AgentState;

/// Build the status document.
pub async fn status(state: &AgentState, client: Option<&GolemClient>) -> Value {
    let mut daemon = json!({"reachable": false,
        "error": "not asked: no app-key (pass --app-key or set YAGNA_APPKEY)"});
    let mut live_offers: Option<HashSet<String>> = None;
    let mut accepted = Decimal::ZERO;
    let mut settled = Decimal::ZERO;
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
        if let Ok(invoices) = client.invoices().await {
            let ours: HashSet<&String> = state.agreements.keys().collect();
            for invoice in invoices.iter().filter(|i| ours.contains(&i.agreement_id)) {
                match invoice.status {
                    DocumentStatus::Accepted => accepted += invoice.amount,
                    DocumentStatus::Settled => settled += invoice.amount,
                    _ => {}
                }
            }
        }
    }
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
    let mut invoiced = Decimal::ZERO;
    let mut agreements = Vec::new();
    let mut activities = Vec::new();
    for agreement in state.agreements.values() {
        if let Some(invoice) = &agreement.invoice {
            if invoice.sent {
                invoiced += invoice.amount;
            }
        }
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
        "earnings": {
            "invoiced": invoiced.to_string(),
            "accepted": accepted.to_string(),
            "settled": settled.to_string(),
        },
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
    out.push_str(&format!(
        "earnings: invoiced {} GLM, accepted {} GLM, settled {} GLM\n",
        status["earnings"]["invoiced"].as_str().unwrap_or("0"),
        status["earnings"]["accepted"].as_str().unwrap_or("0"),
        status["earnings"]["settled"].as_str().unwrap_or("0")
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
    use super::*;

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
