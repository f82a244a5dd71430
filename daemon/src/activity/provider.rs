//! The provider side of activities: the record of every activity this node
//! hosts, the provider events its agent long-polls, the `/public/activity`
//! endpoint requestors' daemons call, the `/local/activity` endpoint its exe
//! units report to, and the supervision that notices an exe unit that died.
//!
//! Batch results and runtime events are kept here (reported by the exe unit),
//! not only in the exe unit, so that a crashed exe unit still ends every
//! pending batch with an Error result and nobody waits forever.
//!
//! Memory holds the live work, not history: a Terminated activity keeps its
//! batches for [`FINISHED_ACTIVITY_RETENTION`], then leaves memory (its record
//! stays in sled, where state, owner and agreement are still read from), and
//! provider events older than [`PROVIDER_EVENT_RETENTION`] are dropped from
//! memory and sled. The agent reads events by date, so a cursor is a binary
//! search, not a scan of every event since the daemon started.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use golem_bus::{Caller, Router, ServiceEndpoint};
use golem_model::activity::{
    exe_unit_address, ActivityState, ActivityUsage, CommandResult, ExeScriptCommandResult,
    ExecBatch, GetRunningCommand, ReportBatchEvent, ReportBatchResult, ReportState, ReportUsage,
    RuntimeEvent, RuntimeEventKind, Shutdown, State,
};
use golem_model::activity_control::{
    CreateActivityRemote, DestroyActivityRemote, ExecRemote, GetBatchResultsRemote,
    GetRunningCommandRemote, GetStateRemote, GetUsageRemote, ProviderEvent,
    StreamBatchEventsRemote,
};
use golem_model::ids::check_id;
use golem_model::market::AgreementState;
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tokio::sync::watch;

use super::{ActivitySettings, Agreements};
use crate::api::query::bounded_seconds;
use crate::store::{self, StoreError};

const ACTIVITY_PREFIX: &str = "provider/";
const EVENT_PREFIX: &str = "provider-event/";
/// Longest a single remote wait may take, kept below the net call timeout.
pub const MAX_REMOTE_WAIT: Duration = Duration::from_secs(8);
/// How long a Terminated activity's batch results stay readable in memory.
pub const FINISHED_ACTIVITY_RETENTION: Duration = Duration::from_secs(600);
/// How long provider events stay (the agent reads them within seconds; a
/// restarted agent replays from its last event, and skips what has ended).
pub const PROVIDER_EVENT_RETENTION: Duration = Duration::from_secs(3600);
/// How often supervision also compacts (it ticks far more often).
const COMPACTION_PERIOD: Duration = Duration::from_secs(10);

/// The persisted part of an activity this node hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActivityRecord {
    activity_id: String,
    agreement_id: String,
    requestor_id: NodeId,
    state: ActivityState,
    created: DateTime<Utc>,
}

#[derive(Default)]
struct Batch {
    results: Vec<ExeScriptCommandResult>,
    events: Vec<RuntimeEvent>,
    finished: bool,
}

struct HostedActivity {
    record: ActivityRecord,
    usage: ActivityUsage,
    batches: HashMap<String, Batch>,
    /// When it became Terminated (memory only): the start of its retention.
    ended: Option<Instant>,
}

impl HostedActivity {
    fn new(record: ActivityRecord) -> HostedActivity {
        HostedActivity {
            record,
            usage: ActivityUsage::default(),
            batches: HashMap::new(),
            ended: None,
        }
    }
}

#[derive(Default)]
struct ProviderBook {
    activities: HashMap<String, HostedActivity>,
    /// Oldest first; each with the sequence number of its sled key.
    events: VecDeque<(u64, ProviderEvent)>,
    next_event_seq: u64,
    /// Activities created per agreement, for `max-per-agreement`; kept while
    /// the agreement may still create activities (not only while they are in memory).
    created_per_agreement: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct ProviderSide {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    router: Router,
    agreements: Arc<dyn Agreements>,
    settings: ActivitySettings,
    tree: sled::Tree,
    state: Mutex<ProviderBook>,
    /// Bumped on every change; long-polls wait on it.
    changes: watch::Sender<u64>,
    retention: Retention,
}

/// How long finished work stays in memory (tests shorten it).
#[derive(Clone, Copy, Debug)]
struct Retention {
    finished_activity: Duration,
    provider_events: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            finished_activity: FINISHED_ACTIVITY_RETENTION,
            provider_events: PROVIDER_EVENT_RETENTION,
        }
    }
}

