//! The linear price an agreement fixes (`golem.com.pricing.model.linear.coeffs`
//! aligned with `golem.com.usage.vector`, the last coefficient being the start
//! fee) and the most a provider may bill under it: the cap a requestor holds
//! every debit note and invoice to. Pure arithmetic in [`Decimal`], no IO.
//!
//! Time counters are bounded by the wall clock, whatever the provider reports:
//! `golem.usage.duration_sec` by the time since the agreement was approved,
//! `golem.usage.cpu_sec` by that time × the threads the offer names. Other
//! counters can only be taken as reported. The start fee counts once per
//! activity. A small tolerance absorbs clock skew and rounding.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::market::Agreement;
use crate::properties::Properties;

pub const LINEAR_COEFFS: &str = "golem.com.pricing.model.linear.coeffs";
pub const USAGE_VECTOR: &str = "golem.com.usage.vector";
pub const CPU_THREADS: &str = "golem.inf.cpu.threads";
pub const USAGE_DURATION_SEC: &str = "golem.usage.duration_sec";
pub const USAGE_CPU_SEC: &str = "golem.usage.cpu_sec";

/// Seconds added to the elapsed time: clocks of two nodes differ a little and
/// usage is measured slightly after the approval is recorded.
pub const CLOCK_GRACE_SECONDS: i64 = 10;
/// Relative slack on the cap (percent), for rounding of float coefficients.
pub const TOLERANCE_PERCENT: u32 = 1;

/// Why a billed amount is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error(
        "the agreement sets no linear price ({LINEAR_COEFFS}), so nothing can be billed on it"
    )]
    NoPrice,
    #[error("the agreement's price is malformed: {0}")]
    Malformed(String),
    #[error("{amount} exceeds the most the agreed price allows ({cap}: {explanation})")]
    OverCap {
        amount: Decimal,
        cap: Decimal,
        explanation: String,
    },
}

/// The agreed linear price, read from the agreement's offer.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearPricing {
    /// Counter names, in the order of the usage vector.
    pub usage_vector: Vec<String>,
    /// Price per unit of each counter, aligned with `usage_vector`.
    pub per_counter: Vec<Decimal>,
    /// Charged once per activity.
    pub start_fee: Decimal,
    /// CPU threads offered: the most cpu seconds one wall-clock second can hold.
    pub threads: Decimal,
}

/// A JSON number as an exact decimal (shortest round-trip text, so `0.1` is 0.1).
fn decimal_of(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(number) => {
            let text = number.to_string();
            Decimal::from_str(&text)
                .or_else(|_| Decimal::from_scientific(&text))
                .ok()
        }
        Value::String(text) => Decimal::from_str(text.trim()).ok(),
        _ => None,
    }
}

