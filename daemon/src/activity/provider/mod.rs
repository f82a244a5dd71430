//! The provider side of activities: [`ProviderActivityActor`] owns the book of
//! every activity this node hosts (its record, usage and batches), the
//! provider events its agent long-polls, and the count of activities per
//! agreement. It serves `/public/activity` (requestors' daemons, see
//! [`public`]) and `/local/activity` (this node's exe units, see [`local`]),
//! and ends an activity the moment its exe unit's bus address is unbound
//! ([`supervision`]).
//!
//! Batch results and runtime events are kept here (reported by the exe unit),
//! not only in the exe unit, so that a crashed exe unit still ends every
//! pending batch with an Error result and nobody waits forever. Each batch
//! lives in a `watch` channel: the actor writes it, long-polls wait on a
//! receiver outside the actor.
//!
//! The actor never awaits a call while it holds its state: calls to an exe
//! unit run as futures whose outcome is applied when they return, and waits
//! (batch results, provider events, "exe unit started") happen in the caller.
//! It never runs user code and never trusts a remote caller for anything but
//! its own activities.

mod batches;
mod events;
mod handle;
mod local;
mod public;
mod supervision;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler};
use golem_bus::{Caller, Router};
use golem_model::activity::{exe_unit_address, ActivityState, ActivityUsage, State};
use golem_model::activity_control::ProviderEvent;
use golem_model::ids::check_id;
use golem_model::{GolemError, NodeId};
use tokio::sync::watch;

use batches::{ActivityBatches, BatchShelf};
pub use handle::ProviderSide;

use super::records::{
    put, ActivityRecords, FinishedOrder, HistorySweep, HostedRecord, Retention, EVENT_PREFIX,
    HOSTED_PREFIX, SWEEP_BATCH,
};
use super::{ActivitySettings, Agreements};
use crate::store;

/// Longest a single remote wait may take, kept below the net call timeout.
pub const MAX_REMOTE_WAIT: Duration = Duration::from_secs(8);

/// One activity this node hosts, in memory while it runs and for a while after.
pub(super) struct HostedActivity {
    record: HostedRecord,
    usage: ActivityUsage,
    batches: ActivityBatches,
    /// Set by a destroy in progress: the reason an unbind then reports.
    destroying: bool,
}

impl HostedActivity {
    /// An activity in memory; its batches come from `shelf` (those in flight
    /// when the actor was restarted, or none).
    fn new(record: HostedRecord, shelf: &BatchShelf) -> HostedActivity {
        HostedActivity {
            batches: shelf.of(&record.activity_id),
            record,
            usage: ActivityUsage::default(),
            destroying: false,
        }
    }
}

/// What the actor owns.
#[derive(Default)]
pub(super) struct ProviderBook {
    activities: HashMap<String, HostedActivity>,
    /// Oldest first; each with the sequence number of its sled key.
    events: VecDeque<(u64, ProviderEvent)>,
    next_event_seq: u64,
    /// Activities created per agreement, for `max-per-agreement`; kept while
    /// the agreement may still create activities (not only while they are in memory).
    created_per_agreement: HashMap<String, usize>,
    /// Terminated activities still in memory, in the order they ended.
    finished: FinishedOrder,
}

/// What survives a restart of the actor besides sled: the notifier long-polls
/// wait on, and how many times it started (the first start follows a daemon start).
#[derive(Clone)]
pub(super) struct Shared {
    pub node_id: NodeId,
    pub router: Router,
    pub agreements: Arc<dyn Agreements>,
    pub settings: ActivitySettings,
    pub tree: sled::Tree,
    pub records: ActivityRecords,
    /// Bumped on every change of state or provider events.
    pub changes: Arc<watch::Sender<u64>>,
    pub starts: Arc<AtomicU64>,
    pub retention: Retention,
    /// The batches of every activity in memory (they survive a restart).
    pub batches: BatchShelf,
}

/// The provider side of the activity service, as an actor.
pub struct ProviderActivityActor {
    shared: Shared,
    book: ProviderBook,
    /// Removes the sled records of hosted activities whose history ended.
    history: HistorySweep,
}

impl ProviderActivityActor {
    pub(super) fn new(shared: Shared) -> ProviderActivityActor {
        ProviderActivityActor {
            shared,
            book: ProviderBook::default(),
            history: HistorySweep::new(HOSTED_PREFIX),
        }
    }

    fn changed(&self) {
        self.shared.changes.send_modify(|version| *version += 1);
    }

    fn persist(&self, record: &HostedRecord) -> Result<(), GolemError> {
        put(
            &self.shared.tree,
            format!("{HOSTED_PREFIX}{}", record.activity_id),
            record,
        )
        .inspect_err(|error| {
            tracing::error!(activity_id = %record.activity_id, %error, "cannot persist the activity");
        })
    }

    /// The record of an activity this node hosts or hosted: from memory, else
    /// from sled (after it left memory).
    fn record(&self, activity_id: &str) -> Option<HostedRecord> {
        match self.book.activities.get(activity_id) {
            Some(hosted) => Some(hosted.record.clone()),
            None => self.shared.records.hosted(activity_id),
        }
    }

    /// The record of `activity_id` if `caller` may control it.
    fn check_owner(&self, caller: Caller, activity_id: &str) -> Result<HostedRecord, GolemError> {
        check_id("activity id", activity_id)?;
        let Some(record) = self.record(activity_id) else {
            return Err(GolemError::not_found(format!(
                "no activity {activity_id} on this provider"
            )));
        };
        match caller {
            Caller::Remote(node) if node != record.requestor_id => Err(GolemError::forbidden(
                format!("activity {activity_id} belongs to another requestor"),
            )),
            _ => Ok(record),
        }
    }

