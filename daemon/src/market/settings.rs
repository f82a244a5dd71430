//! The market's settings: the `[market]` section of the daemon config file,
//! its command-line overrides, and the checked [`MarketConfig`] the service
//! runs with (quotas in [`MarketLimits`]).

use std::time::Duration;

/// Tunables of the market (defaults match the original where it has one).
#[derive(Debug, Clone)]
pub struct MarketConfig {
    /// Lifetime of an offer or demand subscription (yagna: 1 h).
    pub subscription_ttl: chrono::Duration,
    /// How often our live offers are broadcast again.
    pub announce_interval: Duration,
    /// How often connected peers are checked for newcomers to ask for offers.
    pub peer_check_interval: Duration,
    /// Bound of every call to another node's market.
    pub remote_timeout: Duration,
    /// How often expired subscriptions, offers and agreements are swept.
    pub sweep_interval: Duration,
    /// First retry delay of an undelivered notice; doubles on each failure.
    pub outbox_retry_initial: Duration,
    /// Largest retry delay of an undelivered notice.
    pub outbox_retry_max: Duration,
    /// What other nodes (and local clients) may make this market hold.
    pub limits: MarketLimits,
    /// What the market keeps of finished agreements and events (`[retention]`).
    pub retention: crate::retention::RetentionPolicy,
}

/// Quotas on what the market keeps, so that no peer can fill its memory or
/// disk. A refusal names the limit and the `[market]` setting that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketLimits {
    /// Offers of one other node kept at once; more from it are dropped
    /// (logged at debug, not stored) until some expire or are unsubscribed.
    pub max_offers_per_node: usize,
    /// Offers of all other nodes kept at once (and unsubscription tombstones).
    pub max_offers: usize,
    /// Furthest expiry of an offer or demand: a local subscription asking for
    /// more (`golem.srv.comp.expiration`) is refused with 400, a remote
    /// offer's expiry is cut to it.
    pub max_expiration: chrono::Duration,
    /// Proposals one subscription holds; a new one beyond it is refused
    /// (Conflict to the node that sent it, skipped when matching).
    pub max_proposals_per_subscription: usize,
    /// Undelivered events one subscription holds; a proposal that would add
    /// one more is refused the same way, until the client takes its events.
    pub max_events_per_subscription: usize,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketSettings::default()
            .to_config()
            .unwrap_or_else(|_| unreachable!("the default market settings are valid"))
    }
}

/// The `[market]` section of the daemon config file (kebab-case keys, every
/// one optional) and its environment overrides (`GOLEM_MARKET_<KEY>`, names
/// derived by `crate::config`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MarketSettings {
    pub subscription_ttl_secs: u64,
    pub announce_interval_ms: u64,
    pub peer_check_interval_ms: u64,
    pub remote_timeout_ms: u64,
    pub sweep_interval_ms: u64,
    pub outbox_retry_initial_ms: u64,
    pub outbox_retry_max_ms: u64,
    /// See [`MarketLimits`].
    pub max_offers_per_node: u64,
    pub max_offers: u64,
    pub max_expiration_secs: u64,
    pub max_proposals_per_subscription: u64,
    pub max_events_per_subscription: u64,
}

impl Default for MarketSettings {
    fn default() -> Self {
        MarketSettings {
            subscription_ttl_secs: 3600,
            announce_interval_ms: 30_000,
            peer_check_interval_ms: 500,
            remote_timeout_ms: 4_000,
            sweep_interval_ms: 1_000,
            outbox_retry_initial_ms: 500,
            outbox_retry_max_ms: 30_000,
            max_offers_per_node: 1_000,
            max_offers: 100_000,
            max_expiration_secs: 30 * 24 * 3600,
            max_proposals_per_subscription: 10_000,
            max_events_per_subscription: 10_000,
        }
    }
}