impl LinearPricing {
    /// The price of `offer` properties; [`PricingError::NoPrice`] when they set none.
    pub fn of_offer(offer: &Properties) -> Result<LinearPricing, PricingError> {
        let coeffs = match offer.get(LINEAR_COEFFS) {
            None => return Err(PricingError::NoPrice),
            Some(Value::Array(values)) => values
                .iter()
                .map(|value| {
                    decimal_of(value)
                        .filter(|coeff| !coeff.is_sign_negative() || coeff.is_zero())
                        .ok_or_else(|| {
                            PricingError::Malformed(format!("coefficient {value} is not a price"))
                        })
                })
                .collect::<Result<Vec<Decimal>, PricingError>>()?,
            Some(other) => {
                return Err(PricingError::Malformed(format!(
                    "{LINEAR_COEFFS} is {other}, not a list"
                )))
            }
        };
        let usage_vector: Vec<String> = match offer.get(USAGE_VECTOR) {
            None => Vec::new(),
            Some(Value::Array(values)) => values
                .iter()
                .map(|value| value.as_str().map(String::from))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| {
                    PricingError::Malformed(format!("{USAGE_VECTOR} holds a non-string"))
                })?,
            Some(other) => {
                return Err(PricingError::Malformed(format!(
                    "{USAGE_VECTOR} is {other}, not a list"
                )))
            }
        };
        if coeffs.len() != usage_vector.len() + 1 {
            return Err(PricingError::Malformed(format!(
                "{} coefficients for {} usage counters (one per counter plus the start fee)",
                coeffs.len(),
                usage_vector.len()
            )));
        }
        let (start_fee, per_counter) = coeffs
            .split_last()
            .map(|(fee, rest)| (*fee, rest.to_vec()))
            .unwrap_or_default();
        let threads = offer
            .get(CPU_THREADS)
            .and_then(decimal_of)
            .filter(|threads| *threads > Decimal::ZERO)
            .unwrap_or(Decimal::ONE);
        Ok(LinearPricing {
            usage_vector,
            per_counter,
            start_fee,
            threads,
        })
    }

    pub fn of_agreement(agreement: &Agreement) -> Result<LinearPricing, PricingError> {
        Self::of_offer(&agreement.offer.properties)
    }

    /// The most one activity may cost after `elapsed_seconds` of the agreement,
    /// with `reported` usage (aligned with the usage vector) for the counters
    /// the clock does not bound. Without tolerance.
    pub fn activity_cost_bound(&self, elapsed_seconds: Decimal, reported: &[Decimal]) -> Decimal {
        let variable: Decimal = self
            .usage_vector
            .iter()
            .zip(&self.per_counter)
            .enumerate()
            .map(|(index, (counter, coeff))| {
                let bound = match counter.as_str() {
                    USAGE_DURATION_SEC => elapsed_seconds,
                    USAGE_CPU_SEC => elapsed_seconds * self.threads,
                    _ => reported.get(index).copied().unwrap_or_default(),
                };
                *coeff * bound.max(Decimal::ZERO)
            })
            .sum();
        self.start_fee + variable
    }

    /// Refuse `amount` when it is above what `activities` (each with its
    /// reported usage, possibly empty) may cost between `approved` and `now`,
    /// plus the tolerance. At least one activity counts (its start fee once).
    pub fn check_amount(
        &self,
        amount: Decimal,
        approved: DateTime<Utc>,
        now: DateTime<Utc>,
        activities: &[Vec<Decimal>],
    ) -> Result<Decimal, PricingError> {
        let elapsed_ms = (now - approved).num_milliseconds().max(0) + CLOCK_GRACE_SECONDS * 1000;
        let elapsed_seconds = Decimal::new(elapsed_ms, 3);
        let none: [Vec<Decimal>; 1] = [Vec::new()];
        let activities = if activities.is_empty() {
            &none[..]
        } else {
            activities
        };
        let bound: Decimal = activities
            .iter()
            .map(|reported| self.activity_cost_bound(elapsed_seconds, reported))
            .sum();
        let cap = (bound * Decimal::new(100 + i64::from(TOLERANCE_PERCENT), 2)).normalize();
        if amount > cap {
            return Err(PricingError::OverCap {
                amount: amount.normalize(),
                cap,
                explanation: format!(
                    "{} activit{} × (start fee {} + coeffs {:?} over {} s since approval, {} thread(s)) + {}%",
                    activities.len(),
                    if activities.len() == 1 { "y" } else { "ies" },
                    self.start_fee.normalize(),
                    self.per_counter
                        .iter()
                        .map(|coeff| coeff.normalize().to_string())
                        .collect::<Vec<_>>(),
                    elapsed_seconds.round_dp(0),
                    self.threads.normalize(),
                    TOLERANCE_PERCENT
                ),
            });
        }
        Ok(cap)
    }
}

