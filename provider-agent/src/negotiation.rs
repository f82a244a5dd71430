//! The negotiation policy: whether a requestor's demand proposal fits this
//! provider (expiration within bounds, a common payment platform, debit-note
//! interval, payment timeout and accept timeout within bounds, room for its
//! claim by `capacity.rs`), and the terms of the Draft that answers it. A refusal is a
//! sentence the requestor reads in its `ProposalRejectedEvent`.

use golem_model::market::DemandOfferBase;
use golem_model::properties::Properties;
use serde_json::{json, Value};

use crate::capacity::{Capacity, Claim};
use crate::config::ProviderConfig;
use crate::offer::{props, OfferSpec};

/// What the provider agrees to when it counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub platform: String,
    pub debit_note_interval_sec: u64,
    pub payment_timeout_sec: u64,
    /// Set when the demand asked for debit-note acceptance within a deadline.
    pub accept_timeout_sec: Option<u64>,
}

fn seconds(properties: &Properties, key: &str) -> Result<Option<u64>, String> {
    match properties.get(key) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .or_else(|| value.as_f64().filter(|v| *v >= 0.0).map(|v| v as u64))
            .map(Some)
            .ok_or_else(|| format!("{key} must be a number of seconds, got {value}")),
    }
}

fn within(key: &str, value: u64, min: u64, max: u64) -> Result<u64, String> {
    if value < min || value > max {
        return Err(format!(
            "{key} = {value} s is outside what this provider accepts ({min}..={max} s)"
        ));
    }
    Ok(value)
}

/// Judge `demand` (the requestor's proposal, which claims `claim`) at
/// `now_ms` beside the `held` claims of live agreements.
pub fn evaluate(
    config: &ProviderConfig,
    demand: &Properties,
    now_ms: i64,
    held: &[Claim],
    claim: Claim,
) -> Result<Terms, String> {
    Capacity::of(config).admit(held, claim)?;
    let expiration = demand
        .get(props::EXPIRATION)
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("the demand has no {} (unix ms)", props::EXPIRATION))?;
    let left_sec = (expiration - now_ms) / 1000;
    if left_sec < config.min_expiration_sec as i64 {
        return Err(format!(
            "expiration too short: {} is {left_sec} s from now; this provider needs at least {} s",
            props::EXPIRATION,
            config.min_expiration_sec
        ));
    }
    if left_sec > config.max_expiration_sec as i64 {
        return Err(format!(
            "expiration too far: {} is {left_sec} s from now; this provider accepts at most {} s",
            props::EXPIRATION,
            config.max_expiration_sec
        ));
    }
    let theirs: Vec<String> = demand
        .iter()
        .filter_map(|(key, _)| {
            key.strip_prefix("golem.com.payment.platform.")?
                .strip_suffix(".address")
                .map(String::from)
        })
        .collect();
    let chosen = demand.get(props::CHOSEN_PLATFORM).and_then(Value::as_str);
    let platform = config
        .platforms
        .iter()
        .find(|platform| {
            theirs.contains(platform) && chosen.is_none_or(|chosen| chosen == platform.as_str())
        })
        .cloned()
        .ok_or_else(|| {
            format!(
                "no common payment platform: the demand pays on [{}]{}, this provider accepts [{}]",
                theirs.join(", "),
                chosen
                    .map(|chosen| format!(" (chosen {chosen})"))
                    .unwrap_or_default(),
                config.platforms.join(", ")
            )
        })?;
    let debit_note_interval_sec = match seconds(demand, props::DEBIT_NOTE_INTERVAL)? {
        Some(value) => within(
            props::DEBIT_NOTE_INTERVAL,
            value,
            config.min_debit_note_interval_sec,
            config.max_debit_note_interval_sec,
        )?,
        None => config.debit_note_interval_sec,
    };
    let payment_timeout_sec = match seconds(demand, props::PAYMENT_TIMEOUT)? {
        Some(value) => within(
            props::PAYMENT_TIMEOUT,
            value,
            config.min_payment_timeout_sec,
            config.max_payment_timeout_sec,
        )?,
        None => config.payment_timeout_sec,
    };
    let accept_timeout_sec = seconds(demand, props::ACCEPT_TIMEOUT)?
        .map(|value| {
            within(
                props::ACCEPT_TIMEOUT,
                value,
                config.min_accept_timeout_sec,
                config.max_accept_timeout_sec,
            )
        })
        .transpose()?;
    Ok(Terms {
        platform,
        debit_note_interval_sec,
        payment_timeout_sec,
        accept_timeout_sec,
    })
}

