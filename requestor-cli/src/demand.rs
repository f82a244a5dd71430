//! What the requestor asks the market for: [`DemandSpec`] (runtime, package,
//! minimum resources, price caps, expiration, subnet) turned into the Golem
//! demand properties and constraints, and the linear price model of offers used
//! to score and filter them.

use std::time::Duration;

use golem_model::market::DemandOfferBase;
use golem_model::payment::MarketDecoration;
use golem_model::properties::Properties;
use serde_json::{json, Value};

/// The execution environment a demand asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// WebAssembly on wasmtime (`golem.runtime.name=wasmtime`).
    Wasm,
    /// Docker images (`golem.runtime.name=vm`).
    Vm,
}

impl Runtime {
    /// The `golem.runtime.name` providers advertise.
    pub fn runtime_name(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasmtime",
            Runtime::Vm => "vm",
        }
    }

    pub fn parse(text: &str) -> Option<Runtime> {
        match text.to_ascii_lowercase().as_str() {
            "wasm" | "wasmtime" => Some(Runtime::Wasm),
            "vm" | "docker" => Some(Runtime::Vm),
            _ => None,
        }
    }
}

/// Upper limits on the linear price coefficients of acceptable offers (GLM).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PriceCaps {
    pub max_start_price: Option<f64>,
    pub max_cpu_per_hour: Option<f64>,
    pub max_env_per_hour: Option<f64>,
}

/// A demand, before the payment decoration is added.
#[derive(Debug, Clone)]
pub struct DemandSpec {
    pub runtime: Runtime,
    /// `hash:sha3:<hex>:<url>`.
    pub package: String,
    pub subnet: String,
    pub min_cores: Option<u32>,
    pub min_threads: Option<u32>,
    pub min_mem_gib: Option<f64>,
    pub min_storage_gib: Option<f64>,
    /// Runtime capabilities the offer must list (`golem.runtime.capabilities`, e.g. `vpn`).
    pub capabilities: Vec<String>,
    pub caps: PriceCaps,
    /// How long agreements and activities may last.
    pub expiration: Duration,
}

impl DemandSpec {
    pub fn new(runtime: Runtime, package: impl Into<String>, subnet: impl Into<String>) -> Self {
        DemandSpec {
            runtime,
            package: package.into(),
            subnet: subnet.into(),
            min_cores: None,
            min_threads: None,
            min_mem_gib: None,
            min_storage_gib: None,
            capabilities: Vec::new(),
            caps: PriceCaps::default(),
            expiration: Duration::from_secs(30 * 60),
        }
    }

    /// Our own constraint clauses on offers (payment ones come from the decoration).
    pub fn clauses(&self) -> Vec<String> {
        let mut clauses = vec![
            format!("(golem.node.debug.subnet={})", self.subnet),
            format!("(golem.runtime.name={})", self.runtime.runtime_name()),
        ];
        if let Some(cores) = self.min_cores {
            clauses.push(format!("(golem.inf.cpu.cores>={cores})"));
        }
        if let Some(threads) = self.min_threads {
            clauses.push(format!("(golem.inf.cpu.threads>={threads})"));
        }
        if let Some(mem) = self.min_mem_gib {
            clauses.push(format!("(golem.inf.mem.gib>={mem})"));
        }
        if let Some(storage) = self.min_storage_gib {
            clauses.push(format!("(golem.inf.storage.gib>={storage})"));
        }
        for capability in &self.capabilities {
            clauses.push(format!("(golem.runtime.capabilities={capability})"));
        }
        clauses
    }

    /// The demand body with the allocation's decoration (platform address,
    /// protocol constraint) and the chosen platform.
    pub fn build(&self, platform: &str, decoration: &MarketDecoration) -> DemandOfferBase {
        let expires_ms = chrono::Utc::now().timestamp_millis()
            + i64::try_from(self.expiration.as_millis()).unwrap_or(i64::MAX / 2);
        let mut properties = json!({
            "golem.node.debug.subnet": self.subnet,
            "golem.srv.comp.task_package": self.package,
            "golem.srv.comp.expiration": expires_ms,
            "golem.com.payment.chosen-platform": platform,
        });
        for property in &decoration.properties {
            properties[property.key.as_str()] = Value::String(property.value.clone());
        }
        let mut clauses = self.clauses();
        clauses.extend(decoration.constraints.iter().cloned());
        DemandOfferBase {
            properties,
            constraints: format!("(&{})", clauses.join("\n\t")),
        }
    }
}

