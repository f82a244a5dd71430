//! Batches: `ExecRemote` hands a batch to the exe unit (the call runs outside
//! the actor; a refusal removes the batch when it comes back), the exe unit
//! reports results and runtime events (see [`super::local`]), and requestors
//! read them with `GetBatchResultsRemote` (a long-poll) or
//! `StreamBatchEventsRemote` (a stream). Each batch is a `watch` channel the
//! actor writes; readers wait on a receiver, outside the actor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix::{ActorFutureExt, Context, Handler, ResponseActFuture, ResponseFuture, WrapFuture};
use futures::stream::{self, BoxStream, StreamExt};
use golem_bus::{Caller, Incoming};
use golem_model::activity::{
    exe_unit_address, ExeScriptCommandResult, ExecBatch, RuntimeEvent, State,
};
use golem_model::activity_control::{ExecRemote, GetBatchResultsRemote, StreamBatchEventsRemote};
use golem_model::ids::check_id;
use golem_model::GolemError;
use tokio::sync::watch;

use super::{ProviderActivityActor, MAX_REMOTE_WAIT};
use crate::api::query::bounded_seconds;

/// What the exe unit reported of one batch so far.
#[derive(Debug, Default, Clone)]
pub(in crate::activity) struct Batch {
    pub results: Vec<ExeScriptCommandResult>,
    pub events: Vec<RuntimeEvent>,
    pub finished: bool,
}

/// The batches of one hosted activity, each a `watch` channel the actor
/// writes. The channels live on the [`BatchShelf`] of the actor's `Shared`,
/// so an actor restarted after a panic finds the batches in flight with what
/// the exe unit reported before it (readers keep waiting on the same channel).
#[derive(Clone, Default)]
pub(in crate::activity) struct ActivityBatches(Arc<Mutex<HashMap<String, watch::Sender<Batch>>>>);

impl ActivityBatches {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<Batch>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn contains(&self, batch_id: &str) -> bool {
        self.lock().contains_key(batch_id)
    }

    /// A new, empty batch.
    pub(super) fn add(&self, batch_id: &str) {
        self.lock()
            .insert(batch_id.to_string(), watch::channel(Batch::default()).0);
    }

    pub(super) fn remove(&self, batch_id: &str) {
        self.lock().remove(batch_id);
    }

    pub(super) fn subscribe(&self, batch_id: &str) -> Option<watch::Receiver<Batch>> {
        self.lock().get(batch_id).map(watch::Sender::subscribe)
    }

    /// Change batch `batch_id`, made empty first when the exe unit reports one
    /// this daemon has not seen yet.
    pub(super) fn modify(&self, batch_id: &str, change: impl FnOnce(&mut Batch)) {
        self.lock()
            .entry(batch_id.to_string())
            .or_insert_with(|| watch::channel(Batch::default()).0)
            .send_modify(change);
    }

    /// Offer every batch to `change`; readers wake where it returns true.
    pub(super) fn modify_each(&self, mut change: impl FnMut(&str, &mut Batch) -> bool) {
        for (batch_id, batch) in self.lock().iter() {
            batch.send_if_modified(|batch| change(batch_id, batch));
        }
    }
}

/// Every hosted activity's [`ActivityBatches`], kept across restarts of the
/// actor and dropped when the activity leaves memory.
#[derive(Clone, Default)]
pub(in crate::activity) struct BatchShelf(Arc<Mutex<HashMap<String, ActivityBatches>>>);

impl BatchShelf {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, ActivityBatches>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The batches of `activity_id` (empty for a new activity).
    pub(super) fn of(&self, activity_id: &str) -> ActivityBatches {
        self.lock()
            .entry(activity_id.to_string())
            .or_default()
            .clone()
    }

    pub(super) fn forget(&self, activity_id: &str) {
        self.lock().remove(activity_id);
    }

    /// Keep only the batches of the activities `keep` names.
    pub(super) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|activity_id, _| keep(activity_id));
    }

    /// How many activities have batches on the shelf.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Batch {
    /// The results up to `command_index` (all without it), and whether the
    /// wait for them is over.
    fn select(&self, command_index: Option<u32>) -> (bool, Vec<ExeScriptCommandResult>) {
        match command_index {
            Some(index) => {
                let results: Vec<_> = self
                    .results
                    .iter()
                    .filter(|result| result.index <= index)
                    .cloned()
                    .collect();
                let complete = self.finished || results.iter().any(|result| result.index >= index);
                (complete, results)
            }
            None => (self.finished, self.results.clone()),
        }
    }
}

impl Handler<Incoming<ExecRemote>> for ProviderActivityActor {
    type Result = ResponseActFuture<Self, Result<String, GolemError>>;

