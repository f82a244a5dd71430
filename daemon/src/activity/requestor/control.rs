//! Driving an activity this node created on the provider's daemon: destroy,
//! exec, batch results (long-polled in rounds below the net call timeout),
//! batch events, state, usage and the running command. These read the record
//! from sled and call the provider; they hold no state, so they do not pass
//! through the actor.

use std::time::Duration;

use golem_bus::ReplyStream;
use golem_model::activity::{
    ActivityState, ActivityUsage, ExeScriptCommand, ExeScriptCommandResult, ExeScriptCommandState,
};
use golem_model::activity_control::{
    DestroyActivityRemote, ExecRemote, GetBatchResultsRemote, GetRunningCommandRemote,
    GetStateRemote, GetUsageRemote, StreamBatchEventsRemote, ACTIVITY_PUBLIC_SERVICE,
};
use golem_model::bus::BusMessage;
use golem_model::{GolemError, NodeId};

use super::RequestorSide;
use crate::activity::provider::MAX_REMOTE_WAIT;
use crate::activity::records::RequestorActivity;

impl RequestorSide {
    fn activity(&self, activity_id: &str) -> Result<RequestorActivity, GolemError> {
        self.find(activity_id)
            .ok_or_else(|| GolemError::not_found(format!("unknown activity {activity_id}")))
    }

    async fn call<M: BusMessage>(
        &self,
        provider: NodeId,
        message: &M,
    ) -> Result<M::Reply, GolemError> {
        let address = golem_bus::address::net_address(provider, ACTIVITY_PUBLIC_SERVICE);
        self.router.call(&address, message).await
    }

    pub async fn destroy(&self, activity_id: &str) -> Result<(), GolemError> {
        let activity = self.activity(activity_id)?;
        self.call(
            activity.provider_id,
            &DestroyActivityRemote {
                activity_id: activity_id.to_string(),
            },
        )
        .await
    }

    pub async fn exec(
        &self,
        activity_id: &str,
        commands: Vec<ExeScriptCommand>,
    ) -> Result<String, GolemError> {
        let activity = self.activity(activity_id)?;
        let message = ExecRemote {
            activity_id: activity_id.to_string(),
            batch_id: golem_model::ids::new_id(),
            commands,
        };
        self.call(activity.provider_id, &message).await
    }

    /// Results so far; waits up to `timeout` for the batch (or `command_index`) to finish.
    pub async fn batch_results(
        &self,
        activity_id: &str,
        batch_id: &str,
        command_index: Option<u32>,
        timeout: Option<Duration>,
    ) -> Result<Vec<ExeScriptCommandResult>, GolemError> {
        let activity = self.activity(activity_id)?;
        let deadline = tokio::time::Instant::now() + timeout.unwrap_or_default();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let round = remaining.min(MAX_REMOTE_WAIT);
            let message = GetBatchResultsRemote {
                activity_id: activity_id.to_string(),
                batch_id: batch_id.to_string(),
                command_index,
                timeout_sec: Some(round.as_secs_f64()),
            };
            let results = self.call(activity.provider_id, &message).await?;
            let finished = results.iter().any(|result| {
                result.is_batch_finished || command_index.is_some_and(|index| result.index >= index)
            });
            if finished || round >= remaining {
                return Ok(results);
            }
        }
    }

    pub fn batch_events(
        &self,
        activity_id: &str,
        batch_id: &str,
    ) -> Result<ReplyStream, GolemError> {
        let activity = self.activity(activity_id)?;
        let message = StreamBatchEventsRemote {
            activity_id: activity_id.to_string(),
            batch_id: batch_id.to_string(),
        };
        let payload = serde_json::to_value(&message)
            .map_err(|error| GolemError::internal(error.to_string()))?;
        let call = golem_bus::BusCall {
            caller: golem_bus::Caller::Local,
            address: golem_bus::address::net_address(activity.provider_id, ACTIVITY_PUBLIC_SERVICE),
            message: StreamBatchEventsRemote::NAME.to_string(),
            payload,
            attachment: Vec::new(),
            stream: true,
        };
        Ok(self.router.call_stream_raw(call))
    }

    pub async fn state(&self, activity_id: &str) -> Result<ActivityState, GolemError> {
        let activity = self.activity(activity_id)?;
        self.call(
            activity.provider_id,
            &GetStateRemote {
                activity_id: activity_id.to_string(),
            },
        )
        .await
    }

    pub async fn usage(&self, activity_id: &str) -> Result<ActivityUsage, GolemError> {
        let activity = self.activity(activity_id)?;
        self.call(
            activity.provider_id,
            &GetUsageRemote {
                activity_id: activity_id.to_string(),
            },
        )
        .await
    }

    pub async fn running_command(
        &self,
        activity_id: &str,
    ) -> Result<Option<ExeScriptCommandState>, GolemError> {
        let activity = self.activity(activity_id)?;
        self.call(
            activity.provider_id,
            &GetRunningCommandRemote {
                activity_id: activity_id.to_string(),
            },
        )
        .await
    }
}