/// The linear price model of an offer: `golem.com.pricing.model.linear.coeffs`
/// aligned with `golem.com.usage.vector`, the last coefficient being the fixed
/// start price.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct LinearPrice {
    pub usage_vector: Vec<String>,
    pub coeffs: Vec<f64>,
}

impl LinearPrice {
    pub fn from_properties(properties: &Properties) -> LinearPrice {
        let coeffs = properties
            .get("golem.com.pricing.model.linear.coeffs")
            .and_then(Value::as_array)
            .map(|values| values.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let usage_vector = properties
            .get("golem.com.usage.vector")
            .and_then(Value::as_array)
            .map(|values| {
                values
                    .iter()
                    .filter_map(|value| value.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        LinearPrice {
            usage_vector,
            coeffs,
        }
    }

    fn coeff_of(&self, counter: &str) -> f64 {
        self.usage_vector
            .iter()
            .position(|name| name == counter)
            .and_then(|index| self.coeffs.get(index))
            .copied()
            .unwrap_or(0.0)
    }

    pub fn start_price(&self) -> f64 {
        if self.coeffs.len() > self.usage_vector.len() {
            self.coeffs.last().copied().unwrap_or(0.0)
        } else {
            0.0
        }
    }

    /// Cost of `usage` (aligned with the usage vector) under this model.
    pub fn cost(&self, usage: &[f64]) -> f64 {
        self.start_price()
            + usage
                .iter()
                .zip(&self.coeffs)
                .map(|(used, coeff)| used * coeff)
                .sum::<f64>()
    }

    /// Cost of `usage`, with the duration counter at least `elapsed_seconds`
    /// (usage reports lag behind the wall clock).
    pub fn cost_at_least(&self, usage: &[f64], elapsed_seconds: f64) -> f64 {
        let mut usage = usage.to_vec();
        usage.resize(self.usage_vector.len(), 0.0);
        if let Some(index) = self
            .usage_vector
            .iter()
            .position(|name| name == "golem.usage.duration_sec")
        {
            usage[index] = usage[index].max(elapsed_seconds);
        }
        self.cost(&usage)
    }

    /// Expected cost of `seconds` of one busy thread: the score used to pick offers.
    pub fn expected_cost(&self, seconds: f64) -> f64 {
        self.start_price()
            + seconds * self.coeff_of("golem.usage.cpu_sec")
            + seconds * self.coeff_of("golem.usage.duration_sec")
    }

    /// Why this price is above `caps`, if it is.
    pub fn exceeds(&self, caps: &PriceCaps) -> Option<String> {
        let checks = [
            ("start price", self.start_price(), caps.max_start_price),
            (
                "cpu price per hour",
                self.coeff_of("golem.usage.cpu_sec") * 3600.0,
                caps.max_cpu_per_hour,
            ),
            (
                "env price per hour",
                self.coeff_of("golem.usage.duration_sec") * 3600.0,
                caps.max_env_per_hour,
            ),
        ];
        checks.iter().find_map(|(what, price, cap)| {
            cap.filter(|cap| price > cap)
                .map(|cap| format!("{what} {price} GLM > cap {cap} GLM"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(value: Value) -> Properties {
        Properties::from_json(value).expect("valid properties")
    }

    #[test]
    fn price_model_scores_and_caps() {
        let price = LinearPrice::from_properties(&properties(json!({
            "golem.com.pricing.model.linear.coeffs": [0.001, 0.0005, 0.01],
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        })));
        assert_eq!(price.start_price(), 0.01);
        assert!((price.expected_cost(100.0) - 0.16).abs() < 1e-9);
        assert!((price.cost(&[10.0, 20.0]) - 0.03).abs() < 1e-9);
        let caps = PriceCaps {
            max_cpu_per_hour: Some(1.0),
            ..PriceCaps::default()
        };
        assert!(price.exceeds(&caps).expect("too expensive").contains("cpu"));
        assert!(price.exceeds(&PriceCaps::default()).is_none());
    }

    #[test]
    fn demand_names_runtime_and_resources() {
        let mut spec = DemandSpec::new(Runtime::Wasm, "hash:sha3:ab:http://x/y.wasm", "s1");
        spec.min_mem_gib = Some(0.5);
        let demand = spec.build(
            "dummy-local-tglm",
            &MarketDecoration {
                properties: vec![],
                constraints: vec!["(golem.com.payment.platform.dummy-local-tglm.address=*)".into()],
            },
        );
        assert!(demand.constraints.contains("(golem.runtime.name=wasmtime)"));
        assert!(demand.constraints.contains("(golem.inf.mem.gib>=0.5)"));
        golem_model::constraints::parse(&demand.constraints).expect("a valid filter");
    }
}
