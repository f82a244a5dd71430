//! `golem-provider run`: subscribes the offers, answers proposals by the
//! negotiation policy, approves agreements, spawns and supervises exe units on
//! activity events, and bills (debit notes at the agreed interval, an invoice
//! when the agreement ends). Everything runs on one current-thread runtime: a
//! task per offer subscription, one for activity events, one billing ticker,
//! one that re-subscribes the offers when `presets.toml` or `provider.toml`
//! change (or on SIGHUP): offers that changed are unsubscribed and their new
//! versions subscribed, while agreements, activities and billing go on.
//! State that must survive a restart goes through [`StateStore`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use golem_client::market::Side;
use golem_client::{ClientError, GolemClient};
use golem_model::activity::{ActivityState, State};
use golem_model::activity_control::ProviderEvent;
use golem_model::identity::NodeId;
use golem_model::market::{
    Agreement, AgreementState, MarketEvent, Proposal, ProposalState, Reason,
};
use golem_model::payment::DocumentStatus;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rust_decimal::Decimal;
use tokio::sync::oneshot;

use crate::billing;
use crate::capacity::{self, Capacity, Claim};
use crate::config::{ConfigError, ProviderConfig};
use crate::dashboard::Outcome;
use crate::exe_units::ExeUnit;
use crate::negotiation;
use crate::offer::{self, OfferSpec};
use crate::presets::Preset;
use crate::state::{ActivityRecord, AgreementRecord, OfferRecord, SentDebitNote, StateStore};

/// The log line the test harness waits for.
pub const READY_LINE: &str = "provider agent ready";
const TICK: Duration = Duration::from_millis(500);
const KILL_GRACE: Duration = Duration::from_secs(5);
const POLL_TIMEOUT_SEC: f64 = 5.0;
/// How often the files the offers come from are looked at.
const OFFER_SOURCES_POLL: Duration = Duration::from_secs(1);

/// Reads the configuration again as `run` resolved it at start (file →
/// environment → the same flags), for re-subscribing after a change.
pub type ReloadConfig = Box<dyn Fn() -> Result<ProviderConfig, ConfigError> + Send + Sync>;
/// How long a billing round waits for a debit note to reach the requestor.
const SEND_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no exe unit works here ({0}); build or install exe-unit-wasm / exe-unit-vm beside golem-provider or on PATH")]
    NoExeUnits(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Presets(#[from] crate::presets::PresetError),
    #[error("cannot wait for signals: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    BusSocket(String),
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::DashboardError),
}