    fn handle(&mut self, incoming: Incoming<ExecRemote>, _ctx: &mut Context<Self>) -> Self::Result {
        let message = incoming.message;
        if let Err(error) = self.add_batch(incoming.caller, &message) {
            return Box::pin(actix::fut::ready(Err(error)));
        }
        let router = self.shared.router.clone();
        let address = exe_unit_address(&message.activity_id);
        let batch = ExecBatch {
            batch_id: message.batch_id.clone(),
            commands: message.commands,
        };
        let (activity_id, batch_id) = (message.activity_id, message.batch_id);
        Box::pin(
            async move { router.call(&address, &batch).await }
                .into_actor(self)
                .map(move |outcome, actor, _ctx| match outcome {
                    Ok(_) => Ok(batch_id),
                    Err(error) => {
                        if let Some(hosted) = actor.book.activities.get_mut(&activity_id) {
                            hosted.batches.remove(&batch_id);
                        }
                        Err(GolemError::new(
                            error.code,
                            format!("the exe unit refused the batch: {}", error.message),
                        ))
                    }
                }),
        )
    }
}

impl ProviderActivityActor {
    /// The state part of an exec: a new, empty batch on a live activity.
    fn add_batch(&mut self, caller: Caller, message: &ExecRemote) -> Result<(), GolemError> {
        check_id("batch id", &message.batch_id)?;
        self.check_owner(caller, &message.activity_id)?;
        let hosted = self.in_memory(&message.activity_id)?;
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
        if hosted.batches.contains(&message.batch_id) {
            return Err(GolemError::conflict(format!(
                "batch {} already exists",
                message.batch_id
            )));
        }
        hosted.batches.add(&message.batch_id);
        Ok(())
    }

    /// A receiver of batch `batch_id` of an activity `caller` may control.
    fn watch_batch(
        &mut self,
        caller: Caller,
        activity_id: &str,
        batch_id: &str,
    ) -> Result<watch::Receiver<Batch>, GolemError> {
        self.check_owner(caller, activity_id)?;
        check_id("batch id", batch_id)?;
        let hosted = self.in_memory(activity_id)?;
        hosted.batches.subscribe(batch_id).ok_or_else(|| {
            GolemError::not_found(format!("no batch {batch_id} in activity {activity_id}"))
        })
    }
}

impl Handler<Incoming<GetBatchResultsRemote>> for ProviderActivityActor {
    type Result = ResponseFuture<Result<Vec<ExeScriptCommandResult>, GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<GetBatchResultsRemote>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let receiver =
            match self.watch_batch(incoming.caller, &message.activity_id, &message.batch_id) {
                Ok(receiver) => receiver,
                Err(error) => return Box::pin(async move { Err(error) }),
            };
        let wait = bounded_seconds(message.timeout_sec.unwrap_or(0.0), MAX_REMOTE_WAIT);
        // Waits in the caller's task: the actor goes on with other messages.
        Box::pin(async move { Ok(wait_for_results(receiver, message.command_index, wait).await) })
    }
}

/// The batch's results once complete (up to `command_index`), or what there is after `wait`.
async fn wait_for_results(
    mut receiver: watch::Receiver<Batch>,
    command_index: Option<u32>,
    wait: Duration,
) -> Vec<ExeScriptCommandResult> {
    let complete = tokio::time::timeout(wait, async {
        let batch = receiver
            .wait_for(|batch| batch.select(command_index).0)
            .await
            .ok()?;
        Some(batch.select(command_index).1)
    })
    .await;
    if let Ok(Some(results)) = complete {
        return results;
    }
    // Timed out, or the actor restarted (the batch is gone with it): what there is.
    let batch = receiver.borrow();
    batch.select(command_index).1
}

/// `StreamBatchEventsRemote` (a stream, not a request): a receiver of the batch.
pub(super) struct WatchBatch {
    pub caller: Caller,
    pub activity_id: String,
    pub batch_id: String,
}

impl actix::Message for WatchBatch {
    type Result = Result<watch::Receiver<Batch>, GolemError>;
}

impl Handler<WatchBatch> for ProviderActivityActor {
    type Result = Result<watch::Receiver<Batch>, GolemError>;

    fn handle(&mut self, message: WatchBatch, _ctx: &mut Context<Self>) -> Self::Result {
        self.watch_batch(message.caller, &message.activity_id, &message.batch_id)
    }
}

impl From<(Caller, StreamBatchEventsRemote)> for WatchBatch {
    fn from((caller, message): (Caller, StreamBatchEventsRemote)) -> Self {
        WatchBatch {
            caller,
            activity_id: message.activity_id,
            batch_id: message.batch_id,
        }
    }
}

/// The runtime events of a batch from the first, in order, ending after the
/// batch finished (or when the actor restarted and the batch went with it).
pub(super) fn event_stream(
    receiver: watch::Receiver<Batch>,
) -> BoxStream<'static, Result<RuntimeEvent, GolemError>> {
    // State: the receiver, the next event index, and whether all were sent.
    stream::unfold(
        (receiver, 0usize, false),
        |(mut receiver, next, done)| async move {
            if done {
                return None;
            }
            loop {
                let (pending, finished) = {
                    let batch = receiver.borrow_and_update();
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
                    return Some((
                        stream::iter(pending.into_iter().map(Ok)),
                        (receiver, next + count, finished),
                    ));
                }
                if finished || receiver.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
    .flatten()
    .boxed()
}
