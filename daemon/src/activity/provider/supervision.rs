//! Supervision of exe units: an exe unit binds `/local/exeunit/<activityId>`
//! over its bus connection, and the bus server unbinds it when that connection
//! ends (exit, crash, kill). The actor subscribes to the router's unbinds in
//! `started()`, so a vanished exe unit reaches it as a message at once and its
//! activity is finished with a reason; nothing polls.

use actix::{AsyncContext, Context, StreamHandler};
use chrono::Utc;
use futures::stream::{self, StreamExt};
use golem_bus::Router;
use golem_model::activity::{
    exe_unit_address, CommandResult, ExeScriptCommandResult, RuntimeEvent, RuntimeEventKind, State,
    EXE_UNIT_ADDRESS_PREFIX,
};
use golem_model::activity_control::ProviderEvent;
use tokio::sync::broadcast::error::RecvError;

use super::{terminated, ProviderActivityActor};

/// What the router says about exe units.
#[derive(Debug)]
pub(super) enum ExeUnitNews {
    /// The exe unit of this activity is no longer on the bus.
    Gone(String),
    /// Unbinds were missed (the actor fell far behind): look at every activity.
    Missed,
}

/// Subscribe `ctx` to the unbinds of exe-unit addresses.
pub(super) fn watch_exe_units(router: &Router, ctx: &mut Context<ProviderActivityActor>) {
    let unbinds = router.watch_unbinds();
    let news = stream::unfold(unbinds, |mut unbinds| async move {
        loop {
            match unbinds.recv().await {
                Ok(address) => {
                    if let Some(activity_id) = address.strip_prefix(EXE_UNIT_ADDRESS_PREFIX) {
                        return Some((ExeUnitNews::Gone(activity_id.to_string()), unbinds));
                    }
                }
                Err(RecvError::Lagged(_)) => return Some((ExeUnitNews::Missed, unbinds)),
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .boxed();
    ctx.add_stream(news);
}

/// The reason an activity ends with when its exe unit leaves the bus. The
/// provider agent, which saw the process exit, may replace it with a better
/// one (the exe unit's last error line).
pub(super) const EXE_UNIT_LOST: &str = "the exe unit exited unexpectedly";

impl StreamHandler<ExeUnitNews> for ProviderActivityActor {
    fn handle(&mut self, news: ExeUnitNews, _ctx: &mut Context<Self>) {
        let lost: Vec<String> = match news {
            ExeUnitNews::Gone(activity_id) => vec![activity_id],
            ExeUnitNews::Missed => self
                .book
                .activities
                .values()
                .filter(|hosted| hosted.record.state.state.alive())
                .filter(|hosted| {
                    !self
                        .shared
                        .router
                        .is_bound(&exe_unit_address(&hosted.record.activity_id))
                })
                .map(|hosted| hosted.record.activity_id.clone())
                .collect(),
        };
        for activity_id in lost {
            let Some(hosted) = self.book.activities.get(&activity_id) else {
                continue;
            };
            if hosted.record.state.state.0 == State::Terminated {
                continue;
            }
            if hosted.destroying {
                self.finish(&activity_id, "destroyed by the requestor", true);
                continue;
            }
            tracing::warn!(%activity_id, "exe unit exited unexpectedly; terminating the activity");
            self.finish(&activity_id, EXE_UNIT_LOST, true);
        }
    }

    /// The router lives as long as the actor: its end means shutdown.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl ProviderActivityActor {
    /// Mark an activity Terminated, end its unfinished batches with an Error,
    /// and (when `announce`) tell the provider agent to stop its exe unit.
    pub(super) fn finish(&mut self, activity_id: &str, reason: &str, announce: bool) {
        let Some(hosted) = self.book.activities.get_mut(activity_id) else {
            return;
        };
        if hosted.record.state.state.0 == State::Terminated {
            return;
        }
        hosted.record.state = terminated(reason);
        hosted.batches.modify_each(|batch_id, batch| {
            if batch.finished {
                return false;
            }
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
                batch_id.to_string(),
                index,
                RuntimeEventKind::Finished {
                    return_code: -1,
                    message: Some(reason.to_string()),
                },
            ));
            batch.finished = true;
            true
        });
        let record = hosted.record.clone();
        // Logged inside; the state in memory is right either way.
        let _ = self.persist(&record);
        if announce {
            self.push_event(ProviderEvent::DestroyActivity {
                event_date: Utc::now(),
                activity_id: activity_id.to_string(),
                agreement_id: record.agreement_id.clone(),
            });
        }
        self.book.finished.push(activity_id.to_string());
        self.forget_finished();
        tracing::info!(%activity_id, %reason, "activity terminated");
        self.changed();
    }
}
