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
pub fn spawn_standin_agent(
    provider: &DaemonProcess,
    offer_id: String,
    offer: DemandOfferBase,
    exe_unit: &'static str,
    work: PathBuf,
) -> ExeUnits {
    spawn_standin_agent_with_env(provider, offer_id, offer, exe_unit, work, Vec::new())
}

/// [`spawn_standin_agent`] whose exe units get `env` on top of the test
/// process's environment (so a test never sets a variable process-wide, where
/// it would leak into the tests that run beside it).
pub fn spawn_standin_agent_with_env(
    provider: &DaemonProcess,
    offer_id: String,
    offer: DemandOfferBase,
    exe_unit: &'static str,
    work: PathBuf,
    env: Vec<(String, String)>,
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
                    .envs(env.iter().map(|(name, value)| (name, value)))
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
