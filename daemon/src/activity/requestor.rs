//! The requestor side of activities: which activities this node created, on
//! which provider, and the calls that drive them on the provider's daemon
//! (`/net/<provider>/public/activity`). Long waits are split into rounds that
//! each stay below the net call timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_bus::{ReplyStream, Router};
use golem_model::activity::{
    ActivityState, ActivityUsage, ExeScriptCommand, ExeScriptCommandResult, ExeScriptCommandState,
    State,
};
use golem_model::activity_control::{
    CreateActivityRemote, DestroyActivityRemote, ExecRemote, GetBatchResultsRemote,
    GetRunningCommandRemote, GetStateRemote, GetUsageRemote, StreamBatchEventsRemote,
    ACTIVITY_PUBLIC_SERVICE,
};
use golem_model::bus::BusMessage;
use golem_model::market::AgreementState;
use golem_model::{ErrorCode, GolemError, NodeId};
use serde::{Deserialize, Serialize};

use super::provider::MAX_REMOTE_WAIT;
use super::Agreements;
use crate::store::{self, StoreError};

const ACTIVITY_PREFIX: &str = "requestor/";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestorActivity {
    pub activity_id: String,
    pub agreement_id: String,
    pub provider_id: NodeId,
    pub created: DateTime<Utc>,
}

#[derive(Clone)]
pub struct RequestorSide {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    router: Router,
    agreements: Arc<dyn Agreements>,
    tree: sled::Tree,
    activities: Mutex<HashMap<String, RequestorActivity>>,
}

impl RequestorSide {
    pub fn open(
        node_id: NodeId,
        router: Router,
        agreements: Arc<dyn Agreements>,
        tree: sled::Tree,
    ) -> Result<Self, StoreError> {
        let mut activities = HashMap::new();
        for entry in tree.scan_prefix(ACTIVITY_PREFIX) {
            let (_, value) = entry?;
            let activity: RequestorActivity = store::decode("activity", &value)?;
            activities.insert(activity.activity_id.clone(), activity);
        }
        Ok(RequestorSide {
            inner: Arc::new(Inner {
                node_id,
                router,
                agreements,
                tree,
                activities: Mutex::new(activities),
            }),
        })
    }

    pub fn find(&self, activity_id: &str) -> Option<RequestorActivity> {
        self.inner.activities.lock().ok()?.get(activity_id).cloned()
    }

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
        self.inner.router.call(&address, message).await
    }

    /// Create an activity on the provider of `agreement_id`; returns once the
    /// provider's exe unit reports Initialized, or fails after `timeout`.
    pub async fn create(
        &self,
        agreement_id: &str,
        timeout: Duration,
    ) -> Result<String, GolemError> {
        let agreement = self.inner.agreements.agreement(agreement_id)?;
        if agreement.demand.requestor_id != self.inner.node_id {
            return Err(GolemError::forbidden(format!(
                "agreement {agreement_id} was not made by this node as requestor"
            )));
        }
        if agreement.state != AgreementState::Approved {
            return Err(GolemError::conflict(format!(
                "agreement {agreement_id} is {:?}; create activities on Approved agreements",
                agreement.state
            )));
        }
        let provider_id = agreement.offer.provider_id;
        let deadline = tokio::time::Instant::now() + timeout;
        let message = CreateActivityRemote {
            agreement_id: agreement_id.to_string(),
            timeout_sec: timeout.as_secs_f64(),
        };
        let activity_id = self.call(provider_id, &message).await?;
        // The provider chose it, and it becomes a sled key here.
        golem_model::ids::check_id("activity id from the provider", &activity_id)?;
        let activity = RequestorActivity {
            activity_id: activity_id.clone(),
            agreement_id: agreement_id.to_string(),
            provider_id,
            created: Utc::now(),
        };
        store::encode(&activity)
            .and_then(|bytes| {
                Ok(self
                    .inner
                    .tree
                    .insert(format!("{ACTIVITY_PREFIX}{activity_id}"), bytes)?)
            })
            .map_err(GolemError::from)?;
        if let Ok(mut activities) = self.inner.activities.lock() {
            activities.insert(activity_id.clone(), activity);
        }
        // The provider answers within its own bound; keep waiting for Initialized up to our deadline.
        loop {
            let state = self.state(&activity_id).await?;
            match state.state.0 {
                State::New => {}
                State::Terminated => {
                    return Err(GolemError::new(
                        ErrorCode::Gone,
                        format!(
                            "activity {activity_id} terminated at start: {}",
                            state.reason.unwrap_or_default()
                        ),
                    ))
                }
                _ => return Ok(activity_id),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GolemError::timeout(format!(
                    "the provider {provider_id} did not start an exe unit for activity {activity_id} within {:.0} s",
                    timeout.as_secs_f64()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
            stream: true,
        };
        Ok(self.inner.router.call_stream_raw(call))
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
