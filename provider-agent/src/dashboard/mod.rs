//! The provider's dashboard (`golem-provider run --dashboard [ADDR]`): one web
//! page and its JSON API, served from the agent process by actix-web, that
//! show what the node is doing and earning — status, offers, negotiations,
//! agreements and activities now, earnings — and push changes to the page with
//! server-sent events. It reads what the agent and its daemon already know
//! (the agent's state files, its negotiation log, the daemon's REST API with
//! the agent's app-key); it changes nothing but the pause switch (the agent
//! retires its offers while paused) and a preset's `active` flag in
//! `presets.toml` (which the agent's offer refresh picks up).
//!
//! Access: loopback unless `dashboard-allow-remote` is set; every API call
//! needs a session cookie got with the app-key or the one-time link printed
//! at start. What it must never do: serve anything from outside the binary,
//! or answer an API call without a session.

mod auth;
mod controls;
mod negotiations;
mod page;
mod server;
mod sources;
mod view;

use std::net::SocketAddr;

pub use controls::{ControlState, OfferControls};
pub use negotiations::{NegotiationEntry, NegotiationLog, Outcome};
pub use server::{start, DashboardError, DashboardServer};
pub use sources::{DashboardSources, ExeUnitFacts, LiveSettings, OfferedResources};

/// The address of `--dashboard` given without a value.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:7466";

/// Where and to whom the dashboard is served, resolved from the settings
/// `dashboard` and `dashboard-allow-remote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardConfig {
    pub address: SocketAddr,
    /// Set only by `dashboard-allow-remote`: the address is not loopback.
    pub remote: bool,
}

impl DashboardConfig {
    /// `None` when the dashboard is off (unset, `false`, `off`, empty);
    /// `true`/`on` (a switch in the environment or the file) is the default
    /// address. A non-loopback address needs `allow_remote`. The error is
    /// the message of the `dashboard` setting's refusal.
    pub fn resolve(
        setting: Option<&str>,
        allow_remote: bool,
    ) -> Result<Option<DashboardConfig>, String> {
        let value = match setting.map(str::trim) {
            None => return Ok(None),
            Some(value) => value.to_ascii_lowercase(),
        };
        let text = match value.as_str() {
            "" | "false" | "off" | "no" | "0" => return Ok(None),
            "true" | "on" | "yes" | "1" => DEFAULT_ADDRESS,
            other => other,
        };
        let address: SocketAddr = text.parse().map_err(|_| {
            format!(
                "{text:?} is not an address: give IP:PORT, e.g. {DEFAULT_ADDRESS}, or no value for that one"
            )
        })?;
        let remote = !address.ip().is_loopback();
        if remote && !allow_remote {
            return Err(format!(
                "{address} is not a loopback address: anyone who reaches it may try app-keys; \
                 bind 127.0.0.1 or add --dashboard-allow-remote"
            ));
        }
        Ok(Some(DashboardConfig { address, remote }))
    }
}

/// What the agent shares with its dashboard, present whether or not the
/// dashboard runs (recording negotiations costs a bounded buffer).
#[derive(Clone)]
pub struct AgentLink {
    pub negotiations: std::sync::Arc<NegotiationLog>,
    pub controls: std::sync::Arc<OfferControls>,
}

impl AgentLink {
    /// The negotiation log (empty) and the offer controls saved in `data_dir`.
    pub fn open(data_dir: &std::path::Path) -> AgentLink {
        AgentLink {
            negotiations: std::sync::Arc::new(NegotiationLog::new(negotiations::CAPACITY)),
            controls: std::sync::Arc::new(OfferControls::open(data_dir)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn off_unless_set_and_the_default_address_for_a_bare_switch() {
        assert_eq!(DashboardConfig::resolve(None, false).unwrap(), None);
        for off in ["", "false", "off", "0"] {
            assert_eq!(
                DashboardConfig::resolve(Some(off), false).unwrap(),
                None,
                "{off}"
            );
        }
        for on in ["true", "on", "1", DEFAULT_ADDRESS] {
            let config = DashboardConfig::resolve(Some(on), false).unwrap().unwrap();
            assert_eq!(config.address.to_string(), DEFAULT_ADDRESS, "{on}");
            assert!(!config.remote);
        }
        let v6 = DashboardConfig::resolve(Some("[::1]:9000"), false)
            .unwrap()
            .unwrap();
        assert!(!v6.remote);
    }

    #[test]
    fn bad_addresses_and_unasked_remote_binds_are_refused_saying_what_to_do() {
        // config.rs puts "invalid setting dashboard: " before the message.
        let error = DashboardConfig::resolve(Some("localhost"), false).unwrap_err();
        assert!(
            error.contains("\"localhost\" is not an address") && error.contains("IP:PORT"),
            "{error}"
        );
        let error = DashboardConfig::resolve(Some("0.0.0.0:7466"), false).unwrap_err();
        assert!(error.contains("--dashboard-allow-remote"), "{error}");
        let remote = DashboardConfig::resolve(Some("0.0.0.0:7466"), true)
            .unwrap()
            .unwrap();
        assert!(remote.remote);
    }
}