/// The Draft that answers a demand: the offer with the agreed terms.
pub fn counter(offer: &OfferSpec, terms: &Terms) -> DemandOfferBase {
    let mut properties = offer.properties.clone();
    properties.insert(
        props::DEBIT_NOTE_INTERVAL.into(),
        json!(terms.debit_note_interval_sec),
    );
    properties.insert(
        props::PAYMENT_TIMEOUT.into(),
        json!(terms.payment_timeout_sec),
    );
    if let Some(accept) = terms.accept_timeout_sec {
        properties.insert(props::ACCEPT_TIMEOUT.into(), json!(accept));
    }
    DemandOfferBase {
        properties: Value::Object(properties),
        constraints: offer.constraints.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use super::*;
    use crate::config::ProviderSettings;
    use crate::machine::Machine;

    fn config() -> ProviderConfig {
        let machine = Machine {
            hostname: "box".into(),
            cores: 2,
            threads: 2,
            mem_gib: 4.0,
            storage_gib: 10.0,
        };
        ProviderConfig::resolve(Path::new("/tmp/x"), ProviderSettings::default(), &machine).unwrap()
    }

    const NOW: i64 = 1_800_000_000_000;

    fn demand(extra: Value) -> Properties {
        let mut value = json!({
            "golem.srv.comp.expiration": NOW + 600_000,
            "golem.com.payment.platform.erc20-holesky-tglm.address": "0xabc",
        });
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Properties::from_json(value).unwrap()
    }

    #[test]
    fn a_fitting_demand_gets_terms() {
        let terms = evaluate(
            &config(),
            &demand(json!({"golem.com.scheme.payu.debit-note.interval-sec?": 30,
                           "golem.com.payment.debit-notes.accept-timeout?": 20})),
            NOW,
            &[],
            Claim::default(),
        )
        .unwrap();
        assert_eq!(terms.platform, "erc20-holesky-tglm");
        assert_eq!(terms.debit_note_interval_sec, 30);
        assert_eq!(terms.accept_timeout_sec, Some(20));
    }

    #[test]
    fn refusals_say_why() {
        let short = evaluate(
            &config(),
            &demand(json!({"golem.srv.comp.expiration": NOW + 5_000})),
            NOW,
            &[],
            Claim::default(),
        )
        .unwrap_err();
        assert!(short.contains("expiration too short"), "{short}");
        let no_platform = Properties::from_json(json!({
            "golem.srv.comp.expiration": NOW + 600_000,
            "golem.com.payment.platform.erc20-polygon-glm.address": "0xabc",
        }))
        .unwrap();
        let error = evaluate(&config(), &no_platform, NOW, &[], Claim::default()).unwrap_err();
        assert!(error.contains("no common payment platform"), "{error}");
        assert!(error.contains("erc20-polygon-glm"), "{error}");
        let held = [Claim::default(), Claim::default()];
        let full =
            evaluate(&config(), &demand(json!({})), NOW, &held, Claim::default()).unwrap_err();
        assert!(full.contains("no free resources"), "{full}");
        let interval = evaluate(
            &config(),
            &demand(json!({"golem.com.scheme.payu.debit-note.interval-sec?": 999_999})),
            NOW,
            &[],
            Claim::default(),
        )
        .unwrap_err();
        assert!(interval.contains("debit-note.interval-sec"), "{interval}");
    }
}