/// `[market]` values given on the command line (`golem-daemon run
/// --market-...`); `None` leaves the file's or environment's value. Serialized
/// with the `[market]` keys as the flag layer of `crate::config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Serialize)]
#[command(next_help_heading = "Market")]
#[serde(rename_all = "kebab-case")]
pub struct MarketOverrides {
    /// Lifetime of an offer or demand subscription [env: GOLEM_MARKET_SUBSCRIPTION_TTL_SECS] [default: 3600]
    #[arg(long = "market-subscription-ttl-secs", value_name = "SECS")]
    pub subscription_ttl_secs: Option<u64>,
    /// How often this node's live offers are broadcast again; new and ended offers go out at once, a node asks each peer for its offers when it first connects, and an announcement no peer took is tried again after 1 s doubling [env: GOLEM_MARKET_ANNOUNCE_INTERVAL_MS] [default: 30000]
    #[arg(long = "market-announce-interval-ms", value_name = "MS")]
    pub announce_interval_ms: Option<u64>,
    /// How often connected peers are checked for newcomers to ask for offers [env: GOLEM_MARKET_PEER_CHECK_INTERVAL_MS] [default: 500]
    #[arg(long = "market-peer-check-interval-ms", value_name = "MS")]
    pub peer_check_interval_ms: Option<u64>,
    /// Bound of every call to another node's market [env: GOLEM_MARKET_REMOTE_TIMEOUT_MS] [default: 4000]
    #[arg(long = "market-remote-timeout-ms", value_name = "MS")]
    pub remote_timeout_ms: Option<u64>,
    /// How often expired subscriptions, offers, agreements and scans are swept [env: GOLEM_MARKET_SWEEP_INTERVAL_MS] [default: 1000]
    #[arg(long = "market-sweep-interval-ms", value_name = "MS")]
    pub sweep_interval_ms: Option<u64>,
    /// First retry delay of an undelivered notice [env: GOLEM_MARKET_OUTBOX_RETRY_INITIAL_MS] [default: 500]
    #[arg(long = "market-outbox-retry-initial-ms", value_name = "MS")]
    pub outbox_retry_initial_ms: Option<u64>,
    /// Largest retry delay of an undelivered notice [env: GOLEM_MARKET_OUTBOX_RETRY_MAX_MS] [default: 30000]
    #[arg(long = "market-outbox-retry-max-ms", value_name = "MS")]
    pub outbox_retry_max_ms: Option<u64>,
    /// Offers of one other node kept at once; more are dropped [env: GOLEM_MARKET_MAX_OFFERS_PER_NODE] [default: 1000]
    #[arg(long = "market-max-offers-per-node", value_name = "COUNT")]
    pub max_offers_per_node: Option<u64>,
    /// Offers of all other nodes kept at once [env: GOLEM_MARKET_MAX_OFFERS] [default: 100000]
    #[arg(long = "market-max-offers", value_name = "COUNT")]
    pub max_offers: Option<u64>,
    /// Furthest expiry of an offer or demand (golem.srv.comp.expiration beyond it: 400; remote offers cut to it) [env: GOLEM_MARKET_MAX_EXPIRATION_SECS] [default: 2592000]
    #[arg(long = "market-max-expiration-secs", value_name = "SECS")]
    pub max_expiration_secs: Option<u64>,
    /// Proposals one subscription holds; more are refused [env: GOLEM_MARKET_MAX_PROPOSALS_PER_SUBSCRIPTION] [default: 10000]
    #[arg(long = "market-max-proposals-per-subscription", value_name = "COUNT")]
    pub max_proposals_per_subscription: Option<u64>,
    /// Undelivered events one subscription holds; proposals beyond are refused [env: GOLEM_MARKET_MAX_EVENTS_PER_SUBSCRIPTION] [default: 10000]
    #[arg(long = "market-max-events-per-subscription", value_name = "COUNT")]
    pub max_events_per_subscription: Option<u64>,
}

impl MarketOverrides {
    /// Replace the settings given here.
    pub fn apply_to(&self, settings: &mut MarketSettings) {
        let pairs = [
            (
                self.subscription_ttl_secs,
                &mut settings.subscription_ttl_secs,
            ),
            (
                self.announce_interval_ms,
                &mut settings.announce_interval_ms,
            ),
            (
                self.peer_check_interval_ms,
                &mut settings.peer_check_interval_ms,
            ),
            (self.remote_timeout_ms, &mut settings.remote_timeout_ms),
            (self.sweep_interval_ms, &mut settings.sweep_interval_ms),
            (
                self.outbox_retry_initial_ms,
                &mut settings.outbox_retry_initial_ms,
            ),
            (self.outbox_retry_max_ms, &mut settings.outbox_retry_max_ms),
            (self.max_offers_per_node, &mut settings.max_offers_per_node),
            (self.max_offers, &mut settings.max_offers),
            (self.max_expiration_secs, &mut settings.max_expiration_secs),
            (
                self.max_proposals_per_subscription,
                &mut settings.max_proposals_per_subscription,
            ),
            (
                self.max_events_per_subscription,
                &mut settings.max_events_per_subscription,
            ),
        ];
        for (given, field) in pairs {
            if let Some(value) = given {
                *field = value;
            }
        }
    }
}

