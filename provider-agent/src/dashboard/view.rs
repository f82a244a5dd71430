//! The documents of the dashboard's JSON API, one function per section. The
//! `*_document` functions are pure (state, presets, daemon answers in, JSON
//! out) so that unit tests pin the API's shape; [`gather`] asks the daemon and
//! reads the agent's files for them.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use golem_client::GolemClient;
use golem_model::payment::Invoice;
use serde_json::{json, Value};

use crate::earnings::{self, InvoiceFacts};
use crate::presets::{self, Preset};
use crate::state::{AgentState, AgreementRecord};

use super::controls::ControlState;
use super::negotiations::NegotiationEntry;
use super::sources::DashboardSources;

/// Days of the earnings chart.
pub const CHART_DAYS: u32 = 30;
/// Lines of an exe unit's log shown per activity.
pub const LOG_LINES: usize = 12;
/// Bytes read from the end of an exe unit's log for them.
const LOG_TAIL_BYTES: u64 = 8 * 1024;
/// Most recent invoices listed.
const INVOICES_LISTED: usize = 20;

/// What the daemon answered for one refresh; `None` where it could not be asked.
#[derive(Debug, Default)]
pub struct DaemonFacts {
    pub node_id: Option<String>,
    pub error: Option<String>,
    pub net: Option<Value>,
    pub invoices: Option<Vec<Invoice>>,
    /// The daemon's state of each live activity, by id.
    pub activity_states: HashMap<String, String>,
}

/// The agent's state with its archive of finished agreements.
pub fn agent_state(data_dir: &Path) -> AgentState {
    let mut state =
        crate::state::read(&data_dir.join(crate::state::STATE_FILE)).unwrap_or_else(|error| {
            tracing::warn!(%error, "the dashboard cannot read the agent state");
            AgentState::default()
        });
    for agreement in crate::state::read_archive(data_dir) {
        state
            .agreements
            .entry(agreement.agreement_id.clone())
            .or_insert(agreement);
    }
    state
}

/// Ask the daemon what the sections need.
pub async fn gather(client: &GolemClient, state: &AgentState) -> DaemonFacts {
    let mut facts = DaemonFacts::default();
    match client.me().await {
        Ok(me) => facts.node_id = Some(me.identity.to_string()),
        Err(error) => {
            facts.error = Some(error.to_string());
            return facts;
        }
    }
    facts.net = client.net_status().await.ok();
    facts.invoices = client.invoices().await.ok();
    for agreement in state.agreements.values().filter(|a| a.live()) {
        for activity in agreement.activities.values().filter(|a| a.alive) {
            if let Ok(state) = client.activity_state(&activity.activity_id).await {
                facts
                    .activity_states
                    .insert(activity.activity_id.clone(), state.state.0.to_string());
            }
        }
    }
    facts
}

/// The status section: daemon reachable, NodeId, subnet, peers, exe units and sandbox.
pub fn status_document(
    sources: &DashboardSources,
    daemon: &DaemonFacts,
    controls: &ControlState,
) -> Value {
    let settings = (sources.settings)();
    let peers = daemon
        .net
        .as_ref()
        .and_then(|net| net["connected"].as_array())
        .map(Vec::len);
    json!({
        "daemon": {
            "reachable": daemon.node_id.is_some(),
            "apiUrl": sources.api_url,
            "error": daemon.error,
        },
        "nodeId": daemon.node_id,
        "nodeName": settings.node_name,
        "subnet": settings.subnet,
        "peers": peers,
        "listenAddrs": daemon.net.as_ref().map(|net| net["listen_addrs"].clone()),
        "exeUnits": sources.exe_units,
        "offersPaused": controls.paused,
        "startedAt": sources.started_at,
    })
}