/// The sequence number in a `provider-event/<seq>` key.
fn event_seq(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(EVENT_PREFIX.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

/// An activity whose batches left memory after its retention.
fn compacted(activity_id: &str, retention: Duration) -> GolemError {
    GolemError::new(
        golem_model::ErrorCode::Gone,
        format!(
            "activity {activity_id} has ended and its batches are no longer kept (after {} s)",
            retention.as_secs()
        ),
    )
}

fn terminated(reason: &str) -> ActivityState {
    ActivityState {
        state: State::Terminated.into(),
        reason: Some(reason.to_string()),
        error_message: None,
    }
}

impl ProviderSide {
    /// Load hosted activities; those that were alive when the daemon stopped lost
    /// their exe unit (it exits with the bus connection) and are marked Terminated.
    pub fn open(
        node_id: NodeId,
        router: Router,
        agreements: Arc<dyn Agreements>,
        tree: sled::Tree,
        settings: ActivitySettings,
    ) -> Result<ProviderSide, StoreError> {
        Self::open_with(
            node_id,
            router,
            agreements,
            tree,
            settings,
            Retention::default(),
        )
    }

    fn open_with(
        node_id: NodeId,
        router: Router,
        agreements: Arc<dyn Agreements>,
        tree: sled::Tree,
        settings: ActivitySettings,
        retention: Retention,
    ) -> Result<ProviderSide, StoreError> {
        let mut state = ProviderBook::default();
        for entry in tree.scan_prefix(EVENT_PREFIX) {
            let (key, value) = entry?;
            let seq = event_seq(&key).unwrap_or(state.next_event_seq);
            state
                .events
                .push_back((seq, store::decode("activity", &value)?));
            state.next_event_seq = seq + 1;
        }
        // Only activities that were alive need memory: they lost their exe unit
        // (it exits with the bus connection) and are Terminated now, kept for
        // the retention like any other; older ones are read from sled.
        for entry in tree.scan_prefix(ACTIVITY_PREFIX) {
            let (_, value) = entry?;
            let mut record: ActivityRecord = store::decode("activity", &value)?;
            *state
                .created_per_agreement
                .entry(record.agreement_id.clone())
                .or_default() += 1;
            if record.state.state.alive() {
                record.state = terminated("the provider's daemon restarted");
                tree.insert(
                    format!("{ACTIVITY_PREFIX}{}", record.activity_id),
                    store::encode(&record)?,
                )?;
                let mut hosted = HostedActivity::new(record);
                hosted.ended = Some(Instant::now());
                state
                    .activities
                    .insert(hosted.record.activity_id.clone(), hosted);
            }
        }
        let (changes, _) = watch::channel(0);
        Ok(ProviderSide {
            inner: Arc::new(Inner {
                node_id,
                router,
                agreements,
                settings,
                tree,
                state: Mutex::new(state),
                changes,
                retention,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ProviderBook> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|version| *version += 1);
    }

    fn persist(&self, record: &ActivityRecord) {
        let result = store::encode(record).and_then(|bytes| {
            self.inner
                .tree
                .insert(format!("{ACTIVITY_PREFIX}{}", record.activity_id), bytes)?;
            Ok(())
        });
        if let Err(error) = result {
            tracing::error!(activity_id = %record.activity_id, %error, "cannot persist the activity");
        }
    }

    fn push_event(&self, state: &mut ProviderBook, event: ProviderEvent) {
        let seq = state.next_event_seq;
        state.next_event_seq += 1;
        let key = format!("{EVENT_PREFIX}{seq:020}");
        match store::encode(&event) {
            Ok(bytes) => {
                if let Err(error) = self.inner.tree.insert(key, bytes) {
                    tracing::error!(%error, "cannot persist a provider event");
                }
            }
            Err(error) => tracing::error!(%error, "cannot encode a provider event"),
        }
        state.events.push_back((seq, event));
    }

    /// The record of an activity this node hosts or hosted: from memory, else
    /// from sled (compacted after its retention).
    fn record(&self, state: &ProviderBook, activity_id: &str) -> Option<ActivityRecord> {
        if let Some(hosted) = state.activities.get(activity_id) {
            return Some(hosted.record.clone());
        }
        let bytes = self
            .inner
            .tree
            .get(format!("{ACTIVITY_PREFIX}{activity_id}"))
            .ok()??;
        store::decode("activity", &bytes).ok()
    }

    /// Drop from memory what the retention no longer keeps: Terminated
    /// activities past [`FINISHED_ACTIVITY_RETENTION`] (their record stays in
    /// sled) and provider events past [`PROVIDER_EVENT_RETENTION`] (also from sled).
    fn compact(&self) {
        let retention = self.inner.retention;
        let counted: Vec<String> = self.lock().created_per_agreement.keys().cloned().collect();
        // Agreements that can no longer create activities need no count
        // (asked outside the lock: the market has its own).
        let closed: Vec<String> = counted
            .into_iter()
            .filter(|id| {
                self.inner
                    .agreements
                    .agreement(id)
                    .map_or(true, |agreement| {
                        !matches!(
                            agreement.state,
                            AgreementState::Approved | AgreementState::Pending
                        )
                    })
            })
            .collect();
        let mut state = self.lock();
        for id in closed {
            state.created_per_agreement.remove(&id);
        }
        state.activities.retain(|_, hosted| {
            hosted
                .ended
                .is_none_or(|ended| ended.elapsed() < retention.finished_activity)
        });
        let Ok(retention) = chrono::Duration::from_std(retention.provider_events) else {
            return;
        };
        let oldest_kept = Utc::now() - retention;
        let mut batch = sled::Batch::default();
        let mut dropped = 0usize;
        while let Some((seq, event)) = state.events.front() {
            if event.event_date() >= oldest_kept {
                break;
            }
            batch.remove(format!("{EVENT_PREFIX}{seq:020}").as_bytes());
            state.events.pop_front();
            dropped += 1;
        }
        drop(state);
        if dropped > 0 {
            if let Err(error) = self.inner.tree.apply_batch(batch) {
                tracing::warn!(%error, "cannot drop old provider events from the store");
            }
            tracing::debug!(dropped, "old provider events dropped");
        }
    }

    /// Wait until `check` returns Some, a change happens that makes it so, or the deadline.
    async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&ProviderBook) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.inner.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check(&self.lock()) {
                return Some(value);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return check(&self.lock());
            }
        }
    }

    /// The hosted activity `activity_id` if `caller` may control it.
    fn check_owner(
        &self,
        state: &ProviderBook,
        caller: Caller,
        activity_id: &str,
    ) -> Result<(), GolemError> {
        check_id("activity id", activity_id)?;
        let Some(record) = self.record(state, activity_id) else {
            return Err(GolemError::not_found(format!(
                "no activity {activity_id} on this provider"
            )));
        };
        match caller {
            Caller::Remote(node) if node != record.requestor_id => Err(GolemError::forbidden(
                format!("activity {activity_id} belongs to another requestor"),
            )),
            _ => Ok(()),
        }
    }

    async fn create(
        &self,
        caller: Caller,
        message: CreateActivityRemote,
    ) -> Result<String, GolemError> {
        let Caller::Remote(requestor) = caller else {
            return Err(GolemError::forbidden(
                "activities are created by the requestor's daemon",
            ));
        };
        check_id("agreement id", &message.agreement_id)?;
        let mut agreement = self.inner.agreements.agreement(&message.agreement_id)?;
        // The market tells the requestor "Approved" before it commits its own
        // record, so a fast requestor can get here while ours is still Pending.
        let settle_deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while agreement.state == AgreementState::Pending
            && tokio::time::Instant::now() < settle_deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
            agreement = self.inner.agreements.agreement(&message.agreement_id)?;
        }
        if agreement.demand.requestor_id != requestor {
            return Err(GolemError::forbidden(format!(
                "agreement {} belongs to another requestor",
                message.agreement_id
            )));
        }
        if agreement.offer.provider_id != self.inner.node_id {
            return Err(GolemError::not_found(format!(
                "agreement {} is not with this provider",
                message.agreement_id
            )));
        }
        if agreement.state != AgreementState::Approved {
            return Err(GolemError::conflict(format!(
                "agreement {} is {:?}; activities need an Approved agreement",
                message.agreement_id, agreement.state
            )));
        }
        let activity_id = golem_model::ids::new_id();
        let record = ActivityRecord {
            activity_id: activity_id.clone(),
            agreement_id: message.agreement_id.clone(),
            requestor_id: requestor,
            state: State::New.into(),
            created: Utc::now(),
        };
        {
            let mut state = self.lock();
            let limit = self.inner.settings.max_per_agreement;
            let created = state
                .created_per_agreement
                .get(&message.agreement_id)
                .copied()
                .unwrap_or(0);
            if created >= limit {
                tracing::debug!(agreement_id = %message.agreement_id, %requestor, limit, "activity refused: the agreement has created its maximum");
                return Err(GolemError::conflict(format!(
                    "agreement {} has already created {created} activities, the limit of this provider \
                     (activity.max-per-agreement / GOLEM_ACTIVITY_MAX_PER_AGREEMENT = {limit})",
                    message.agreement_id
                )));
            }
            self.persist(&record);
            *state
                .created_per_agreement
                .entry(message.agreement_id.clone())
                .or_default() += 1;
            self.push_event(
                &mut state,
                ProviderEvent::CreateActivity {
                    event_date: Utc::now(),
                    activity_id: activity_id.clone(),
                    agreement_id: message.agreement_id.clone(),
                    requestor_pub_key: None,
                },
            );
            state
                .activities
                .insert(activity_id.clone(), HostedActivity::new(record));
        }
        self.changed();
        tracing::info!(%activity_id, agreement_id = %message.agreement_id, "activity created; waiting for the exe unit");
        let wait = bounded_seconds(message.timeout_sec, MAX_REMOTE_WAIT);
        // Answer once the exe unit is up; the requestor's daemon keeps waiting if it is not yet.
        self.wait_for(wait, |state| {
            let current = state.activities.get(&activity_id)?.record.state.state.0;
            (current != State::New).then_some(())
        })
        .await;
        Ok(activity_id)
    }

    async fn destroy(&self, caller: Caller, activity_id: &str) -> Result<(), GolemError> {
        {
            let state = self.lock();
            self.check_owner(&state, caller, activity_id)?;
        }
        let address = exe_unit_address(activity_id);
        if self.inner.router.is_bound(&address) {
            let shutdown = Shutdown {
                reason: Some("destroyed by the requestor".into()),
            };
            if let Err(error) = self.inner.router.call(&address, &shutdown).await {
                tracing::warn!(%activity_id, %error, "exe unit did not take the shutdown");
            }
        }
        self.finish(activity_id, "destroyed by the requestor", true);
        Ok(())
    }

    /// Mark an activity Terminated, end its unfinished batches with an Error,
    /// and (when `announce`) tell the provider agent to stop its exe unit.
    fn finish(&self, activity_id: &str, reason: &str, announce: bool) {
        let mut state = self.lock();
        let mut agreement_id = None;
        if let Some(hosted) = state.activities.get_mut(activity_id) {
            if hosted.record.state.state.0 != State::Terminated {
                hosted.record.state = terminated(reason);
                hosted.ended = Some(Instant::now());
                for (batch_id, batch) in hosted
                    .batches
                    .iter_mut()
                    .filter(|(_, batch)| !batch.finished)
                {
                    let index = batch.results.len() as u32;
                    batch.results.push(ExeScriptCommandResult {
                        index,
                        event_date: Utc::now(),
                        result: CommandResult::Error,
                        stdout: None,
                        stderr: None,
                        message: Some(format!("activity terminated: {reason}")),
                        is_batch_finished: true,
                    });
                    batch.events.push(RuntimeEvent::new(
                        batch_id.clone(),
                        index,
                        RuntimeEventKind::Finished {
                            return_code: -1,
                            message: Some(reason.to_string()),
                        },
                    ));
                    batch.finished = true;
                }
                let record = hosted.record.clone();
                agreement_id = Some(record.agreement_id.clone());
                self.persist(&record);
            }
        }
        if let (true, Some(agreement_id)) = (announce, agreement_id) {
            self.push_event(
                &mut state,
                ProviderEvent::DestroyActivity {
                    event_date: Utc::now(),
                    activity_id: activity_id.to_string(),
                    agreement_id,
                },
            );
        }
        drop(state);
        self.changed();
    }

    async fn exec(&self, caller: Caller, message: ExecRemote) -> Result<String, GolemError> {
        check_id("batch id", &message.batch_id)?;
        {
            let mut state = self.lock();
            self.check_owner(&state, caller, &message.activity_id)?;
            let hosted = state
                .activities
                .get_mut(&message.activity_id)
                .ok_or_else(|| {
                    compacted(&message.activity_id, self.inner.retention.finished_activity)
                })?;
            if hosted.record.state.state.0 == State::Terminated {
                return Err(GolemError::new(
                    golem_model::ErrorCode::Gone,
                    format!(
                        "activity {} is terminated: {}",
                        message.activity_id,
                        hosted.record.state.reason.clone().unwrap_or_default()
                    ),
                ));
            }
            if hosted.batches.contains_key(&message.batch_id) {
                return Err(GolemError::conflict(format!(
                    "batch {} already exists",
                    message.batch_id
                )));
            }
            hosted
                .batches
                .insert(message.batch_id.clone(), Batch::default());
        }
        let address = exe_unit_address(&message.activity_id);
        let batch = ExecBatch {
            batch_id: message.batch_id.clone(),
            commands: message.commands,
        };
        if let Err(error) = self.inner.router.call(&address, &batch).await {
            if let Some(hosted) = self.lock().activities.get_mut(&message.activity_id) {
                hosted.batches.remove(&message.batch_id);
            }
            return Err(GolemError::new(
                error.code,
                format!("the exe unit refused the batch: {}", error.message),
            ));
        }
        Ok(message.batch_id)
    }

    async fn batch_results(
        &self,
        caller: Caller,
        message: GetBatchResultsRemote,
    ) -> Result<Vec<ExeScriptCommandResult>, GolemError> {
        {
            let state = self.lock();
            self.check_owner(&state, caller, &message.activity_id)?;
            let hosted = state.activities.get(&message.activity_id).ok_or_else(|| {
                compacted(&message.activity_id, self.inner.retention.finished_activity)
            })?;
            if !hosted.batches.contains_key(&message.batch_id) {
                return Err(GolemError::not_found(format!(
                    "no batch {} in activity {}",
                    message.batch_id, message.activity_id
                )));
            }
        }
        check_id("batch id", &message.batch_id)?;
        let wait = bounded_seconds(message.timeout_sec.unwrap_or(0.0), MAX_REMOTE_WAIT);
        let select = |state: &ProviderBook| -> Option<(bool, Vec<ExeScriptCommandResult>)> {
            let batch = state
                .activities
                .get(&message.activity_id)?
                .batches
                .get(&message.batch_id)?;
            let results: Vec<_> = match message.command_index {
                Some(index) => batch
                    .results
                    .iter()
                    .filter(|result| result.index <= index)
                    .cloned()
                    .collect(),
                None => batch.results.clone(),
            };
            let complete = match message.command_index {
                Some(index) => batch.finished || results.iter().any(|result| result.index >= index),
                None => batch.finished,
            };
            Some((complete, results))
        };
        let results = self
            .wait_for(wait, |state| {
                select(state).filter(|(complete, _)| *complete)
            })
            .await
            .or_else(|| select(&self.lock()))
            .map(|(_, results)| results)
            .unwrap_or_default();
        Ok(results)
    }

    fn batch_events(
        &self,
        caller: Caller,
        message: StreamBatchEventsRemote,
    ) -> futures::stream::BoxStream<'static, Result<RuntimeEvent, GolemError>> {
        {
            let state = self.lock();
            if let Err(error) = self.check_owner(&state, caller, &message.activity_id) {
                return stream::once(async move { Err(error) }).boxed();
            }
            let known = match state.activities.get(&message.activity_id) {
                None => Err(compacted(
                    &message.activity_id,
                    self.inner.retention.finished_activity,
                )),
                Some(hosted) if !hosted.batches.contains_key(&message.batch_id) => Err(
                    GolemError::not_found(format!("no batch {}", message.batch_id)),
                ),
                Some(_) => Ok(()),
            };
            if let Err(error) = known {
                return stream::once(async move { Err(error) }).boxed();
            }
        }
        let provider = self.clone();
        let changes = self.inner.changes.subscribe();
        // State: (next event index, finished flag seen).
        stream::unfold(
            (provider, changes, 0usize, false),
            move |(provider, mut changes, next, done)| {
                let message = message.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        let (pending, finished) = {
                            let state = provider.lock();
                            let batch = state
                                .activities
                                .get(&message.activity_id)?
                                .batches
                                .get(&message.batch_id)?;
                            (
                                batch
                                    .events
                                    .get(next..)
                                    .map(<[RuntimeEvent]>::to_vec)
                                    .unwrap_or_default(),
                                batch.finished,
                            )
                        };
                        if !pending.is_empty() {
                            let count = pending.len();
                            let all_sent = finished;
                            return Some((
                                stream::iter(pending.into_iter().map(Ok)),
                                (provider, changes, next + count, all_sent),
                            ));
                        }
                        if finished {
                            return None;
                        }
                        if changes.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            },
        )
        .flatten()
        .boxed()
    }

    pub fn activity_state(
        &self,
        caller: Caller,
        activity_id: &str,
    ) -> Result<ActivityState, GolemError> {
        let state = self.lock();
        self.check_owner(&state, caller, activity_id)?;
        self.record(&state, activity_id)
            .map(|record| record.state)
            .ok_or_else(|| GolemError::not_found(format!("no activity {activity_id}")))
    }

    pub fn activity_usage(
        &self,
        caller: Caller,
        activity_id: &str,
    ) -> Result<ActivityUsage, GolemError> {
        let state = self.lock();
        self.check_owner(&state, caller, activity_id)?;
        let hosted = state
            .activities
            .get(activity_id)
            .ok_or_else(|| compacted(activity_id, self.inner.retention.finished_activity))?;
        Ok(ActivityUsage {
            current_usage: hosted.usage.current_usage.clone(),
            timestamp: hosted.usage.timestamp.max(0),
        })
    }

    pub fn hosts(&self, activity_id: &str) -> bool {
        let state = self.lock();
        self.record(&state, activity_id).is_some()
    }

    /// The agreement of an activity this node hosts (payment: debit notes
    /// issued with only an activityId).
    pub fn agreement_of(&self, activity_id: &str) -> Option<String> {
        let state = self.lock();
        self.record(&state, activity_id)
            .map(|record| record.agreement_id)
    }

    /// Provider events after `after` (oldest first), waiting up to `timeout` for one.
    pub async fn events(
        &self,
        after: Option<DateTime<Utc>>,
        timeout: Duration,
        max_events: usize,
    ) -> Vec<ProviderEvent> {
        let select = |state: &ProviderBook| -> Option<Vec<ProviderEvent>> {
            // Events are pushed in date order under the lock: the cursor is a
            // binary search (a clock stepping back can only repeat an event
            // the agent already handled, which it skips).
            let start = after.map_or(0, |after| {
                state
                    .events
                    .partition_point(|(_, event)| event.event_date() <= after)
            });
            let events: Vec<_> = state
                .events
                .range(start..)
                .take(max_events)
                .map(|(_, event)| event.clone())
                .collect();
            (!events.is_empty()).then_some(events)
        };
        self.wait_for(timeout, select).await.unwrap_or_default()
    }

    /// `/public/activity`: what requestors' daemons may call.
    pub fn public_endpoint(&self) -> ServiceEndpoint {
        let (create, destroy, exec, results, events, state, usage, running) = (
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
        );
        ServiceEndpoint::new()
            .on(move |caller, message: CreateActivityRemote| {
                let provider = create.clone();
                async move { provider.create(caller, message).await }
            })
            .on(move |caller, message: DestroyActivityRemote| {
                let provider = destroy.clone();
                async move { provider.destroy(caller, &message.activity_id).await }
            })
            .on(move |caller, message: ExecRemote| {
                let provider = exec.clone();
                async move { provider.exec(caller, message).await }
            })
            .on(move |caller, message: GetBatchResultsRemote| {
                let provider = results.clone();
                async move { provider.batch_results(caller, message).await }
            })
            .on_stream(move |caller, message: StreamBatchEventsRemote| {
                events.batch_events(caller, message)
            })
            .on(move |caller, message: GetStateRemote| {
                let result = state.activity_state(caller, &message.activity_id);
                async move { result }
            })
            .on(move |caller, message: GetUsageRemote| {
                let result = usage.activity_usage(caller, &message.activity_id);
                async move { result }
            })
            .on(move |caller, message: GetRunningCommandRemote| {
                let provider = running.clone();
                async move {
                    provider.check_owner(&provider.lock(), caller, &message.activity_id)?;
                    let address = exe_unit_address(&message.activity_id);
                    if !provider.inner.router.is_bound(&address) {
                        return Ok(None);
                    }
                    provider
                        .inner
                        .router
                        .call(&address, &GetRunningCommand)
                        .await
                }
            })
    }

    /// `/local/activity`: reports of this node's exe units.
    pub fn local_endpoint(&self) -> ServiceEndpoint {
        let (on_state, on_usage, on_event, on_result) =
            (self.clone(), self.clone(), self.clone(), self.clone());
        ServiceEndpoint::new()
            .on(move |_caller, report: ReportState| {
                let result = on_state.report_state(report);
                async move { result }
            })
            .on(move |_caller, report: ReportUsage| {
                let result = on_usage.with_activity(&report.activity_id, |hosted| {
                    hosted.usage = report.usage.clone()
                });
                async move { result }
            })
            .on(move |_caller, report: ReportBatchEvent| {
                let result = on_event.with_activity(&report.activity_id, |hosted| {
                    hosted
                        .batches
                        .entry(report.event.batch_id.clone())
                        .or_default()
                        .events
                        .push(report.event.clone());
                });
                async move { result }
            })
            .on(move |_caller, report: ReportBatchResult| {
                let result = on_result.with_activity(&report.activity_id, |hosted| {
                    let batch = hosted.batches.entry(report.batch_id.clone()).or_default();
                    batch.finished |= report.result.is_batch_finished;
                    batch.results.push(report.result.clone());
                });
                async move { result }
            })
    }

    fn with_activity(
        &self,
        activity_id: &str,
        change: impl FnOnce(&mut HostedActivity),
    ) -> Result<(), GolemError> {
        {
            let mut state = self.lock();
            let hosted = state.activities.get_mut(activity_id).ok_or_else(|| {
                GolemError::not_found(format!("no activity {activity_id} on this node"))
            })?;
            change(hosted);
        }
        self.changed();
        Ok(())
    }

    /// `PUT /activity/{id}/state` on the provider's node (the provider agent's view wins).
    pub fn set_state(&self, activity_id: &str, state: ActivityState) -> Result<(), GolemError> {
        self.report_state(ReportState {
            activity_id: activity_id.to_string(),
            state,
        })
    }

    /// `PUT /activity/{id}/usage` on the provider's node.
    pub fn set_usage(&self, activity_id: &str, usage: ActivityUsage) -> Result<(), GolemError> {
        self.with_activity(activity_id, |hosted| hosted.usage = usage)
    }

    fn report_state(&self, report: ReportState) -> Result<(), GolemError> {
        if report.state.state.0 == State::Terminated {
            let reason = report
                .state
                .reason
                .clone()
                .unwrap_or_else(|| "the exe unit terminated".into());
            self.finish(&report.activity_id, &reason, false);
            return Ok(());
        }
        let mut record = None;
        self.with_activity(&report.activity_id, |hosted| {
            if hosted.record.state.state.0 != State::Terminated {
                hosted.record.state = report.state.clone();
                record = Some(hosted.record.clone());
            }
        })?;
        if let Some(record) = record {
            tracing::debug!(activity_id = %record.activity_id, state = ?record.state.state, "exe unit reported its state");
            self.persist(&record);
        }
        Ok(())
    }

    /// Every `period`: activities whose exe unit was up and is no longer bound
    /// on the bus died without saying so; end them with a reason.
    pub async fn supervise(self, period: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let mut ticker = tokio::time::interval(period);
        let mut last_compaction = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if last_compaction.elapsed() >= COMPACTION_PERIOD {
                last_compaction = Instant::now();
                self.compact();
            }
            let lost: Vec<String> = {
                let state = self.lock();
                state
                    .activities
                    .values()
                    .filter(|hosted| {
                        !matches!(hosted.record.state.state.0, State::New | State::Terminated)
                    })
                    .filter(|hosted| {
                        !self
                            .inner
                            .router
                            .is_bound(&exe_unit_address(&hosted.record.activity_id))
                    })
                    .map(|hosted| hosted.record.activity_id.clone())
                    .collect()
            };
            for activity_id in lost {
                tracing::warn!(%activity_id, "exe unit exited unexpectedly; terminating the activity");
                self.finish(&activity_id, "the exe unit exited unexpectedly", true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use golem_model::market::Agreement;
    use serde_json::json;

    const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
    const PROVIDER: &str = "0x2222222222222222222222222222222222222222";

    struct OneAgreement(Agreement);

    impl Agreements for OneAgreement {
        fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
            (id == self.0.agreement_id)
                .then(|| self.0.clone())
                .ok_or_else(|| GolemError::not_found(id.to_string()))
        }
    }

    fn provider(dir: &std::path::Path) -> ProviderSide {
        let now = Utc::now();
        let agreement: Agreement = serde_json::from_value(json!({
            "agreementId": "a1",
            "demand": {"properties": {}, "constraints": "()", "demandId": "d",
                       "requestorId": REQUESTOR, "timestamp": now},
            "offer": {"properties": {}, "constraints": "()", "offerId": "o",
                      "providerId": PROVIDER, "timestamp": now},
            "validTo": now + chrono::Duration::hours(1),
            "state": "Approved",
            "timestamp": now,
        }))
        .unwrap();
        let store = crate::store::Store::open(dir).unwrap();
        ProviderSide::open_with(
            PROVIDER.parse().unwrap(),
            Router::new(),
            Arc::new(OneAgreement(agreement)),
            store.tree("activity").unwrap(),
            ActivitySettings::default(),
            Retention {
                finished_activity: Duration::from_millis(200),
                provider_events: PROVIDER_EVENT_RETENTION,
            },
        )
        .unwrap()
    }

    fn requestor() -> Caller {
        Caller::Remote(REQUESTOR.parse().unwrap())
    }

    #[tokio::test]
    async fn ended_activities_and_old_events_leave_memory_but_stay_answerable() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider(dir.path());
        let create = CreateActivityRemote {
            agreement_id: "a1".into(),
            timeout_sec: 0.0,
        };
        let activity_id = provider.create(requestor(), create).await.unwrap();
        provider.finish(&activity_id, "done", true);
        assert_eq!(provider.events(None, Duration::ZERO, 100).await.len(), 2);

        // Within the retention the batches are still in memory.
        provider.compact();
        assert!(provider.lock().activities.contains_key(&activity_id));

        tokio::time::sleep(Duration::from_millis(250)).await;
        provider.compact();
        assert!(provider.lock().activities.is_empty());
        // The record is read from sled: owner, state and agreement still answer.
        let state = provider.activity_state(requestor(), &activity_id).unwrap();
        assert_eq!(state.state.0, State::Terminated);
        assert_eq!(provider.agreement_of(&activity_id).as_deref(), Some("a1"));
        assert!(provider.hosts(&activity_id));
        let stranger = Caller::Remote(
            "0x3333333333333333333333333333333333333333"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            provider
                .activity_state(stranger, &activity_id)
                .unwrap_err()
                .code,
            golem_model::ErrorCode::Forbidden
        );
        // Its batches are gone, and say so.
        let exec = ExecRemote {
            activity_id: activity_id.clone(),
            batch_id: "b1".into(),
            commands: vec![],
        };
        assert_eq!(
            provider.exec(requestor(), exec).await.unwrap_err().code,
            golem_model::ErrorCode::Gone
        );

        // Events older than their retention go from memory and sled; the
        // cursor still finds the newer ones.
        {
            let mut state = provider.lock();
            for (_, event) in state.events.iter_mut() {
                if let ProviderEvent::CreateActivity { event_date, .. } = event {
                    *event_date = Utc::now() - chrono::Duration::hours(2);
                }
            }
        }
        provider.compact();
        let left = provider.events(None, Duration::ZERO, 100).await;
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(matches!(left[0], ProviderEvent::DestroyActivity { .. }));
        assert_eq!(provider.inner.tree.scan_prefix(EVENT_PREFIX).count(), 1);
        let after = left[0].event_date();
        assert!(provider
            .events(Some(after), Duration::ZERO, 100)
            .await
            .is_empty());
    }
}