struct LiveOffer {
    spec: OfferSpec,
    subscription_id: Mutex<String>,
    /// Its market loop, aborted when the offer is replaced or the agent stops.
    market_loop: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Agent {
    client: GolemClient,
    /// Replaced when the configuration is re-read ([`Agent::refresh_offers`]).
    config: RwLock<Arc<ProviderConfig>>,
    reload_config: ReloadConfig,
    /// This node's id: the payee address in the offers.
    address: String,
    /// The bus socket of the daemon `client` talks to, verified at start.
    bus_socket: PathBuf,
    exe_units: Vec<ExeUnit>,
    /// The subscribed offers; replaced as a whole by a refresh.
    offers: Mutex<Vec<Arc<LiveOffer>>>,
    state: StateStore,
    /// Kill switches of running exe units, by activity id.
    children: Mutex<HashMap<String, oneshot::Sender<String>>>,
    /// The claims of agreements being approved, counted against the capacity.
    pending_approvals: Mutex<HashMap<String, Claim>>,
    /// Wakes the billing loop before its next tick (an agreement ended).
    billing_wake: tokio::sync::Notify,
    /// The negotiation log and offer controls the dashboard shows and sets.
    link: crate::dashboard::AgentLink,
    /// Held while the offers are replaced (a refresh, a pause or a resume),
    /// so that a refresh cannot subscribe offers a pause is retiring.
    offers_update: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_gone(error: &ClientError) -> bool {
    matches!(error.status(), Some(404 | 410))
}

/// Run the agent until SIGTERM/SIGINT.
pub async fn run(
    config: ProviderConfig,
    reload_config: ReloadConfig,
    client: GolemClient,
) -> Result<(), AgentError> {
    let me = client.me().await?;
    let address = me.identity.to_string();
    tracing::info!(node_id = %address, subnet = %config.subnet, api_url = %client.base_url(), "connected to the daemon");
    let bus_socket = locate_bus_socket(&config, &client, &me.identity).await?;
    tracing::info!(bus_socket = %bus_socket.display(), "exe units will use the daemon's bus socket");
    let state = StateStore::open(&config.data_dir)?;
    kill_orphans(&state);

    let exe_units = crate::exe_units::discover(
        &config.search_path,
        config.exe_units.as_deref(),
        &[(
            crate::config::env_names::VM_SANDBOX,
            config.vm_sandbox.as_deref(),
        )],
    )
    .await;
    if exe_units.is_empty() {
        let wanted = config
            .exe_units
            .as_ref()
            .map(|names| format!("allowed: {}", names.join(", ")))
            .unwrap_or_else(|| "none found".into());
        return Err(AgentError::NoExeUnits(wanted));
    }
    let presets: Vec<Preset> = crate::presets::load(&config.data_dir)?;
    let specs = offer::build_all(&config, &exe_units, &presets, &address);

    // Offers of a previous run are replaced.
    for old in state.read(|state| state.offers.clone()) {
        let _ = client.unsubscribe(Side::Offers, &old.subscription_id).await;
    }
    let link = crate::dashboard::AgentLink::open(&config.data_dir);
    // Paused from the dashboard: nothing is subscribed until it resumes.
    let paused = link.controls.current().paused;
    if paused {
        tracing::info!(
            "offers paused from the dashboard: none is subscribed until they are resumed"
        );
    }
    let mut offers = Vec::new();
    for spec in specs.into_iter().filter(|_| !paused) {
        offers.push(subscribe(&client, spec).await?);
    }
    if offers.is_empty() && !paused {
        tracing::warn!("every preset is inactive: nothing is offered until one is activated (`golem-provider preset activate NAME`)");
    }
    let agent = Arc::new(Agent {
        client,
        config: RwLock::new(Arc::new(config)),
        reload_config,
        address,
        bus_socket,
        exe_units,
        offers: Mutex::new(offers),
        state,
        children: Mutex::new(HashMap::new()),
        pending_approvals: Mutex::new(HashMap::new()),
        billing_wake: tokio::sync::Notify::new(),
        link,
        offers_update: tokio::sync::Mutex::new(()),
    });
    agent.save_offers();
    let dashboard = match &agent.config().dashboard {
        Some(dashboard) => Some(crate::dashboard::start(
            dashboard,
            agent.dashboard_sources(),
        )?),
        None => None,
    };
    agent.pick_up_agreements().await;

    for offer in lock(&agent.offers).iter() {
        agent.start_market_loop(offer);
    }
    let tasks = vec![
        tokio::spawn(agent.clone().activity_loop()),
        tokio::spawn(agent.clone().billing_loop()),
        tokio::spawn(agent.clone().agreement_end_loop()),
        tokio::spawn(agent.clone().offer_sources_loop()),
        tokio::spawn(agent.clone().pause_loop(paused)),
    ];
    {
        let offers = lock(&agent.offers);
        tracing::info!(
            offers = offers.len(),
            runtimes = ?offers.iter().map(|offer| offer.spec.runtime.clone()).collect::<Vec<_>>(),
            max_agreements = ?agent.config().max_agreements,
            "{READY_LINE}"
        );
    }

    wait_for_signal().await.map_err(AgentError::Signals)?;
    tracing::info!("stopping: unsubscribing offers and stopping exe units; agreements are picked up on the next start");
    for task in &tasks {
        task.abort();
    }
    if let Some(dashboard) = &dashboard {
        dashboard.stop().await;
    }
    let offers: Vec<Arc<LiveOffer>> = lock(&agent.offers).clone();
    for offer in offers {
        agent.retire(&offer).await;
    }
    let running: Vec<String> = lock(&agent.children).keys().cloned().collect();
    for activity_id in running {
        agent.stop_exe_unit(&activity_id, "the provider agent stopped");
    }
    // Give the supervising tasks time to deliver SIGTERM and reap.
    let deadline = Instant::now() + KILL_GRACE;
    while !lock(&agent.children).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Wait for the exe unit to exit, or for a stop request: then SIGTERM, and
/// SIGKILL after [`KILL_GRACE`]. Returns the exit status and the stop reason
/// when the stop was asked for.
async fn wait_for_exit(
    child: &mut tokio::process::Child,
    pid: u32,
    mut stop: oneshot::Receiver<String>,
) -> (std::io::Result<std::process::ExitStatus>, Option<String>) {
    tokio::select! {
        biased;
        status = child.wait() => (status, None),
        reason = &mut stop => {
            // An exe unit that died first (the daemon saw it leave the bus and
            // ended the activity, whose destroy event asked for this stop) is
            // an unexpected exit, not the stop: its reason must say so.
            if let Ok(Some(status)) = child.try_wait() {
                if !status.success() {
                    return (Ok(status), None);
                }
            }
            let reason = reason.unwrap_or_else(|_| "the provider agent stopped".into());
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            let status = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    tracing::warn!("the exe unit ignored SIGTERM; killing it");
                    let _ = child.kill().await;
                    child.wait().await
                }
            };
            (status, Some(reason))
        }
    }
}

/// The reason a failed exe unit gave on its last `exe-unit error: ` stderr line
/// (spawn contract), read from its log in the activity's work dir.
fn exe_unit_failure(work_dir: &std::path::Path) -> Option<String> {
    let log = std::fs::read_to_string(work_dir.join("exe-unit.log")).ok()?;
    log.lines().rev().find_map(|line| {
        line.strip_prefix(golem_model::activity_control::EXE_UNIT_FAILURE_PREFIX)
            .map(|reason| reason.trim().to_string())
    })
}

/// The bus socket to hand exe units: the configured one, else the one the
/// daemon names at `/local-api/v1/bus`. Either way it must answer the bus
/// handshake as the same node the REST API is, or the agent does not start:
/// every activity would die at once otherwise.
async fn locate_bus_socket(
    config: &ProviderConfig,
    client: &GolemClient,
    node_id: &NodeId,
) -> Result<PathBuf, AgentError> {
    const SETTING: &str =
        "set --bus-socket or GOLEM_BUS_SOCKET to the daemon's <data-dir>/bus.sock";
    let (path, source) = match &config.bus_socket {
        Some(path) => (path.clone(), "configured"),
        None => match client.bus_info().await {
            Ok(info) => (PathBuf::from(info.bus_socket), "named by the daemon"),
            Err(error) => {
                return Err(AgentError::BusSocket(format!(
                    "the daemon at {} does not say where its bus socket is ({error}); {SETTING}",
                    client.base_url()
                )))
            }
        },
    };
    let bus = golem_bus::client::BusClient::connect(&path, "golem-provider/probe")
        .await
        .map_err(|error| {
            AgentError::BusSocket(format!(
                "cannot reach the bus socket {} ({source}): {error}; {SETTING}",
                path.display()
            ))
        })?;
    match bus.node_id() {
        Some(bus_node) if bus_node != *node_id => Err(AgentError::BusSocket(format!(
            "the bus socket {} ({source}) belongs to node {bus_node}, but the REST API at {} is node {node_id}; {SETTING}",
            path.display(),
            client.base_url()
        ))),
        _ => Ok(path),
    }
}

/// Subscribe `spec` on the daemon.
async fn subscribe(client: &GolemClient, spec: OfferSpec) -> Result<Arc<LiveOffer>, ClientError> {
    let subscription_id = client.subscribe_offer(&spec.to_base()).await?;
    tracing::info!(%subscription_id, runtime = %spec.runtime, preset = %spec.preset.name,
        coeffs = ?spec.preset.coeffs(), "offer subscribed");
    Ok(Arc::new(LiveOffer {
        spec,
        subscription_id: Mutex::new(subscription_id),
        market_loop: Mutex::new(None),
    }))
}

/// The next SIGHUP; never, when it cannot be watched.
async fn hangup_received(hangup: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(signal) = hangup {
        if signal.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}

/// What the offers are built from, as (modified time, length) per file.
fn offer_sources_stamp(data_dir: &Path) -> Vec<Option<(std::time::SystemTime, u64)>> {
    [
        crate::presets::path(data_dir),
        data_dir.join(crate::config::CONFIG_FILE),
    ]
    .iter()
    .map(|path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    })
    .collect()
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Whether `pid` is a live exe unit of `activity_id` (its command line says so).
fn is_exe_unit_of(pid: u32, activity_id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.contains(") Z "))
        .unwrap_or(true);
    !zombie
        && cmdline
            .split(|byte| *byte == 0)
            .any(|part| part == activity_id.as_bytes())
}

/// Exe units recorded as running by a previous run that are still alive are
/// killed (SIGTERM, then SIGKILL); their activities are marked ended.
fn kill_orphans(state: &StateStore) {
    let orphans: Vec<(String, u32)> = state.read(|state| {
        state
            .agreements
            .values()
            .flat_map(|agreement| agreement.activities.values())
            .filter(|activity| activity.alive)
            .filter_map(|activity| Some((activity.activity_id.clone(), activity.pid?)))
            .collect()
    });
    for (activity_id, pid) in &orphans {
        if !is_exe_unit_of(*pid, activity_id) {
            continue;
        }
        tracing::warn!(%activity_id, pid, "killing an orphaned exe unit of a previous run");
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while is_exe_unit_of(*pid, activity_id) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_exe_unit_of(*pid, activity_id) {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
    state.update(|state| {
        for agreement in state.agreements.values_mut() {
            for activity in agreement.activities.values_mut() {
                if activity.alive {
                    activity.alive = false;
                    activity.ended_reason = Some("the provider agent restarted".into());
                }
            }
        }
    });
}

impl Agent {
    /// What the dashboard reads: settings, exe units, the shared link.
    fn dashboard_sources(self: &Arc<Self>) -> crate::dashboard::DashboardSources {
        let config = self.config();
        // Weak: the agent does not keep the dashboard, nor the dashboard the agent.
        let agent = Arc::downgrade(self);
        crate::dashboard::DashboardSources {
            data_dir: config.data_dir.clone(),
            api_url: self.client.base_url().to_string(),
            app_key: self.client.app_key().to_string(),
            settings: Box::new(move || {
                let config = match agent.upgrade() {
                    Some(agent) => agent.config(),
                    None => return crate::dashboard::LiveSettings::default(),
                };
                crate::dashboard::LiveSettings {
                    node_name: config.node_name.clone(),
                    subnet: config.subnet.clone(),
                    resources: crate::dashboard::OfferedResources {
                        cores: config.cores,
                        threads: config.threads,
                        mem_gib: config.mem_gib,
                        storage_gib: config.storage_gib,
                        platforms: config.platforms.clone(),
                    },
                }
            }),
            exe_units: self
                .exe_units
                .iter()
                .map(|unit| crate::dashboard::ExeUnitFacts {
                    runtime: unit.runtime.clone(),
                    binary: unit.binary.clone(),
                    sandbox: unit
                        .template
                        .get(crate::exe_units::VM_SANDBOX_PROPERTY)
                        .and_then(serde_json::Value::as_str)
                        .map(String::from),
                })
                .collect(),
            link: self.link.clone(),
            started_at: Utc::now(),
        }
    }

    /// The configuration in force (re-read when `provider.toml` changes).
    fn config(&self) -> Arc<ProviderConfig> {
        self.config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn start_market_loop(self: &Arc<Self>, offer: &Arc<LiveOffer>) {
        let task = tokio::spawn(self.clone().market_loop(offer.clone()));
        *lock(&offer.market_loop) = Some(task);
    }

    /// Stop answering for `offer` and unsubscribe it. Its loop is aborted
    /// first, so that it cannot subscribe it again on the 404 that follows.
    async fn retire(&self, offer: &LiveOffer) {
        if let Some(task) = lock(&offer.market_loop).take() {
            task.abort();
        }
        let id = lock(&offer.subscription_id).clone();
        if let Err(error) = self.client.unsubscribe(Side::Offers, &id).await {
            if !is_gone(&error) {
                tracing::warn!(subscription_id = %id, %error, "cannot unsubscribe the offer");
            }
        }
    }

    /// Obey the dashboard's "pause offers": paused, every offer is retired;
    /// resumed, they are subscribed again from the current presets and
    /// configuration ([`Agent::refresh_offers`]).
    /// `paused`: whether the offers were left unsubscribed at start.
    async fn pause_loop(self: Arc<Self>, mut paused: bool) {
        let mut controls = self.link.controls.watch();
        loop {
            let now_paused = controls.borrow_and_update().paused;
            if now_paused == paused {
                if controls.changed().await.is_err() {
                    return;
                }
                continue;
            }
            paused = now_paused;
            if paused {
                let _updating = self.offers_update.lock().await;
                let offers: Vec<Arc<LiveOffer>> = std::mem::take(&mut *lock(&self.offers));
                for offer in &offers {
                    self.retire(offer).await;
                    tracing::info!(subscription_id = %lock(&offer.subscription_id), runtime = %offer.spec.runtime,
                        preset = %offer.spec.preset.name, "offer unsubscribed: offers paused");
                }
                self.save_offers();
            } else {
                while !self.refresh_offers("offers resumed").await {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if self.link.controls.current().paused {
                        break;
                    }
                }
            }
        }
    }

    /// Watch `presets.toml` and `provider.toml` (and SIGHUP) and re-subscribe
    /// the offers whose properties or prices changed.
    async fn offer_sources_loop(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let data_dir = self.config().data_dir.clone();
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut seen = offer_sources_stamp(&data_dir);
        loop {
            let asked = tokio::select! {
                _ = tokio::time::sleep(OFFER_SOURCES_POLL) => false,
                _ = hangup_received(&mut hangup) => true,
            };
            let stamp = offer_sources_stamp(&data_dir);
            if !asked && stamp == seen {
                continue;
            }
            let cause = if asked {
                "SIGHUP"
            } else {
                "presets or provider.toml changed"
            };
            seen = if self.refresh_offers(cause).await {
                stamp
            } else {
                // Try again on the next look.
                Vec::new()
            };
        }
    }

    /// Re-read the configuration and presets; unsubscribe the offers that no
    /// longer match them and subscribe the new ones. Agreements and
    /// activities are not touched. Returns false when it should be retried
    /// (a subscription failed); a bad file keeps the current offers.
    async fn refresh_offers(self: &Arc<Self>, cause: &str) -> bool {
        let _updating = self.offers_update.lock().await;
        if self.link.controls.current().paused {
            tracing::info!(
                cause,
                "offers paused from the dashboard: not re-subscribing them (resuming does)"
            );
            return true;
        }
        let config = match (self.reload_config)() {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(%error, cause, "not re-subscribing the offers: the configuration does not load; the current offers stay");
                return true;
            }
        };
        let presets = match crate::presets::load(&config.data_dir) {
            Ok(presets) => presets,
            Err(error) => {
                tracing::warn!(%error, cause, "not re-subscribing the offers: the presets do not load; the current offers stay");
                return true;
            }
        };
        let previous = self.config();
        if config.exe_units != previous.exe_units || config.vm_sandbox != previous.vm_sandbox {
            tracing::warn!(
                "exe-units and vm-sandbox changes take effect at the next start of the agent"
            );
        }
        let specs = offer::build_all(&config, &self.exe_units, &presets, &self.address);
        *self
            .config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
        let current: Vec<Arc<LiveOffer>> = lock(&self.offers).clone();
        let (kept, gone): (Vec<_>, Vec<_>) = current
            .into_iter()
            .partition(|offer| specs.iter().any(|spec| spec.same_offer(&offer.spec)));
        let added: Vec<OfferSpec> = specs
            .into_iter()
            .filter(|spec| !kept.iter().any(|offer| offer.spec.same_offer(spec)))
            .collect();
        if gone.is_empty() && added.is_empty() {
            tracing::info!(cause, offers = lock(&self.offers).len(), "offers unchanged");
            return true;
        }
        for offer in &gone {
            self.retire(offer).await;
            tracing::info!(subscription_id = %lock(&offer.subscription_id), runtime = %offer.spec.runtime,
                preset = %offer.spec.preset.name, cause, "offer unsubscribed: it changed");
        }
        let mut offers = kept;
        let mut complete = true;
        for spec in added {
            match subscribe(&self.client, spec).await {
                Ok(offer) => {
                    self.start_market_loop(&offer);
                    offers.push(offer);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot subscribe the changed offer; retrying in a second");
                    complete = false;
                }
            }
        }
        tracing::info!(offers = offers.len(), cause, "offers re-subscribed");
        if offers.is_empty() {
            tracing::warn!("every preset is inactive: nothing is offered until one is activated (`golem-provider preset activate NAME`)");
        }
        *lock(&self.offers) = offers;
        self.save_offers();
        complete
    }

    fn save_offers(&self) {
        let records: Vec<OfferRecord> = lock(&self.offers)
            .iter()
            .filter(|offer| !lock(&offer.subscription_id).is_empty())
            .map(|offer| OfferRecord {
                subscription_id: lock(&offer.subscription_id).clone(),
                runtime: offer.spec.runtime.clone(),
                preset: offer.spec.preset.name.clone(),
                coeffs: offer.spec.preset.coeffs(),
            })
            .collect();
        self.state.update(|state| state.offers = records);
    }

    /// The claims of the live agreements and of those being approved.
    fn claims_held(&self, pending: &HashMap<String, Claim>) -> Vec<Claim> {
        let mut claims: Vec<Claim> = self.state.read(|state| {
            state
                .agreements
                .values()
                .filter(|agreement| agreement.live())
                .map(|agreement| agreement.claim)
                .collect()
        });
        claims.extend(pending.values().copied());
        claims
    }

    /// Approved agreements of this node the state does not know (e.g. approved
    /// just before a crash) are billed too.
    async fn pick_up_agreements(&self) {
        let list = match self.client.agreements().await {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "cannot list agreements to pick up");
                return;
            }
        };
        for entry in list.into_iter().filter(|entry| entry.role == "Provider") {
            if self
                .state
                .read(|state| state.agreements.contains_key(&entry.id))
            {
                continue;
            }
            let Ok(agreement) = self.client.agreement(&entry.id).await else {
                continue;
            };
            if agreement.state == AgreementState::Approved {
                tracing::info!(agreement_id = %entry.id, "picked up a live agreement");
                self.record_agreement(&agreement);
            }
        }
        let live: Vec<String> = self.state.read(|state| {
            state
                .agreements
                .values()
                .filter(|a| a.needs_billing())
                .map(|a| a.agreement_id.clone())
                .collect()
        });
        if !live.is_empty() {
            tracing::info!(agreements = ?live, "resuming billing of agreements from the previous run");
        }
    }

    fn record_agreement(&self, agreement: &Agreement) {
        let record = billing::record_for(agreement, self.config().debit_note_interval_sec);
        self.state.update(|state| {
            state
                .agreements
                .entry(record.agreement_id.clone())
                .or_insert(record);
        });
    }

    // ------------------------------------------------------------- market

    async fn market_loop(self: Arc<Self>, offer: Arc<LiveOffer>) {
        loop {
            let subscription_id = lock(&offer.subscription_id).clone();
            let events = match self
                .client
                .market_events(Side::Offers, &subscription_id, POLL_TIMEOUT_SEC, 50)
                .await
            {
                Ok(events) => events,
                Err(error) if is_gone(&error) => {
                    self.resubscribe(&offer).await;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read offer events; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let received = Instant::now();
            for event in events {
                match event {
                    MarketEvent::ProposalEvent { proposal, .. }
                        if matches!(
                            proposal.state,
                            ProposalState::Draft | ProposalState::Initial
                        ) =>
                    {
                        let agent = self.clone();
                        let offer = offer.clone();
                        let subscription_id = subscription_id.clone();
                        tokio::spawn(async move {
                            agent
                                .answer_proposal(&offer, &subscription_id, proposal, received)
                                .await
                        });
                    }
                    MarketEvent::AgreementEvent { agreement, .. } => {
                        let agent = self.clone();
                        tokio::spawn(async move { agent.answer_agreement(agreement).await });
                    }
                    MarketEvent::ProposalRejectedEvent {
                        proposal_id,
                        reason,
                        ..
                    } => {
                        let reason = reason.map(|r| r.message);
                        tracing::info!(%proposal_id, ?reason, "the requestor rejected our proposal");
                        self.link.negotiations.record(
                            &proposal_id,
                            "",
                            &offer.spec.runtime,
                            crate::dashboard::Outcome::RejectedByRequestor,
                            reason,
                        );
                    }
                    MarketEvent::ProposalEvent { .. } => {}
                }
            }
        }
    }

    /// The subscription expired or vanished: subscribe the offer again.
    async fn resubscribe(&self, offer: &LiveOffer) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.client.subscribe_offer(&offer.spec.to_base()).await {
                Ok(id) => {
                    tracing::info!(subscription_id = %id, runtime = %offer.spec.runtime, "offer subscription expired; offer subscribed again");
                    *lock(&offer.subscription_id) = id;
                    self.save_offers();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot subscribe the offer again; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn record_negotiation(
        &self,
        offer: &LiveOffer,
        proposal: &Proposal,
        outcome: Outcome,
        reason: Option<String>,
    ) {
        self.link.negotiations.record(
            &proposal.proposal_id,
            &proposal.issuer_id.to_string(),
            &offer.spec.runtime,
            outcome,
            reason,
        );
    }

    #[tracing::instrument(skip_all, fields(proposal_id = %proposal.proposal_id, requestor = %proposal.issuer_id))]
    async fn answer_proposal(
        &self,
        offer: &LiveOffer,
        subscription_id: &str,
        proposal: Proposal,
        received: Instant,
    ) {
        let proposal_id = proposal.proposal_id.clone();
        let held = self.claims_held(&lock(&self.pending_approvals));
        let now = Utc::now();
        let verdict = negotiation::evaluate(
            &self.config(),
            &proposal.properties,
            now.timestamp_millis(),
            &held,
            Claim::of_demand(&proposal.constraints),
        )
        .and_then(|terms| {
            // The payload manifest's outbound access, by the provider's rules.
            crate::outbound::judge(
                &self.config().data_dir,
                &proposal.properties,
                &offer.spec.properties,
                &proposal.issuer_id,
                now.timestamp(),
            )
            .map(|()| terms)
        });
        let decided_us = received.elapsed().as_micros() as u64;
        match verdict {
            Ok(terms) => {
                let draft = negotiation::counter(&offer.spec, &terms);
                match self
                    .client
                    .counter_proposal(Side::Offers, subscription_id, &proposal_id, &draft)
                    .await
                {
                    Ok(draft_id) => {
                        let counter_us = received.elapsed().as_micros() as u64;
                        let since_proposal_ms = (Utc::now() - proposal.timestamp)
                            .num_microseconds()
                            .unwrap_or(0) as f64
                            / 1000.0;
                        tracing::info!(%draft_id, platform = %terms.platform,
                            debit_note_interval_sec = terms.debit_note_interval_sec,
                            decided_us, counter_us, since_proposal_ms,
                            "proposal countered with a Draft");
                        self.record_negotiation(
                            offer,
                            &proposal,
                            Outcome::Countered,
                            Some(format!("platform {}", terms.platform)),
                        );
                    }
                    Err(error) => {
                        let reason = format!("cannot counter: {error}");
                        tracing::info!(%reason, "proposal rejected");
                        self.record_negotiation(
                            offer,
                            &proposal,
                            Outcome::Rejected,
                            Some(reason.clone()),
                        );
                        let _ = self
                            .client
                            .reject_proposal(
                                Side::Offers,
                                subscription_id,
                                &proposal_id,
                                Some(&Reason::new(reason)),
                            )
                            .await;
                    }
                }
            }
            Err(reason) => {
                tracing::info!(%reason, decided_us, "proposal rejected");
                self.record_negotiation(
                    offer,
                    &proposal,
                    Outcome::Rejected,
                    Some(reason.to_string()),
                );
                if let Err(error) = self
                    .client
                    .reject_proposal(
                        Side::Offers,
                        subscription_id,
                        &proposal_id,
                        Some(&capacity::rejection(reason)),
                    )
                    .await
                {
                    tracing::warn!(%error, "cannot reject the proposal");
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(agreement_id = %agreement.agreement_id))]
    async fn answer_agreement(&self, agreement: Agreement) {
        let agreement_id = agreement.agreement_id.clone();
        let refusal = {
            let mut pending = lock(&self.pending_approvals);
            let claim = Claim::of_demand(&agreement.demand.constraints);
            let held = self.claims_held(&pending);
            match Capacity::of(&self.config()).admit(&held, claim) {
                Ok(()) => {
                    pending.insert(agreement_id.clone(), claim);
                    None
                }
                Err(refusal) => Some(refusal),
            }
        };
        let requestor = agreement.demand.requestor_id.to_string();
        let runtime = agreement
            .offer
            .properties
            .get(offer::props::RUNTIME_NAME)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(reason) = refusal {
            tracing::info!(%reason, "agreement rejected");
            self.link.negotiations.record(
                &agreement_id,
                &requestor,
                &runtime,
                Outcome::AgreementRejected,
                Some(reason.clone()),
            );
            let _ = self
                .client
                .reject_agreement(&agreement_id, Some(&capacity::rejection(reason)))
                .await;
            return;
        }
        // Recorded (and counted as live) before approving, so that whoever sees
        // it Approved also finds it in our state.
        self.record_agreement(&agreement);
        lock(&self.pending_approvals).remove(&agreement_id);
        match self.client.approve_agreement(&agreement_id, None).await {
            Ok(()) => {
                tracing::info!(requestor = %agreement.demand.requestor_id, valid_to = %agreement.valid_to, "agreement approved");
                self.link.negotiations.record(
                    &agreement_id,
                    &requestor,
                    &runtime,
                    Outcome::AgreementApproved,
                    None,
                );
            }
            Err(error) => {
                tracing::warn!(%error, "cannot approve the agreement");
                self.state
                    .update(|state| state.agreements.remove(&agreement_id));
            }
        }
    }

    // ---------------------------------------------------------- activities

    async fn activity_loop(self: Arc<Self>) {
        let mut after: Option<DateTime<Utc>> = self.state.read(|state| state.last_activity_event);
        loop {
            let after_text = after.map(|date| date.to_rfc3339());
            let events = match self
                .client
                .provider_activity_events(after_text.as_deref(), POLL_TIMEOUT_SEC, 50)
                .await
            {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "cannot read activity events; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let received = Instant::now();
            let before = after;
            for event in events {
                after = Some(event.event_date());
                match event {
                    ProviderEvent::CreateActivity {
                        event_date,
                        activity_id,
                        agreement_id,
                        ..
                    } => {
                        let agent = self.clone();
                        tokio::spawn(async move {
                            agent
                                .create_activity(&activity_id, &agreement_id, event_date, received)
                                .await
                        });
                    }
                    ProviderEvent::DestroyActivity { activity_id, .. } => {
                        tracing::info!(%activity_id, "activity destroyed; stopping its exe unit");
                        self.stop_exe_unit(&activity_id, "destroyed by the requestor");
                    }
                }
            }
            if after != before {
                self.state.update(|state| state.last_activity_event = after);
            }
        }
    }

    /// An activity was created for this provider: admit it, start its exe
    /// unit, supervise the process until it ends and record why it ended.
    #[tracing::instrument(skip(self, event_date, received))]
    async fn create_activity(
        self: Arc<Self>,
        activity_id: &str,
        agreement_id: &str,
        event_date: DateTime<Utc>,
        received: Instant,
    ) {
        let Some((agreement, unit)) = self.admit_activity(activity_id, agreement_id).await else {
            return;
        };
        let work_dir = self
            .config()
            .work_root()
            .join(agreement_id)
            .join(activity_id);
        let Some((mut child, pid)) = self
            .start_exe_unit(&unit, activity_id, &agreement, &work_dir, received)
            .await
        else {
            return;
        };
        let (stop_sender, stop) = oneshot::channel::<String>();
        lock(&self.children).insert(activity_id.to_string(), stop_sender);
        // Watch it come up: measured and bounded.
        {
            let agent = self.clone();
            let activity_id = activity_id.to_string();
            tokio::spawn(async move {
                agent
                    .watch_startup(&activity_id, event_date, received)
                    .await
            });
        }
        let (status, requested) = wait_for_exit(&mut child, pid, stop).await;
        lock(&self.children).remove(activity_id);
        let reason = self
            .exit_reason(activity_id, &work_dir, status, requested)
            .await;
        self.refresh_usage(agreement_id, activity_id).await;
        self.state.update(|state| {
            if let Some(activity) = state
                .agreements
                .get_mut(agreement_id)
                .and_then(|a| a.activities.get_mut(activity_id))
            {
                activity.alive = false;
                activity.pid = None;
                activity.ended_reason.get_or_insert(reason);
            }
        });
        if !self.config().keep_work_dirs {
            // The VM exe unit puts its volumes on a nosuid,nodev mount
            // (`<--work-dir>/volumes`) and unmounts it at shutdown; one that
            // died left it behind. Not a mount: EINVAL, ignored.
            let _ = nix::mount::umount2(
                &work_dir.join("work").join("volumes"),
                nix::mount::MntFlags::MNT_DETACH,
            );
            if let Err(error) = std::fs::remove_dir_all(&work_dir) {
                tracing::debug!(%error, "cannot remove the work dir");
            }
        }
    }

    /// Whether this agent runs the activity: id-shaped ids, a live approved
    /// agreement, the activity still New (a restart replays old events), and
    /// an exe unit for the agreement's runtime. Refuses it to the daemon with
    /// the reason otherwise.
    async fn admit_activity(
        &self,
        activity_id: &str,
        agreement_id: &str,
    ) -> Option<(Agreement, ExeUnit)> {
        // Both ids become path components of the work dir: only id-shaped ones.
        if let Err(error) = golem_model::ids::check_id("activity id", activity_id)
            .and_then(|()| golem_model::ids::check_id("agreement id", agreement_id))
        {
            tracing::warn!(%error, "activity event ignored");
            return None;
        }
        let known = self.state.read(|state| {
            state.agreements.get(agreement_id).map(|a| {
                (
                    a.live(),
                    a.activities.contains_key(activity_id),
                    a.runtime.clone(),
                )
            })
        });
        if let Some((_, true, _)) = known {
            return None;
        }
        let agreement = match self.client.agreement(agreement_id).await {
            Ok(agreement) => agreement,
            Err(error) => {
                tracing::warn!(%error, "cannot read the activity's agreement");
                return None;
            }
        };
        let runtime = match known {
            Some((true, _, runtime)) => runtime,
            Some((false, _, _)) => {
                self.refuse_activity(activity_id, "its agreement has ended")
                    .await;
                return None;
            }
            None => {
                if agreement.state != AgreementState::Approved {
                    return None;
                }
                self.record_agreement(&agreement);
                self.state
                    .read(|state| {
                        state
                            .agreements
                            .get(agreement_id)
                            .map(|a| a.runtime.clone())
                    })
                    .unwrap_or_default()
            }
        };
        match self.client.activity_state(activity_id).await {
            Ok(state) if state.state.0 == State::New => {}
            Ok(_) => return None,
            Err(error) => {
                tracing::warn!(%error, "cannot read the activity state");
                return None;
            }
        }
        let Some(unit) = self.exe_units.iter().find(|unit| unit.runtime == runtime) else {
            self.refuse_activity(
                activity_id,
                &format!("exe unit {runtime} is not available on this provider"),
            )
            .await;
            return None;
        };
        Some((agreement, unit.clone()))
    }

    /// Spawn the exe unit and record the running activity in `state.json`;
    /// refuses the activity to the daemon when the process cannot start.
    async fn start_exe_unit(
        &self,
        unit: &ExeUnit,
        activity_id: &str,
        agreement: &Agreement,
        work_dir: &Path,
        received: Instant,
    ) -> Option<(tokio::process::Child, u32)> {
        let (child, pid) = match self.spawn_exe_unit(unit, activity_id, agreement, work_dir) {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(%error, "cannot start the exe unit");
                self.refuse_activity(
                    activity_id,
                    &format!("the exe unit could not start: {error}"),
                )
                .await;
                return None;
            }
        };
        let spawn_us = received.elapsed().as_micros() as u64;
        tracing::info!(pid, runtime = %unit.runtime, spawn_us, work_dir = %work_dir.display(), "activity spawned an exe unit");
        self.state.update(|state| {
            if let Some(record) = state.agreements.get_mut(&agreement.agreement_id) {
                record.activities.insert(
                    activity_id.to_string(),
                    ActivityRecord {
                        activity_id: activity_id.to_string(),
                        pid: Some(pid),
                        work_dir: work_dir.to_path_buf(),
                        alive: true,
                        started_at: Utc::now(),
                        usage: Vec::new(),
                        amount: Decimal::ZERO,
                        billed: Decimal::ZERO,
                        ended_reason: None,
                    },
                );
            }
        });
        Some((child, pid))
    }

    /// Why the exe unit ended, in words for the requestor: the stop that was
    /// asked for, a clean exit, or its last error line. An unexpected exit is
    /// also reported to the daemon, in case it has not noticed yet.
    async fn exit_reason(
        &self,
        activity_id: &str,
        work_dir: &Path,
        status: std::io::Result<std::process::ExitStatus>,
        requested: Option<String>,
    ) -> String {
        let clean = status.as_ref().is_ok_and(|status| status.success());
        let status = status
            .map(|status| status.to_string())
            .unwrap_or_else(|error| format!("unknown status ({error})"));
        if let Some(reason) = requested {
            tracing::info!(%status, %reason, "exe unit stopped");
            return reason;
        }
        // Exit 0 follows a Shutdown from the daemon (destroy) or a terminate.
        if clean {
            tracing::info!(%status, "exe unit exited");
            return "the exe unit finished (destroyed or terminated)".to_string();
        }
        let reason = match exe_unit_failure(work_dir) {
            Some(failure) => format!("exe unit: {failure}"),
            None => format!("the exe unit exited unexpectedly ({status})"),
        };
        tracing::warn!(%reason, "activity lost its exe unit");
        // The daemon has likely ended the activity already (the exe unit left
        // the bus) with a generic reason; this one says why.
        let terminated = ActivityState {
            state: State::Terminated.into(),
            reason: Some(reason.clone()),
            error_message: None,
        };
        if let Err(error) = self
            .client
            .set_activity_state(activity_id, &terminated)
            .await
        {
            tracing::debug!(%error, "cannot report why the exe unit ended");
        }
        reason
    }

    fn spawn_exe_unit(
        &self,
        unit: &ExeUnit,
        activity_id: &str,
        agreement: &Agreement,
        work_dir: &std::path::Path,
    ) -> std::io::Result<(tokio::process::Child, u32)> {
        let volumes = work_dir.join("work");
        std::fs::create_dir_all(&volumes)?;
        std::fs::create_dir_all(self.config().cache_dir())?;
        let agreement_file = work_dir.join("agreement.json");
        std::fs::write(
            &agreement_file,
            serde_json::to_vec(agreement).map_err(std::io::Error::other)?,
        )?;
        let log = std::fs::File::create(work_dir.join("exe-unit.log"))?;
        let child = tokio::process::Command::new(&unit.binary)
            .arg("run")
            .args(["--activity-id", activity_id])
            .arg("--agreement")
            .arg(&agreement_file)
            .arg("--work-dir")
            .arg(&volumes)
            .arg("--cache-dir")
            .arg(self.config().cache_dir())
            .arg("--bus-socket")
            .arg(&self.bus_socket)
            // Resolved here (flag > env > provider.toml > off), so the exe
            // unit never inherits a different value from the agent's env.
            .env(
                crate::config::env_names::ALLOW_DOCKER_IMAGES,
                if self.config().allow_docker_images {
                    "1"
                } else {
                    "0"
                },
            )
            .args(
                self.config()
                    .allow_private_transfers
                    .then_some("--allow-private-transfers"),
            )
            // The sandbox the offer announced (the exe unit resolved the
            // provider's choice, or its default, in `offer-template`).
            .env(
                crate::config::env_names::VM_SANDBOX,
                unit.template
                    .get(crate::exe_units::VM_SANDBOX_PROPERTY)
                    .and_then(serde_json::Value::as_str)
                    .or(self.config().vm_sandbox.as_deref())
                    .unwrap_or(""),
            )
            .env(
                crate::config::env_names::EXE_UNIT_OUTBOUND_HOSTS,
                self.config().outbound_hosts.join(","),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the exe unit exited at once"))?;
        Ok((child, pid))
    }

    /// Poll the activity until the exe unit reports Initialized; log how long it
    /// took; kill an exe unit that does not come up in time.
    async fn watch_startup(&self, activity_id: &str, event_date: DateTime<Utc>, received: Instant) {
        let deadline =
            Instant::now() + Duration::from_secs(self.config().exe_unit_start_timeout_sec);
        let mut pause = Duration::from_millis(1);
        loop {
            match self.client.activity_state(activity_id).await {
                Ok(state) if state.state.0 != State::New => {
                    let since_event_ms =
                        (Utc::now() - event_date).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                    let since_received_ms = received.elapsed().as_secs_f64() * 1000.0;
                    tracing::info!(%activity_id, state = %state.state.0, since_event_ms, since_received_ms, "exe unit initialized");
                    return;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%activity_id, %error, "cannot read the activity state");
                }
            }
            if Instant::now() > deadline || !lock(&self.children).contains_key(activity_id) {
                let reason = format!(
                    "the exe unit did not initialize within {} s",
                    self.config().exe_unit_start_timeout_sec
                );
                tracing::warn!(%activity_id, %reason, "stopping the exe unit");
                self.stop_exe_unit(activity_id, &reason);
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Ask the supervising task to stop an exe unit (SIGTERM, then SIGKILL).
    fn stop_exe_unit(&self, activity_id: &str, reason: &str) {
        if let Some(stop) = lock(&self.children).remove(activity_id) {
            let _ = stop.send(reason.to_string());
        }
    }

    async fn refuse_activity(&self, activity_id: &str, reason: &str) {
        tracing::warn!(%activity_id, %reason, "activity refused");
        let terminated = ActivityState {
            state: State::Terminated.into(),
            reason: Some(reason.to_string()),
            error_message: Some(reason.to_string()),
        };
        if let Err(error) = self
            .client
            .set_activity_state(activity_id, &terminated)
            .await
        {
            tracing::warn!(%activity_id, %error, "cannot mark the activity terminated");
        }
    }

    /// Read an activity's counters from the daemon and price them.
    async fn refresh_usage(&self, agreement_id: &str, activity_id: &str) -> Option<Decimal> {
        let usage = match self.client.activity_usage(activity_id).await {
            Ok(usage) => usage,
            Err(error) => {
                tracing::warn!(%activity_id, %error, "cannot read the activity usage");
                return None;
            }
        };
        let counters = usage.current_usage?;
        self.state.update(|state| {
            let agreement = state.agreements.get_mut(agreement_id)?;
            let amount = billing::cost(&agreement.coeffs, &counters);
            let activity = agreement.activities.get_mut(activity_id)?;
            // Counters never go back; keep the highest reading.
            if amount >= activity.amount {
                activity.usage = counters;
                activity.amount = amount;
            }
            Some(activity.amount)
        })
    }

    // -------------------------------------------------------------- billing

    /// Long-polls the daemon's agreement events and wakes the billing loop when
    /// one of ours ends (terminated, cancelled, rejected), so its exe units stop
    /// and its invoice goes out at once rather than on the next billing tick.
    async fn agreement_end_loop(self: Arc<Self>) {
        let mut after: Option<DateTime<Utc>> = Some(Utc::now());
        loop {
            let after_text = after.map(|date| date.to_rfc3339());
            let events = match self
                .client
                .agreement_events(after_text.as_deref(), POLL_TIMEOUT_SEC, 50, None)
                .await
            {
                Ok(events) => events,
                Err(error) => {
                    tracing::debug!(%error, "cannot read agreement events; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut ended = false;
            for event in events {
                after = Some(event.event_date());
                ended |= !matches!(
                    event,
                    golem_model::market::AgreementOperationEvent::AgreementApprovedEvent { .. }
                );
            }
            if ended {
                self.billing_wake.notify_one();
            }
        }
    }

    async fn billing_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut late_reported = std::collections::HashSet::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.billing_wake.notified() => {}
            }
            self.report_late_payers(&mut late_reported).await;
            let agreements: Vec<AgreementRecord> = self.state.read(|state| {
                state
                    .agreements
                    .values()
                    .filter(|a| a.needs_billing())
                    .cloned()
                    .collect()
            });
            for agreement in agreements {
                let span = tracing::info_span!("billing", agreement_id = %agreement.agreement_id);
                let work = async {
                    if agreement.live() {
                        self.bill_live(&agreement).await;
                    } else {
                        self.invoice(&agreement.agreement_id).await;
                    }
                };
                tracing::Instrument::instrument(work, span).await;
            }
        }
    }

    /// Warn once about each requestor the daemon found late with a payment
    /// (past the agreement's payment timeout after accepting the invoice).
    async fn report_late_payers(&self, reported: &mut std::collections::HashSet<String>) {
        let Ok(late) = self.client.late_payments().await else {
            return;
        };
        for payment in late {
            if payment.settled_at.is_none() && reported.insert(payment.invoice_id.clone()) {
                tracing::warn!(invoice_id = %payment.invoice_id, agreement_id = %payment.agreement_id,
                    requestor_id = %payment.payer_id, amount = %payment.amount, due = %payment.due.to_rfc3339(),
                    payment_timeout_sec = payment.payment_timeout_sec,
                    "late payer: the requestor has not paid the accepted invoice within the agreed payment timeout");
            }
        }
    }

    async fn bill_live(&self, record: &AgreementRecord) {
        let agreement_id = &record.agreement_id;
        match self.client.agreement(agreement_id).await {
            Ok(agreement) if agreement.state.is_final() => {
                let reason = match self.client.termination_reason(agreement_id).await {
                    Ok(
                        golem_model::market::AgreementOperationEvent::AgreementTerminatedEvent {
                            terminator,
                            reason,
                            ..
                        },
                    ) => format!(
                        "terminated by the {terminator:?}: {}",
                        reason
                            .map(|r| r.message)
                            .unwrap_or_else(|| "no reason given".into())
                    ),
                    _ => format!("{:?}", agreement.state),
                };
                tracing::info!(state = ?agreement.state, %reason, "agreement ended");
                self.end_agreement(agreement_id, &reason).await;
                return;
            }
            Ok(_) => {}
            Err(error) if is_gone(&error) => {
                self.end_agreement(agreement_id, "the agreement is gone")
                    .await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the agreement");
                return;
            }
        }
        // An exe unit the daemon gave up on (it left the bus) is stopped too.
        for (activity_id, activity) in &record.activities {
            if !activity.alive || !lock(&self.children).contains_key(activity_id) {
                continue;
            }
            if let Ok(state) = self.client.activity_state(activity_id).await {
                if !state.state.alive() {
                    let reason = format!(
                        "the daemon terminated the activity: {}",
                        state.reason.unwrap_or_else(|| "no reason given".into())
                    );
                    self.stop_exe_unit(activity_id, &reason);
                }
            }
        }
        let now = Utc::now();
        if now >= record.valid_to {
            self.terminate(agreement_id, "the agreement expired").await;
            return;
        }
        // A requestor that stopped answering: no activity long after the
        // approval, or a debit note its daemon never received.
        let silence = chrono::Duration::seconds(self.config().requestor_timeout_sec as i64);
        if record.activities.is_empty() && now > record.approved_at + silence {
            let reason = format!(
                "the requestor created no activity within {} s of the approval",
                self.config().requestor_timeout_sec
            );
            self.terminate(agreement_id, &reason).await;
            return;
        }
        // Debit notes the requestor must receive, and accept in time when agreed.
        for note in &record.unaccepted {
            let current = self.client.debit_note(&note.debit_note_id).await;
            let overdue =
                |timeout: u64| now > note.sent_at + chrono::Duration::seconds(timeout as i64);
            let reason = match current {
                Ok(current)
                    if matches!(
                        current.status,
                        DocumentStatus::Accepted | DocumentStatus::Settled
                    ) || (current.status == DocumentStatus::Received
                        && record.accept_timeout_sec.is_none()) =>
                {
                    // Paid, or delivered with no acceptance agreed: done watching.
                    self.state.update(|state| {
                        if let Some(a) = state.agreements.get_mut(agreement_id) {
                            a.unaccepted
                                .retain(|n| n.debit_note_id != note.debit_note_id);
                        }
                    });
                    continue;
                }
                Ok(current) if current.status == DocumentStatus::Rejected => format!(
                    "debit note {} was rejected by the requestor",
                    note.debit_note_id
                ),
                Ok(current)
                    if current.status == DocumentStatus::Issued
                        && overdue(self.config().requestor_timeout_sec) =>
                {
                    format!(
                        "the requestor stopped answering: debit note {} was not delivered within {} s",
                        note.debit_note_id, self.config().requestor_timeout_sec
                    )
                }
                _ => match record.accept_timeout_sec {
                    Some(timeout) if overdue(timeout) => format!(
                        "debit note {} was not accepted within {timeout} s",
                        note.debit_note_id
                    ),
                    _ => continue,
                },
            };
            self.terminate(agreement_id, &reason).await;
            return;
        }
        if now >= record.next_debit_note_at {
            self.state.update(|state| {
                if let Some(a) = state.agreements.get_mut(agreement_id) {
                    a.next_debit_note_at =
                        now + chrono::Duration::seconds(a.debit_note_interval_sec as i64);
                }
            });
            for (activity_id, activity) in &record.activities {
                if !activity.alive
                    && activity.billed >= activity.amount
                    && activity.billed > Decimal::ZERO
                {
                    continue;
                }
                let Some(amount) = self.refresh_usage(agreement_id, activity_id).await else {
                    continue;
                };
                if amount <= activity.billed && activity.billed > Decimal::ZERO {
                    continue;
                }
                self.send_debit_note(record, activity_id, amount).await;
            }
        }
    }

    async fn send_debit_note(&self, record: &AgreementRecord, activity_id: &str, amount: Decimal) {
        let agreement_id = &record.agreement_id;
        let note = match self
            .client
            .issue_debit_note(agreement_id, activity_id, &amount.to_string())
            .await
        {
            Ok(note) => note,
            Err(error) => {
                tracing::warn!(%activity_id, %error, "cannot issue a debit note");
                return;
            }
        };
        // The daemon retries a requestor that does not answer for longer than
        // a billing round may wait; the note stays ISSUED until delivered,
        // which is what `requestor-timeout-sec` watches.
        match tokio::time::timeout(SEND_WAIT, self.client.send_debit_note(&note.debit_note_id))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(debit_note_id = %note.debit_note_id, %error, "cannot send the debit note; the daemon retries")
            }
            Err(_) => {
                tracing::warn!(debit_note_id = %note.debit_note_id, "the debit note is not delivered yet; the daemon retries")
            }
        }
        tracing::info!(debit_note_id = %note.debit_note_id, %activity_id, %amount, "debit note sent");
        self.state.update(|state| {
            if let Some(a) = state.agreements.get_mut(agreement_id) {
                if let Some(activity) = a.activities.get_mut(activity_id) {
                    activity.billed = activity.billed.max(amount);
                }
                a.unaccepted.push(SentDebitNote {
                    debit_note_id: note.debit_note_id.clone(),
                    activity_id: activity_id.to_string(),
                    amount,
                    sent_at: Utc::now(),
                });
            }
        });
    }

    /// The provider ends the agreement (expiry, unpaid debit notes): terminate, then invoice.
    async fn terminate(&self, agreement_id: &str, reason: &str) {
        tracing::warn!(%reason, "terminating the agreement");
        let mut why = Reason::new(reason);
        why.extra.insert(
            "golem.provider.code".into(),
            serde_json::Value::String("Terminated".into()),
        );
        if let Err(error) = self
            .client
            .terminate_agreement(agreement_id, Some(&why))
            .await
        {
            tracing::warn!(%error, "cannot terminate the agreement");
        }
        self.end_agreement(agreement_id, reason).await;
    }

    /// Stop the agreement's exe units, take their final counters, and invoice.
    async fn end_agreement(&self, agreement_id: &str, reason: &str) {
        let activities: Vec<String> = self.state.update(|state| {
            let Some(agreement) = state.agreements.get_mut(agreement_id) else {
                return Vec::new();
            };
            agreement.ended.get_or_insert_with(|| reason.to_string());
            agreement.activities.keys().cloned().collect()
        });
        for activity_id in &activities {
            self.stop_exe_unit(activity_id, &format!("the agreement ended: {reason}"));
        }
        let deadline = Instant::now() + KILL_GRACE + Duration::from_secs(1);
        while activities
            .iter()
            .any(|activity_id| lock(&self.children).contains_key(activity_id))
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Wait for the supervising tasks to record the exit.
        let deadline = Instant::now() + KILL_GRACE;
        while self.state.read(|state| {
            state
                .agreements
                .get(agreement_id)
                .is_some_and(|a| a.activities.values().any(|activity| activity.alive))
        }) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for activity_id in &activities {
            self.refresh_usage(agreement_id, activity_id).await;
        }
        self.invoice(agreement_id).await;
    }

    async fn invoice(&self, agreement_id: &str) {
        let Some(record) = self
            .state
            .read(|state| state.agreements.get(agreement_id).cloned())
        else {
            return;
        };
        let invoice = match record.invoice.clone() {
            Some(invoice) => invoice,
            None => {
                let amount = record.total();
                match self
                    .client
                    .issue_invoice(agreement_id, &amount.to_string())
                    .await
                {
                    Ok(invoice) => {
                        let issued = crate::state::InvoiceRecord {
                            invoice_id: invoice.invoice_id.clone(),
                            amount: invoice.amount,
                            sent: false,
                        };
                        self.state.update(|state| {
                            if let Some(a) = state.agreements.get_mut(agreement_id) {
                                a.invoice = Some(issued.clone());
                            }
                        });
                        issued
                    }
                    Err(error) if error.status() == Some(409) => {
                        // The daemon answers the same invoice again, so a
                        // Conflict means the agreement already has another one
                        // (issued by a previous run with other amounts) or
                        // cannot be billed: use its invoice when there is one.
                        match self.find_invoice(agreement_id).await {
                            Some(found) => found,
                            None => {
                                tracing::error!(%error, "the daemon refuses the invoice; giving up on it");
                                let message = error.to_string();
                                self.state.update(|state| {
                                    if let Some(a) = state.agreements.get_mut(agreement_id) {
                                        a.invoice_error = Some(message);
                                    }
                                });
                                return;
                            }
                        }
                    }
                    Err(error) if matches!(error.status(), Some(400 | 403)) => {
                        tracing::error!(%error, "the daemon refuses the invoice; giving up on it");
                        let message = error.to_string();
                        self.state.update(|state| {
                            if let Some(a) = state.agreements.get_mut(agreement_id) {
                                a.invoice_error = Some(message);
                            }
                        });
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot issue the invoice; retrying");
                        return;
                    }
                }
            }
        };
        if invoice.sent {
            return;
        }
        match self.client.send_invoice(&invoice.invoice_id).await {
            Ok(()) => {
                tracing::info!(invoice_id = %invoice.invoice_id, amount = %invoice.amount,
                    activities = record.activities.len(), "invoice sent");
                self.state.update(|state| {
                    if let Some(a) = state.agreements.get_mut(agreement_id) {
                        if let Some(invoice) = a.invoice.as_mut() {
                            invoice.sent = true;
                        }
                    }
                });
            }
            Err(error) => {
                tracing::warn!(invoice_id = %invoice.invoice_id, %error, "cannot send the invoice; retrying")
            }
        }
    }

    async fn find_invoice(&self, agreement_id: &str) -> Option<crate::state::InvoiceRecord> {
        let invoices = self.client.invoices().await.ok()?;
        let invoice = invoices
            .into_iter()
            .find(|invoice| invoice.agreement_id == agreement_id)?;
        let record = crate::state::InvoiceRecord {
            invoice_id: invoice.invoice_id,
            amount: invoice.amount,
            sent: invoice.status != DocumentStatus::Issued,
        };
        self.state.update(|state| {
            if let Some(a) = state.agreements.get_mut(agreement_id) {
                a.invoice = Some(record.clone());
            }
        });
        Some(record)
    }
}