/// The offers section: per exe unit its runtime, resources and preset's
/// prices, whether it is published; and every preset with its state.
pub fn offers_document(
    sources: &DashboardSources,
    state: &AgentState,
    presets: &[Preset],
    controls: &ControlState,
) -> Value {
    let settings = (sources.settings)();
    let price = |preset: &Preset| {
        json!({
            "startFee": preset.start_fee.to_string(),
            "perCpuSec": preset.cpu_sec.to_string(),
            "perSec": preset.duration_sec.to_string(),
        })
    };
    // One offer per exe unit and preset it offers (see `presets::offered_for`).
    let offers: Vec<Value> = sources
        .exe_units
        .iter()
        .flat_map(|unit| {
            presets::offered_for(presets, &unit.runtime)
                .into_iter()
                .map(move |preset| (unit, preset))
        })
        .map(|(unit, preset)| {
            let subscription = state.offers.iter().find(|offer| {
                offer.runtime == unit.runtime
                    && offer.preset == preset.name
                    && !offer.subscription_id.is_empty()
            });
            json!({
                "runtime": unit.runtime,
                "preset": preset.name,
                "prices": price(&preset),
                "published": subscription.is_some() && !controls.paused,
                "subscriptionId": subscription.map(|offer| offer.subscription_id.clone()),
                "resources": {
                    "cores": settings.resources.cores,
                    "threads": settings.resources.threads,
                    "memGib": settings.resources.mem_gib,
                    "storageGib": settings.resources.storage_gib,
                },
                "platforms": settings.resources.platforms,
            })
        })
        .collect();
    let mut all: Vec<Preset> = presets.to_vec();
    for unit in &sources.exe_units {
        if !presets.iter().any(|preset| preset.exe_unit == unit.runtime) {
            all.push(Preset::default_for(&unit.runtime));
        }
    }
    let presets: Vec<Value> = all
        .iter()
        .map(|preset| {
            let in_use = sources.exe_units.iter().any(|unit| {
                unit.runtime == preset.exe_unit
                    && presets::offered_for(presets, &unit.runtime)
                        .iter()
                        .any(|offered| offered.name == preset.name)
            });
            json!({
                "name": preset.name,
                "exeUnit": preset.exe_unit,
                "prices": price(preset),
                "active": preset.active,
                "inUse": in_use,
            })
        })
        .collect();
    json!({ "paused": controls.paused, "offers": offers, "presets": presets })
}

/// The negotiations section, newest first.
pub fn negotiations_document(entries: &[NegotiationEntry]) -> Value {
    json!({ "recent": entries })
}

/// The agreements section: live ones, then ended ones the state still holds
/// (being invoiced), each with its activities.
pub fn agreements_document(
    state: &AgentState,
    daemon: &DaemonFacts,
    log_tail: &dyn Fn(&Path) -> Vec<String>,
) -> Value {
    let mut list: Vec<&AgreementRecord> = state
        .agreements
        .values()
        .filter(|agreement| agreement.live() || !agreement.finished())
        .collect();
    list.sort_by_key(|agreement| (!agreement.live(), std::cmp::Reverse(agreement.approved_at)));
    let agreements: Vec<Value> = list
        .into_iter()
        .map(|agreement| {
            let counter = |name: &str| agreement.usage_vector.iter().position(|n| n == name);
            let cpu = counter(presets::USAGE_VECTOR[0]);
            let duration = counter(presets::USAGE_VECTOR[1]);
            let activities: Vec<Value> = agreement
                .activities
                .values()
                .map(|activity| {
                    let reading =
                        |index: Option<usize>| index.and_then(|i| activity.usage.get(i).copied());
                    let state = if activity.alive {
                        daemon
                            .activity_states
                            .get(&activity.activity_id)
                            .cloned()
                            .unwrap_or_else(|| "Running".into())
                    } else {
                        "Terminated".into()
                    };
                    json!({
                        "activityId": activity.activity_id,
                        "startedAt": activity.started_at,
                        "state": state,
                        "alive": activity.alive,
                        "cpuSec": reading(cpu),
                        "durationSec": reading(duration),
                        "cost": activity.amount.to_string(),
                        "endedReason": activity.ended_reason,
                        "log": log_tail(&activity.work_dir),
                    })
                })
                .collect();
            json!({
                "agreementId": agreement.agreement_id,
                "requestorId": agreement.requestor_id,
                "runtime": agreement.runtime,
                "startedAt": agreement.approved_at,
                "validTo": agreement.valid_to,
                "state": if agreement.live() { "live" } else { "ended" },
                "endedReason": agreement.ended,
                "costSoFar": agreement.total().to_string(),
                "invoiceId": agreement.invoice.as_ref().map(|invoice| invoice.invoice_id.clone()),
                "activities": activities,
            })
        })
        .collect();
    json!({ "agreements": agreements })
}