/// A `[market]` setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("market setting {name} = {value} is invalid: {message}")]
pub struct MarketSettingsError {
    pub name: &'static str,
    pub value: u64,
    pub message: &'static str,
}

impl MarketSettings {
    /// Checks the values (every interval, timeout and limit must be positive,
    /// the subscription lifetime within the expiration cap, the cap at most
    /// ten years) and converts them.
    pub fn to_config(&self) -> Result<MarketConfig, MarketSettingsError> {
        let positive = |name: &'static str, value: u64| {
            if value == 0 {
                Err(MarketSettingsError {
                    name,
                    value,
                    message: "it must be greater than zero",
                })
            } else {
                Ok(value)
            }
        };
        let ten_years = |name: &'static str, value: u64| {
            let secs = positive(name, value)?;
            i64::try_from(secs)
                .ok()
                .filter(|secs| *secs <= 10 * 366 * 24 * 3600)
                .map(chrono::Duration::seconds)
                .ok_or(MarketSettingsError {
                    name,
                    value: secs,
                    message: "it must be at most ten years",
                })
        };
        let subscription_ttl = ten_years("subscription-ttl-secs", self.subscription_ttl_secs)?;
        let max_expiration = ten_years("max-expiration-secs", self.max_expiration_secs)?;
        if subscription_ttl > max_expiration {
            return Err(MarketSettingsError {
                name: "subscription-ttl-secs",
                value: self.subscription_ttl_secs,
                message: "it must not exceed max-expiration-secs",
            });
        }
        let count = |name, value| {
            positive(name, value).map(|value| usize::try_from(value).unwrap_or(usize::MAX))
        };
        let limits = MarketLimits {
            max_offers_per_node: count("max-offers-per-node", self.max_offers_per_node)?,
            max_offers: count("max-offers", self.max_offers)?,
            max_expiration,
            max_proposals_per_subscription: count(
                "max-proposals-per-subscription",
                self.max_proposals_per_subscription,
            )?,
            max_events_per_subscription: count(
                "max-events-per-subscription",
                self.max_events_per_subscription,
            )?,
        };
        let millis = |name, value| positive(name, value).map(Duration::from_millis);
        let outbox_retry_initial = millis("outbox-retry-initial-ms", self.outbox_retry_initial_ms)?;
        let outbox_retry_max = millis("outbox-retry-max-ms", self.outbox_retry_max_ms)?;
        if outbox_retry_max < outbox_retry_initial {
            return Err(MarketSettingsError {
                name: "outbox-retry-max-ms",
                value: self.outbox_retry_max_ms,
                message: "it must not be below outbox-retry-initial-ms",
            });
        }
        Ok(MarketConfig {
            subscription_ttl,
            announce_interval: millis("announce-interval-ms", self.announce_interval_ms)?,
            peer_check_interval: millis("peer-check-interval-ms", self.peer_check_interval_ms)?,
            remote_timeout: millis("remote-timeout-ms", self.remote_timeout_ms)?,
            sweep_interval: millis("sweep-interval-ms", self.sweep_interval_ms)?,
            outbox_retry_initial,
            outbox_retry_max,
            limits,
            retention: crate::retention::RetentionPolicy::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{env_names, CliOverrides, DaemonConfig};

    fn load(file: &str, env: &[(&str, &str)]) -> Result<DaemonConfig, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, file).unwrap_or_else(|error| panic!("write: {error}"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let cli = CliOverrides {
            config_file: Some(path),
            ..Default::default()
        };
        DaemonConfig::load(&cli, move |name: &str| {
            env.iter()
                .find(|(candidate, _)| candidate == name)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn market_section_and_env_set_the_market_config() {
        let config = load(
            "[market]\nsubscription-ttl-secs = 120\nremote-timeout-ms = 750\n",
            &[
                (env_names::MARKET_REMOTE_TIMEOUT_MS, "1500"),
                (env_names::MARKET_OUTBOX_RETRY_MAX_MS, "2000"),
            ],
        )
        .unwrap_or_else(|error| panic!("config: {error}"));
        let market = config
            .market
            .to_config()
            .unwrap_or_else(|error| panic!("market: {error}"));
        assert_eq!(market.subscription_ttl, chrono::Duration::seconds(120));
        assert_eq!(market.remote_timeout, Duration::from_millis(1500));
        assert_eq!(market.outbox_retry_max, Duration::from_secs(2));
        assert_eq!(
            market.announce_interval,
            MarketConfig::default().announce_interval
        );
    }

    #[test]
    fn command_line_market_flags_win_over_env_and_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let path = dir.path().join("daemon.toml");
        std::fs::write(
            &path,
            "[market]\nsubscription-ttl-secs = 120\nsweep-interval-ms = 300\n",
        )
        .unwrap_or_else(|error| panic!("write: {error}"));
        let cli = CliOverrides {
            config_file: Some(path),
            market: MarketOverrides {
                subscription_ttl_secs: Some(7),
                remote_timeout_ms: Some(900),
                ..Default::default()
            },
            ..Default::default()
        };
        let env = |name: &str| {
            [
                (env_names::MARKET_SUBSCRIPTION_TTL_SECS, "60"),
                (env_names::MARKET_REMOTE_TIMEOUT_MS, "1500"),
                (env_names::MARKET_ANNOUNCE_INTERVAL_MS, "2500"),
            ]
            .into_iter()
            .find(|(candidate, _)| *candidate == name)
            .map(|(_, value)| value.to_string())
        };
        let config =
            DaemonConfig::load(&cli, env).unwrap_or_else(|error| panic!("config: {error}"));
        assert_eq!(
            config.market.subscription_ttl_secs, 7,
            "the flag wins over env and file"
        );
        assert_eq!(
            config.market.remote_timeout_ms, 900,
            "the flag wins over env"
        );
        assert_eq!(
            config.market.announce_interval_ms, 2500,
            "env wins over the default"
        );
        assert_eq!(
            config.market.sweep_interval_ms, 300,
            "the file's value stays"
        );
        assert_eq!(
            config.market.outbox_retry_max_ms,
            MarketSettings::default().outbox_retry_max_ms
        );
    }

    #[test]
    fn bad_market_settings_are_refused_with_their_name() {
        let error = load("[market]\nno-such-setting = 1\n", &[])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("no-such-setting"), "{error}");
        let error = load("", &[(env_names::MARKET_SWEEP_INTERVAL_MS, "soon")])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("GOLEM_MARKET_SWEEP_INTERVAL_MS"), "{error}");
        let zero = MarketSettings {
            remote_timeout_ms: 0,
            ..MarketSettings::default()
        };
        let error = zero
            .to_config()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("remote-timeout-ms") && error.contains("greater than zero"),
            "{error}"
        );
        let inverted = MarketSettings {
            outbox_retry_initial_ms: 5_000,
            outbox_retry_max_ms: 1_000,
            ..MarketSettings::default()
        };
        assert!(inverted.to_config().is_err());
    }

    #[test]
    fn limits_come_from_the_file_env_and_flags_and_must_be_consistent() {
        let config = load(
            "[market]\nmax-offers-per-node = 7\nmax-expiration-secs = 7200\n",
            &[(env_names::MARKET_MAX_EVENTS_PER_SUBSCRIPTION, "30")],
        )
        .unwrap_or_else(|error| panic!("config: {error}"));
        let limits = config
            .market
            .to_config()
            .unwrap_or_else(|error| panic!("market: {error}"))
            .limits;
        assert_eq!(limits.max_offers_per_node, 7);
        assert_eq!(limits.max_expiration, chrono::Duration::seconds(7200));
        assert_eq!(limits.max_events_per_subscription, 30);
        assert_eq!(limits.max_offers, 100_000);
        let mut settings = MarketSettings::default();
        MarketOverrides {
            max_proposals_per_subscription: Some(3),
            ..Default::default()
        }
        .apply_to(&mut settings);
        assert_eq!(settings.max_proposals_per_subscription, 3);
        let too_long_ttl = MarketSettings {
            subscription_ttl_secs: 7201,
            max_expiration_secs: 7200,
            ..MarketSettings::default()
        };
        let error = too_long_ttl
            .to_config()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("max-expiration-secs"), "{error}");
        let zero = MarketSettings {
            max_offers: 0,
            ..MarketSettings::default()
        };
        assert!(zero.to_config().is_err());
    }
}
