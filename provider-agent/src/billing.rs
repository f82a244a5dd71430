//! Billing arithmetic: the agreed linear price applied to an activity's usage
//! counters, in `rust_decimal` (never floats), and the billing record of an
//! agreement read from the agreement itself (coeffs, usage vector, debit-note
//! interval and accept timeout as agreed).

use crate::capacity::Claim;
use std::str::FromStr;

use chrono::Utc;
use golem_model::market::Agreement;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::offer::props;
use crate::state::AgreementRecord;

/// GLM has 18 decimals.
pub const DECIMALS: u32 = 18;

/// A float from the wire as a decimal (shortest round-trip text, so `0.1` is exactly 0.1).
pub fn decimal(value: f64) -> Decimal {
    if !value.is_finite() {
        return Decimal::ZERO;
    }
    Decimal::from_str(&value.to_string())
        .or_else(|_| Decimal::from_scientific(&format!("{value:e}")))
        .unwrap_or(Decimal::ZERO)
}

/// `constant + Σ coeff[i] × counter[i]`; `coeffs` ends with the constant.
pub fn cost(coeffs: &[Decimal], counters: &[f64]) -> Decimal {
    let Some((constant, per_counter)) = coeffs.split_last() else {
        return Decimal::ZERO;
    };
    let variable: Decimal = per_counter
        .iter()
        .zip(counters)
        .map(|(coeff, counter)| *coeff * decimal(*counter))
        .sum();
    (*constant + variable).round_dp(DECIMALS)
}

fn seconds(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|v| *v >= 0.0).map(|v| v as u64))
}

/// What this agent bills for `agreement`, from its offer (our Draft) and demand.
pub fn record_for(agreement: &Agreement, default_interval_sec: u64) -> AgreementRecord {
    let offer = &agreement.offer.properties;
    let coeffs = offer
        .get(props::LINEAR_COEFFS)
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .map(|value| value.as_f64().map(decimal).unwrap_or(Decimal::ZERO))
                .collect()
        })
        .unwrap_or_default();
    let usage_vector = offer
        .get(props::USAGE_VECTOR)
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(|value| value.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let interval = seconds(offer.get(props::DEBIT_NOTE_INTERVAL))
        .unwrap_or(default_interval_sec)
        .max(1);
    // The accept deadline binds only when the requestor asked for it.
    let accept_timeout_sec = agreement
        .demand
        .properties
        .get(props::ACCEPT_TIMEOUT)
        .and_then(|_| seconds(offer.get(props::ACCEPT_TIMEOUT)));
    let approved_at = agreement.approved_date.unwrap_or_else(Utc::now);
    AgreementRecord {
        agreement_id: agreement.agreement_id.clone(),
        runtime: offer
            .get(props::RUNTIME_NAME)
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        requestor_id: agreement.demand.requestor_id.to_string(),
        approved_at,
        valid_to: agreement.valid_to,
        coeffs,
        usage_vector,
        debit_note_interval_sec: interval,
        accept_timeout_sec,
        next_debit_note_at: Utc::now() + chrono::Duration::seconds(interval as i64),
        activities: Default::default(),
        unaccepted: Vec::new(),
        ended: None,
        invoice: None,
        invoice_error: None,
        claim: Claim::of_demand(&agreement.demand.constraints),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_and_the_constant_comes_last() {
        let coeffs = vec![decimal(0.1), decimal(0.01), decimal(0.5)];
        assert_eq!(cost(&coeffs, &[2.0, 30.0]), Decimal::new(10, 1));
        assert_eq!(cost(&coeffs, &[0.0, 0.0]), Decimal::new(5, 1));
        assert_eq!(decimal(0.1) + decimal(0.2), Decimal::new(3, 1));
        assert_eq!(cost(&[], &[1.0]), Decimal::ZERO);
        assert_eq!(decimal(1e-7), Decimal::new(1, 7));
    }
}