/// The earnings section: totals by the shared definition
/// ([`crate::earnings`]), a chart of the last [`CHART_DAYS`] days per
/// platform, and the most recent invoices with their standing.
pub fn earnings_document(invoices: &[InvoiceFacts], now: DateTime<Utc>) -> Value {
    let totals = earnings::totals(invoices, now);
    let mut recent: Vec<&InvoiceFacts> = invoices.iter().collect();
    recent.sort_by_key(|invoice| std::cmp::Reverse(invoice.issued_at));
    let recent: Vec<Value> = recent
        .into_iter()
        .take(INVOICES_LISTED)
        .map(|invoice| {
            json!({
                "invoiceId": invoice.invoice_id,
                "agreementId": invoice.agreement_id,
                "platform": invoice.platform,
                "amount": invoice.amount.to_string(),
                "issuedAt": invoice.issued_at,
                "dueAt": invoice.due_at,
                "standing": invoice.standing(now),
            })
        })
        .collect();
    json!({
        "totals": crate::status::earnings_document(&totals),
        "days": earnings::daily(invoices, now, CHART_DAYS),
        "invoices": recent,
    })
}

/// The invoices the earnings are computed from: the daemon's when it
/// answered, else those the agent's state knows of.
pub fn invoices_of(state: &AgentState, daemon: &DaemonFacts) -> Vec<InvoiceFacts> {
    match &daemon.invoices {
        Some(invoices) => earnings::ours(state, invoices),
        None => earnings::from_state(state),
    }
}

