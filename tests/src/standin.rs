//! A stand-in provider agent for end-to-end tests that must reach behind the
//! agent (kill an exe unit directly, inspect its process): it negotiates with
//! `spawn_provider_negotiator` and spawns exe units per the spawn contract.
//! Tests of the agent itself use the real `golem-provider` (`provider.rs`).
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use golem_model::activity_control::ProviderEvent;
use golem_model::market::DemandOfferBase;
use serde_json::Value;

use crate::negotiation::spawn_provider_negotiator;
use crate::{binary, DaemonProcess};

/// Children spawned by the stand-in provider agent, by activity id.
pub type ExeUnits = Arc<Mutex<HashMap<String, Child>>>;

/// Plays the provider agent: negotiates (see `spawn_provider_negotiator`) and
/// spawns one `exe_unit` process (e.g. `exe-unit-wasm`) per CreateActivity
/// event, per the exe-unit spawn contract, with its work dirs under `work`.
/// The exe units get `--allow-private-transfers`: the tests serve their
/// packages and files on loopback. [`spawn_standin_agent_with`] chooses.
pub fn spawn_standin_agent(
    provider: &DaemonProcess,
    offer_id: String,
    offer: DemandOfferBase,
    exe_unit: &'static str,
    work: PathBuf,
) -> ExeUnits {
    spawn_standin_agent_with_env(provider, offer_id, offer, exe_unit, work, Vec::new())
}

/// [`spawn_standin_agent`] that also sets `env` in each exe unit's
/// environment, as the real agent sets the settings it resolved (e.g.
/// `GOLEM_ALLOW_DOCKER_IMAGES`).
pub fn spawn_standin_agent_with_env(
    provider: &DaemonProcess,
    offer_id: String,
    offer: DemandOfferBase,
    exe_unit: &'static str,
    work: PathBuf,
    env: Vec<(String, String)>,
) -> ExeUnits {
    let options = StandinOptions {
        allow_private_transfers: true,
        env,
        ..Default::default()
    };
    spawn_standin_agent_with(provider, offer_id, offer, exe_unit, work, options)
}

/// How the stand-in agent spawns exe units.
#[derive(Debug, Clone, Default)]
pub struct StandinOptions {
    /// Pass `--allow-private-transfers` (off: the provider's default).
    pub allow_private_transfers: bool,
    /// Set in each exe unit's environment.
    pub env: Vec<(String, String)>,
    /// More arguments of `run` (e.g. `--max-run-time 3`).
    pub args: Vec<String>,
}

/// [`spawn_standin_agent`] with explicit options.
pub fn spawn_standin_agent_with(
    provider: &DaemonProcess,
    offer_id: String,
    offer: DemandOfferBase,
    exe_unit: &'static str,
    work: PathBuf,
    options: StandinOptions,
) -> ExeUnits {
    let exe_units: ExeUnits = Arc::default();
    spawn_provider_negotiator(provider.client(), offer_id, offer);
    let spawned = exe_units.clone();
    let bus_socket = provider.data_dir.join("bus.sock");
    let (api_url, app_key) = (provider.api_url.clone(), provider.app_key.clone());
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = http
                .get(format!("{api_url}/activity-api/v1/events"))
                .bearer_auth(&app_key);
            request = request.query(&[("timeout", "2")]);
            if let Some(after) = &after {
                request = request.query(&[("afterTimestamp", after.as_str())]);
            }
            let Ok(response) = request.send().await else {
                return;
            };
            let Ok(events) = response.json::<Vec<ProviderEvent>>().await else {
                return;
            };
            for event in events {
                after = Some(event.event_date().to_rfc3339());
                let ProviderEvent::CreateActivity {
                    activity_id,
                    agreement_id,
                    ..
                } = event
                else {
                    continue;
                };
                let agreement: Value = http
                    .get(format!("{api_url}/market-api/v1/agreements/{agreement_id}"))
                    .bearer_auth(&app_key)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let dir = work.join(&activity_id);
                std::fs::create_dir_all(dir.join("work")).unwrap();
                let agreement_file = dir.join("agreement.json");
                std::fs::write(&agreement_file, serde_json::to_vec(&agreement).unwrap()).unwrap();
                let child = Command::new(binary(exe_unit))
                    .arg("run")
                    .args(["--activity-id", &activity_id])
                    .arg("--agreement")
                    .arg(&agreement_file)
                    .arg("--work-dir")
                    .arg(dir.join("work"))
                    .arg("--cache-dir")
                    .arg(work.join("cache"))
                    .arg("--bus-socket")
                    .arg(&bus_socket)
                    .envs(options.env.iter().map(|(name, value)| (name, value)))
                    .args(&options.args)
                    .args(
                        options
                            .allow_private_transfers
                            .then_some("--allow-private-transfers"),
                    )
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(
                        std::fs::File::create(dir.join("exe-unit.log")).unwrap(),
                    ))
                    .spawn()
                    .unwrap();
                spawned.lock().unwrap().insert(activity_id, child);
            }
        }
    });
    exe_units
}

/// An activity on `agreement_id` with no exe unit behind it, for payment tests
/// that need an activity both daemons know: the requestor creates it, and this
/// stand-in binds its exe-unit address on the provider's bus (so supervision
/// keeps it) and reports it Ready. Returns its id and the bus connection that
/// holds the binding (dropping it lets the activity end).
pub async fn create_bare_activity(
    requestor: &golem_client::GolemClient,
    provider: &DaemonProcess,
    agreement_id: &str,
) -> anyhow::Result<(String, golem_bus::BusClient)> {
    use golem_model::activity::{exe_unit_address, ActivityState, State, StatePair};
    let provider_client = provider.client();
    let bus = provider.bus().await?;
    let started = chrono::Utc::now();
    let create = {
        let requestor = requestor.clone();
        let agreement_id = agreement_id.to_string();
        tokio::spawn(async move { requestor.create_activity(&agreement_id, 20.0).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let activity_id = 'found: loop {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no CreateActivity event for agreement {agreement_id}"
        );
        let after = started.to_rfc3339();
        let events = provider_client
            .provider_activity_events(Some(&after), 1.0, 100)
            .await?;
        for event in events {
            if let ProviderEvent::CreateActivity {
                activity_id,
                agreement_id: of,
                ..
            } = event
            {
                if of == agreement_id {
                    break 'found activity_id;
                }
            }
        }
    };
    bus.bind(
        &exe_unit_address(&activity_id),
        golem_bus::ServiceEndpoint::new(),
    )
    .await?;
    provider_client
        .set_activity_state(
            &activity_id,
            &ActivityState {
                state: StatePair(State::Ready, None),
                reason: None,
                error_message: None,
            },
        )
        .await?;
    let created = create.await??;
    anyhow::ensure!(
        created == activity_id,
        "created {created}, the provider saw {activity_id}"
    );
    Ok((activity_id, bus))
}