/// A debit note's `usageCounterVector` as decimals (missing or odd entries are 0).
pub fn reported_usage(vector: Option<&Value>) -> Vec<Decimal> {
    match vector {
        Some(Value::Array(values)) => values
            .iter()
            .map(|value| decimal_of(value).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn pricing(value: Value) -> LinearPricing {
        LinearPricing::of_offer(&Properties::from_json(value).unwrap()).unwrap()
    }

    fn at(seconds: i64) -> (DateTime<Utc>, DateTime<Utc>) {
        let approved = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        (approved, approved + chrono::Duration::seconds(seconds))
    }

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn the_cap_is_coeffs_times_elapsed_times_threads_plus_one_start_fee() {
        let price = pricing(json!({
            LINEAR_COEFFS: [0.001, 0.0005, 0.01],
            USAGE_VECTOR: [USAGE_CPU_SEC, USAGE_DURATION_SEC],
            CPU_THREADS: 4,
        }));
        assert_eq!(price.start_fee, dec("0.01"));
        assert_eq!(price.threads, dec("4"));
        // 90 s + 10 s grace: cpu 0.001 × 100 × 4 + env 0.0005 × 100 + 0.01 = 0.46; +1% = 0.4646.
        let (approved, now) = at(90);
        let cap = price.check_amount(dec("0.46"), approved, now, &[]).unwrap();
        assert_eq!(cap, dec("0.4646"));
        assert!(price
            .check_amount(dec("0.4646"), approved, now, &[])
            .is_ok());
        let error = price
            .check_amount(dec("0.4647"), approved, now, &[])
            .unwrap_err();
        assert!(matches!(error, PricingError::OverCap { .. }), "{error}");
        assert!(error.to_string().contains("0.4646"), "{error}");
        // Two activities: the start fee and the time bounds count twice.
        let two = [Vec::new(), Vec::new()];
        assert_eq!(
            price.check_amount(dec("0"), approved, now, &two).unwrap(),
            dec("0.9292")
        );
        // Reported usage does not raise the time bounds.
        let inflated = [vec![dec("1000000"), dec("1000000")]];
        assert_eq!(
            price
                .check_amount(dec("0"), approved, now, &inflated)
                .unwrap(),
            cap
        );
    }

    #[test]
    fn counters_the_clock_cannot_bound_are_taken_as_reported() {
        let price = pricing(json!({
            LINEAR_COEFFS: [0.1, 2, 0],
            USAGE_VECTOR: [USAGE_DURATION_SEC, "golem.usage.storage_gib"],
        }));
        assert_eq!(price.threads, Decimal::ONE);
        let (approved, now) = at(0);
        // 10 s grace × 0.1 + 3 GiB × 2 = 7; +1% = 7.07.
        let reported = [reported_usage(Some(&json!([5, 3])))];
        assert_eq!(
            price
                .check_amount(dec("7"), approved, now, &reported)
                .unwrap(),
            dec("7.07")
        );
        assert!(price.check_amount(dec("7.1"), approved, now, &[]).is_err());
    }

    #[test]
    fn no_or_malformed_price_is_refused() {
        let none = Properties::from_json(json!({"x": 1})).unwrap();
        assert_eq!(LinearPricing::of_offer(&none), Err(PricingError::NoPrice));
        for bad in [
            json!({LINEAR_COEFFS: [0.1, 0.2], USAGE_VECTOR: [USAGE_CPU_SEC, USAGE_DURATION_SEC]}),
            json!({LINEAR_COEFFS: "cheap"}),
            json!({LINEAR_COEFFS: [-1, 0], USAGE_VECTOR: [USAGE_CPU_SEC]}),
        ] {
            let properties = Properties::from_json(bad.clone()).unwrap();
            assert!(
                matches!(
                    LinearPricing::of_offer(&properties),
                    Err(PricingError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // A start fee alone is a valid price.
        let fee_only = pricing(json!({LINEAR_COEFFS: [2]}));
        let (approved, now) = at(1000);
        assert!(fee_only
            .check_amount(dec("2.02"), approved, now, &[])
            .is_ok());
        assert!(fee_only
            .check_amount(dec("2.03"), approved, now, &[])
            .is_err());
    }
}