/// The last [`LOG_LINES`] lines of the exe unit's log in `work_dir`.
pub fn exe_unit_log_tail(work_dir: &Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(work_dir.join("exe-unit.log")) else {
        return Vec::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = length.saturating_sub(LOG_TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    let skip = lines.len().saturating_sub(LOG_LINES);
    lines[skip..].iter().map(|line| line.to_string()).collect()
}

/// Every section in one document (the page's first render and each event).
pub fn dashboard_document(
    sources: &DashboardSources,
    state: &AgentState,
    daemon: &DaemonFacts,
    now: DateTime<Utc>,
) -> Value {
    let controls = sources.link.controls.current();
    let presets = presets::load(&sources.data_dir).unwrap_or_default();
    json!({
        "status": status_document(sources, daemon, &controls),
        "offers": offers_document(sources, state, &presets, &controls),
        "negotiations": negotiations_document(&sources.link.negotiations.recent()),
        "agreements": agreements_document(state, daemon, &exe_unit_log_tail),
        "earnings": earnings_document(&invoices_of(state, daemon), now),
        "at": now,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::state::ActivityRecord;
    use rust_decimal::Decimal;

    fn agreement(id: &str, ended: Option<&str>) -> AgreementRecord {
        let now = Utc::now();
        let mut record = AgreementRecord {
            agreement_id: id.into(),
            runtime: "wasmtime".into(),
            requestor_id: "0xrequestor".into(),
            approved_at: now,
            valid_to: now + chrono::Duration::hours(1),
            coeffs: vec![Decimal::new(1, 1), Decimal::new(1, 2), Decimal::ONE],
            usage_vector: presets::USAGE_VECTOR
                .iter()
                .map(|s| s.to_string())
                .collect(),
            debit_note_interval_sec: 60,
            accept_timeout_sec: None,
            next_debit_note_at: now,
            activities: Default::default(),
            unaccepted: Vec::new(),
            ended: ended.map(String::from),
            invoice: None,
            invoice_error: None,
            claim: Default::default(),
        };
        record.activities.insert(
            format!("{id}-act"),
            ActivityRecord {
                activity_id: format!("{id}-act"),
                pid: Some(1),
                work_dir: "/nonexistent".into(),
                alive: ended.is_none(),
                started_at: now,
                usage: vec![2.5, 10.0],
                amount: Decimal::new(135, 2),
                billed: Decimal::ZERO,
                ended_reason: None,
            },
        );
        record
    }

    #[test]
    fn agreements_show_live_ones_first_with_cpu_time_state_cost_and_log() {
        let mut state = AgentState::default();
        for record in [
            agreement("ended", Some("terminated")),
            agreement("live", None),
        ] {
            state.agreements.insert(record.agreement_id.clone(), record);
        }
        let mut daemon = DaemonFacts::default();
        daemon
            .activity_states
            .insert("live-act".into(), "Ready".into());
        let document = agreements_document(&state, &daemon, &|_| vec!["line".into()]);
        let list = document["agreements"].as_array().unwrap();
        assert_eq!(list.len(), 2, "ended but not yet invoiced: still shown");
        assert_eq!(list[0]["agreementId"], "live");
        assert_eq!(list[0]["state"], "live");
        assert_eq!(list[0]["requestorId"], "0xrequestor");
        assert_eq!(list[0]["costSoFar"], "1.35");
        let activity = &list[0]["activities"][0];
        assert_eq!(activity["state"], "Ready");
        assert_eq!(activity["cpuSec"], 2.5);
        assert_eq!(activity["durationSec"], 10.0);
        assert_eq!(activity["log"], json!(["line"]));
        assert_eq!(list[1]["activities"][0]["state"], "Terminated");
    }

    #[test]
    fn earnings_use_the_shared_definition() {
        let now = Utc::now();
        let invoice = |id: &str, status| InvoiceFacts {
            invoice_id: id.into(),
            agreement_id: id.into(),
            platform: "dummy-local-tglm".into(),
            amount: Decimal::new(25, 1),
            status,
            issued_at: now,
            due_at: now - chrono::Duration::minutes(1),
        };
        use golem_model::payment::DocumentStatus;
        let invoices = [
            invoice("paid", DocumentStatus::Settled),
            invoice("late", DocumentStatus::Accepted),
        ];
        let document = earnings_document(&invoices, now);
        assert_eq!(document["totals"]["invoiced"], "5.0");
        assert_eq!(document["totals"]["accepted"], "5.0");
        assert_eq!(document["totals"]["paid"], "2.5");
        assert_eq!(document["totals"]["late"], "2.5");
        assert_eq!(document["totals"]["counts"]["late"], 1);
        let today = &document["days"][29];
        assert_eq!(
            today["platforms"]["dummy-local-tglm"]["paid"]["amount"],
            "2.5"
        );
        let standings: Vec<&str> = document["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|invoice| invoice["standing"].as_str().unwrap())
            .collect();
        assert!(
            standings.contains(&"paid") && standings.contains(&"late"),
            "{standings:?}"
        );
    }

    #[test]
    fn the_log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..100).map(|index| format!("line {index}\n")).collect();
        std::fs::write(dir.path().join("exe-unit.log"), text).unwrap();
        let tail = exe_unit_log_tail(dir.path());
        assert_eq!(tail.len(), LOG_LINES);
        assert_eq!(tail.last().unwrap(), "line 99");
        assert!(exe_unit_log_tail(&dir.path().join("none")).is_empty());
    }
}
