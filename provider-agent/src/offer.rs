//! Offers: the properties real requestors constrain on (resources, runtime,
//! linear pricing, payment platforms and terms, subnet, node name) built for one
//! exe unit and its preset, plus the constraint that rejects expired demands.

use chrono::Utc;
use golem_model::market::DemandOfferBase;
use golem_model::payment::PAYMENT_PROTOCOL_VERSION;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Map, Value};

use crate::config::ProviderConfig;
use crate::exe_units::ExeUnit;
use crate::presets::{Preset, USAGE_VECTOR};

/// Property names, as the original spells them.
pub mod props {
    pub const MEM_GIB: &str = "golem.inf.mem.gib";
    pub const STORAGE_GIB: &str = "golem.inf.storage.gib";
    pub const CPU_THREADS: &str = "golem.inf.cpu.threads";
    pub const CPU_CORES: &str = "golem.inf.cpu.cores";
    pub const RUNTIME_NAME: &str = "golem.runtime.name";
    pub const SCHEME: &str = "golem.com.scheme";
    pub const PRICING_MODEL: &str = "golem.com.pricing.model";
    pub const LINEAR_COEFFS: &str = "golem.com.pricing.model.linear.coeffs";
    pub const USAGE_VECTOR: &str = "golem.com.usage.vector";
    pub const PROTOCOL_VERSION: &str = "golem.com.payment.protocol.version";
    pub const MULTI_ACTIVITY: &str = "golem.srv.caps.multi-activity";
    pub const NODE_NAME: &str = "golem.node.id.name";
    pub const SUBNET: &str = "golem.node.debug.subnet";
    pub const DEBIT_NOTE_INTERVAL: &str = "golem.com.scheme.payu.debit-note.interval-sec?";
    pub const PAYMENT_TIMEOUT: &str = "golem.com.scheme.payu.payment-timeout-sec?";
    pub const ACCEPT_TIMEOUT: &str = "golem.com.payment.debit-notes.accept-timeout?";
    pub const EXPIRATION: &str = "golem.srv.comp.expiration";
    pub const CHOSEN_PLATFORM: &str = "golem.com.payment.chosen-platform";

    /// `golem.com.payment.platform.<platform>.address`.
    pub fn platform_address(platform: &str) -> String {
        format!("golem.com.payment.platform.{platform}.address")
    }
}

/// One offer the agent subscribes: an exe unit at a preset's prices.
#[derive(Debug, Clone)]
pub struct OfferSpec {
    pub runtime: String,
    pub preset: Preset,
    /// Flat properties.
    pub properties: Map<String, Value>,
    pub constraints: String,
}

impl OfferSpec {
    pub fn to_base(&self) -> DemandOfferBase {
        DemandOfferBase {
            properties: Value::Object(self.properties.clone()),
            constraints: self.constraints.clone(),
        }
    }
}

fn number(value: rust_decimal::Decimal) -> Value {
    json!(value.to_f64().unwrap_or(0.0))
}

/// The offer for `exe_unit` priced by `preset`, paid to `address` on the
/// configured platforms.
pub fn build(
    config: &ProviderConfig,
    exe_unit: &ExeUnit,
    preset: &Preset,
    address: &str,
) -> OfferSpec {
    let mut properties = exe_unit.template.clone();
    let mut set = |key: &str, value: Value| {
        properties.insert(key.to_string(), value);
    };
    set(props::MEM_GIB, json!(config.mem_gib));
    set(props::STORAGE_GIB, json!(config.storage_gib));
    set(props::CPU_THREADS, json!(config.threads));
    set(props::CPU_CORES, json!(config.cores));
    set(props::RUNTIME_NAME, json!(exe_unit.runtime));
    set(props::SCHEME, json!("payu"));
    set(
        props::DEBIT_NOTE_INTERVAL,
        json!(config.debit_note_interval_sec),
    );
    set(props::PAYMENT_TIMEOUT, json!(config.payment_timeout_sec));
    set(props::ACCEPT_TIMEOUT, json!(config.accept_timeout_sec));
    set(props::PRICING_MODEL, json!("linear"));
    set(
        props::LINEAR_COEFFS,
        Value::Array(preset.coeffs().into_iter().map(number).collect()),
    );
    set(props::USAGE_VECTOR, json!(USAGE_VECTOR));
    for platform in &config.platforms {
        set(&props::platform_address(platform), json!(address));
    }
    let version: u64 = PAYMENT_PROTOCOL_VERSION.parse().unwrap_or(3);
    set(props::PROTOCOL_VERSION, json!(version));
    set(props::MULTI_ACTIVITY, json!(true));
    set(props::NODE_NAME, json!(config.node_name));
    set(props::SUBNET, json!(config.subnet));
    // The original's agent announces manifest checks when the runtime reads
    // manifests (the VM unit says so only where it enforces them).
    if crate::outbound::offers_capability(
        &exe_unit.template,
        golem_model::manifest::MANIFEST_SUPPORT_CAPABILITY,
    ) {
        set(
            golem_model::manifest::keys::CAPS_PAYLOAD_MANIFEST,
            json!(true),
        );
    }
    // Demands already expired never match; too-short ones match and are
    // rejected in negotiation with a reason the requestor can read.
    let earliest = Utc::now().timestamp_millis();
    let constraints = format!(
        "(&({}={})({}>{earliest}))",
        props::SUBNET,
        config.subnet,
        props::EXPIRATION
    );
    OfferSpec {
        runtime: exe_unit.runtime.clone(),
        preset: preset.clone(),
        properties,
        constraints,
    }
}

/// Every offer of `exe_units`: one per preset offered for its runtime
/// ([`crate::presets::offered_for`]).
pub fn build_all(
    config: &ProviderConfig,
    exe_units: &[ExeUnit],
    presets: &[Preset],
    address: &str,
) -> Vec<OfferSpec> {
    exe_units
        .iter()
        .flat_map(|unit| {
            crate::presets::offered_for(presets, &unit.runtime)
                .into_iter()
                .map(move |preset| build(config, unit, &preset, address))
        })
        .collect()
}

impl OfferSpec {
    /// Whether `other` offers the same thing (the constraints carry the time
    /// of building, so they are left out).
    pub fn same_offer(&self, other: &OfferSpec) -> bool {
        self.runtime == other.runtime
            && self.preset == other.preset
            && self.properties == other.properties
    }
}
