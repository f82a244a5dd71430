//! Payment platforms (`<driver>-<network>-<token>`) and the drivers that move
//! money on them. `dummy` settles at once without a chain; `erc20` (see
//! `erc20.rs`) queues a token transfer and settles once it is confirmed.

use std::sync::Arc;

use golem_model::payment::Decimal;
use golem_model::GolemError;

/// A payment platform, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub name: String,
    pub driver: String,
    pub network: String,
    pub token: String,
}

/// Networks known per driver, with their token.
const KNOWN: &[(&str, &str, &str)] = &[
    ("dummy", "local", "tglm"),
    ("erc20", "holesky", "tglm"),
    ("erc20", "sepolia", "tglm"),
    ("erc20", "amoy", "tglm"),
    ("erc20", "polygon", "glm"),
    ("erc20", "mainnet", "glm"),
];

/// The platform used when a client names none.
pub const DEFAULT_PLATFORM: &str = "dummy-local-tglm";

impl Platform {
    fn new(driver: &str, network: &str, token: &str) -> Platform {
        Platform {
            name: format!("{driver}-{network}-{token}"),
            driver: driver.to_string(),
            network: network.to_string(),
            token: token.to_string(),
        }
    }

    /// A known platform by name (`dummy-local-tglm`, `erc20-holesky-tglm`, ...).
    pub fn parse(name: &str) -> Result<Platform, GolemError> {
        KNOWN
            .iter()
            .map(|(driver, network, token)| Platform::new(driver, network, token))
            .find(|platform| platform.name == name)
            .ok_or_else(|| {
                GolemError::bad_request(format!(
                    "unknown payment platform {name:?}; known: {}",
                    Platform::known()
                        .iter()
                        .map(|platform| platform.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// From yapapi/golem-js's `{driver, network, token}` object (token derived when absent).
    pub fn from_parts(
        driver: Option<&str>,
        network: Option<&str>,
        token: Option<&str>,
    ) -> Result<Platform, GolemError> {
        let driver = driver.unwrap_or("erc20").to_lowercase();
        let network = network.unwrap_or("holesky").to_lowercase();
        let token = match token {
            Some(token) => token.to_lowercase(),
            None if matches!(network.as_str(), "mainnet" | "polygon") => "glm".to_string(),
            None => "tglm".to_string(),
        };
        Platform::parse(&format!("{driver}-{network}-{token}"))
    }

    pub fn known() -> Vec<Platform> {
        KNOWN
            .iter()
            .map(|(driver, network, token)| Platform::new(driver, network, token))
            .collect()
    }
}

/// What `pay` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid at once; the driver's details (a transaction id).
    Settled(String),
    /// Queued persistently; watch it with [`PaymentDriver::progress`].
    Pending,
}

/// Where a queued payment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayProgress {
    Unknown,
    /// Not settled yet; why, in words.
    Pending(String),
    /// Settled; the driver's details (a transaction hash).
    Settled(String),
}

/// Moves money on one driver's platforms.
pub trait PaymentDriver: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Pay `amount` from `payer` to `payee`. Must be idempotent per
    /// `payment_id`: calling it again never pays again.
    fn pay(
        &self,
        platform: &Platform,
        payment_id: &str,
        payer: &str,
        payee: &str,
        amount: Decimal,
    ) -> Result<PayOutcome, GolemError>;
    /// True when `pay` always settles at once without side effects (dummy).
    fn settles_at_once(&self) -> bool {
        false
    }
    /// Progress of a payment `pay` left pending.
    fn progress(&self, _payment_id: &str) -> PayProgress {
        PayProgress::Unknown
    }
    /// The networks this driver serves, for `payment driver list`.
    fn describe(&self) -> Vec<serde_json::Value>;
}

/// Instant settlement without a chain (`dummy-local-tglm`).
pub struct DummyDriver;

impl PaymentDriver for DummyDriver {
    fn name(&self) -> &'static str {
        "dummy"
    }

    fn settles_at_once(&self) -> bool {
        true
    }

    fn pay(
        &self,
        platform: &Platform,
        payment_id: &str,
        payer: &str,
        payee: &str,
        amount: Decimal,
    ) -> Result<PayOutcome, GolemError> {
        Ok(PayOutcome::Settled(format!(
            "{}:{payment_id}:{payer}->{payee}:{amount}",
            platform.name
        )))
    }

    fn describe(&self) -> Vec<serde_json::Value> {
        vec![serde_json::json!({
            "driver": "dummy",
            "network": "local",
            "platform": DEFAULT_PLATFORM,
            "settles": "at once, without a chain",
        })]
    }
}

/// The drivers this node runs.
#[derive(Clone)]
pub struct Drivers {
    drivers: Vec<Arc<dyn PaymentDriver>>,
}

impl Default for Drivers {
    fn default() -> Self {
        Drivers {
            drivers: vec![Arc::new(DummyDriver)],
        }
    }
}

impl Drivers {
    pub fn new(drivers: Vec<Arc<dyn PaymentDriver>>) -> Drivers {
        Drivers { drivers }
    }

    pub fn all(&self) -> &[Arc<dyn PaymentDriver>] {
        &self.drivers
    }

    /// The driver for `platform`, or a clear error when it is known but not available.
    pub fn for_platform(&self, platform: &Platform) -> Result<Arc<dyn PaymentDriver>, GolemError> {
        self.drivers
            .iter()
            .find(|driver| driver.name() == platform.driver)
            .cloned()
            .ok_or_else(|| {
                GolemError::unavailable(format!(
                    "payment driver {} is not available on this node yet, so platform {} cannot pay; use dummy-local-tglm",
                    platform.driver, platform.name
                ))
            })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.drivers.iter().map(|driver| driver.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_by_name_and_parts() {
        assert_eq!(Platform::parse("dummy-local-tglm").unwrap().driver, "dummy");
        assert_eq!(
            Platform::from_parts(Some("dummy"), Some("local"), None)
                .unwrap()
                .name,
            "dummy-local-tglm"
        );
        assert_eq!(
            Platform::from_parts(None, Some("polygon"), None)
                .unwrap()
                .name,
            "erc20-polygon-glm"
        );
        assert!(Platform::parse("dummy-holesky-tglm").is_err());
        assert!(Platform::parse("x.y").is_err());
    }

    #[test]
    fn a_driver_not_running_is_a_clear_error() {
        let drivers = Drivers::default();
        let erc20 = Platform::parse("erc20-holesky-tglm").unwrap();
        let error = drivers.for_platform(&erc20).err().unwrap();
        assert!(error.message.contains("erc20"), "{error:?}");
        assert!(drivers
            .for_platform(&Platform::parse("dummy-local-tglm").unwrap())
            .is_ok());
    }
}