    /// The hosted activity in memory, or Gone when it left memory after its retention.
    fn in_memory(&mut self, activity_id: &str) -> Result<&mut HostedActivity, GolemError> {
        let retention = self.shared.retention.finished_activity;
        self.book
            .activities
            .get_mut(activity_id)
            .ok_or_else(|| compacted(activity_id, retention))
    }

    /// Load the book from sled. Activities that were alive keep running when
    /// their exe unit is still bound (the actor restarted, the daemon did not);
    /// the others lost it and are Terminated now.
    fn load(&mut self) -> Result<(), GolemError> {
        let first_start = self.shared.starts.fetch_add(1, Ordering::SeqCst) == 0;
        let reason = if first_start {
            "the provider's daemon restarted"
        } else {
            "the exe unit exited while the activity service restarted"
        };
        let tree = self.shared.tree.clone();
        for entry in tree.scan_prefix(EVENT_PREFIX) {
            let (key, value) = entry.map_err(store::StoreError::from)?;
            let seq = event_seq(&key).unwrap_or(self.book.next_event_seq);
            let event = store::decode("activity", &value)?;
            self.book.events.push_back((seq, event));
            self.book.next_event_seq = seq + 1;
        }
        let mut ended = Vec::new();
        for entry in tree.scan_prefix(HOSTED_PREFIX) {
            let (_, value) = entry.map_err(store::StoreError::from)?;
            let record: HostedRecord = store::decode("activity", &value)?;
            *self
                .book
                .created_per_agreement
                .entry(record.agreement_id.clone())
                .or_default() += 1;
            if !record.state.state.alive() {
                continue;
            }
            let exe_unit_bound = self
                .shared
                .router
                .is_bound(&exe_unit_address(&record.activity_id));
            let activity_id = record.activity_id.clone();
            self.book.activities.insert(
                activity_id.clone(),
                HostedActivity::new(record, &self.shared.batches),
            );
            if !exe_unit_bound {
                ended.push(activity_id);
            }
        }
        for activity_id in ended {
            self.finish(&activity_id, reason, false);
        }
        // Batches of activities a previous instance still held after they
        // ended (they are not loaded again) leave the shelf too.
        let activities = &self.book.activities;
        self.shared
            .batches
            .retain(|activity_id| activities.contains_key(activity_id));
        tracing::info!(
            in_memory = self.book.activities.len(),
            events = self.book.events.len(),
            first_start,
            "provider activities loaded"
        );
        Ok(())
    }

    /// Drop from memory what the retention no longer keeps: Terminated
    /// activities past their age or count (their record stays in sled) and
    /// provider events past their age (also from sled), and the counts of
    /// agreements that can no longer create activities; and from sled a
    /// slice of the records whose agreement the market pruned.
    fn compact(&mut self) {
        let closed: Vec<String> = self
            .book
            .created_per_agreement
            .keys()
            .filter(|id| {
                self.shared
                    .agreements
                    .agreement(id)
                    .map_or(true, |agreement| {
                        !matches!(
                            agreement.state,
                            golem_model::market::AgreementState::Approved
                                | golem_model::market::AgreementState::Pending
                        )
                    })
            })
            .cloned()
            .collect();
        for id in closed {
            self.book.created_per_agreement.remove(&id);
        }
        self.forget_finished();
        self.drop_old_events();
        self.history.sweep(
            &self.shared.tree,
            self.shared.agreements.as_ref(),
            SWEEP_BATCH,
        );
        tracing::debug!(
            activities = self.book.activities.len(),
            events = self.book.events.len(),
            created_per_agreement = self.book.created_per_agreement.len(),
            finished = self.book.finished.len(),
            batch_shelf = self.shared.batches.len(),
            "provider activity sizes"
        );
    }

    /// Forget the finished activities the retention no longer keeps in memory.
    fn forget_finished(&mut self) {
        for activity_id in self.book.finished.expired(&self.shared.retention) {
            self.book.activities.remove(&activity_id);
            self.shared.batches.forget(&activity_id);
        }
    }
}

impl Actor for ProviderActivityActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Subscribe before loading, so no unbind falls between the two.
        supervision::watch_exe_units(&self.shared.router, ctx);
        if let Err(error) = self.load() {
            tracing::error!(%error, "cannot load the hosted activities");
        }
        ctx.run_interval(self.shared.retention.compaction_period, |actor, _ctx| {
            actor.compact()
        });
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

/// Fault injection: the handler panics, so the supervisor restarts the actor.
#[doc(hidden)]
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct CrashForTest;

impl Handler<CrashForTest> for ProviderActivityActor {
    type Result = ();
    fn handle(&mut self, _: CrashForTest, _ctx: &mut Context<Self>) {
        panic!("provider activity actor crashed on request (test)");
    }
}

/// How many hosted activities are in memory (tests of the retention).
#[doc(hidden)]
#[derive(actix::Message)]
#[rtype(result = "usize")]
pub struct CountInMemory;

impl Handler<CountInMemory> for ProviderActivityActor {
    type Result = usize;
    fn handle(&mut self, _: CountInMemory, _ctx: &mut Context<Self>) -> usize {
        self.book.activities.len()
    }
}

#[cfg(test)]
mod tests;
