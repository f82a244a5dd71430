//! Activity control between daemons: the messages a requestor's daemon sends
//! to the provider's daemon (`/public/activity`) to create, drive and destroy
//! activities, and the provider events (`GET /activity-api/v1/events`) through
//! which the provider agent learns it must start or stop an exe unit.
//!
//! The provider daemon always checks that the caller (authenticated by the net)
//! is the requestor of the activity's agreement.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::activity::{
    ActivityState, ActivityUsage, ExeScriptCommand, ExeScriptCommandResult, ExeScriptCommandState,
    RuntimeEvent,
};
use crate::bus::BusMessage;

/// Public endpoint of the activity service, called by requestors' daemons.
pub const ACTIVITY_PUBLIC_SERVICE: &str = "/public/activity";

/// Create an activity for an approved agreement. Replies with the activity id
/// once the provider's exe unit reports Initialized (or fails after `timeout_sec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateActivityRemote {
    pub agreement_id: String,
    pub timeout_sec: f64,
}
impl BusMessage for CreateActivityRemote {
    const NAME: &'static str = "CreateActivityRemote";
    type Reply = String;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyActivityRemote {
    pub activity_id: String,
}
impl BusMessage for DestroyActivityRemote {
    const NAME: &'static str = "DestroyActivityRemote";
    type Reply = ();
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRemote {
    pub activity_id: String,
    pub batch_id: String,
    pub commands: Vec<ExeScriptCommand>,
}
impl BusMessage for ExecRemote {
    const NAME: &'static str = "ExecRemote";
    type Reply = String;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetBatchResultsRemote {
    pub activity_id: String,
    pub batch_id: String,
    pub command_index: Option<u32>,
    pub timeout_sec: Option<f64>,
}
impl BusMessage for GetBatchResultsRemote {
    const NAME: &'static str = "GetBatchResultsRemote";
    type Reply = Vec<ExeScriptCommandResult>;
}

/// Stream call: the batch's runtime events from its start, then live ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBatchEventsRemote {
    pub activity_id: String,
    pub batch_id: String,
}
impl BusMessage for StreamBatchEventsRemote {
    const NAME: &'static str = "StreamBatchEventsRemote";
    type Reply = RuntimeEvent;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStateRemote {
    pub activity_id: String,
}
impl BusMessage for GetStateRemote {
    const NAME: &'static str = "GetStateRemote";
    type Reply = ActivityState;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetUsageRemote {
    pub activity_id: String,
}
impl BusMessage for GetUsageRemote {
    const NAME: &'static str = "GetUsageRemote";
    type Reply = ActivityUsage;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRunningCommandRemote {
    pub activity_id: String,
}
impl BusMessage for GetRunningCommandRemote {
    const NAME: &'static str = "GetRunningCommandRemote";
    type Reply = Option<ExeScriptCommandState>;
}

/// What the provider agent reads from `GET /activity-api/v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "eventType")]
pub enum ProviderEvent {
    #[serde(rename_all = "camelCase")]
    CreateActivity {
        event_date: DateTime<Utc>,
        activity_id: String,
        agreement_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requestor_pub_key: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    DestroyActivity {
        event_date: DateTime<Utc>,
        activity_id: String,
        agreement_id: String,
    },
}

impl ProviderEvent {
    pub fn event_date(&self) -> DateTime<Utc> {
        match self {
            ProviderEvent::CreateActivity { event_date, .. }
            | ProviderEvent::DestroyActivity { event_date, .. } => *event_date,
        }
    }
}

/// Reply of `POST /activity` when the request body was an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateActivityResult {
    pub activity_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<serde_json::Value>,
}

/// Prefix of the last stderr line of an exe unit that fails before or while
/// serving (the spawn contract): the provider agent reads it back from the exe
/// unit's log and makes the rest of the line the activity's termination reason.
pub const EXE_UNIT_FAILURE_PREFIX: &str = "exe-unit error: ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_events_have_the_original_shape() {
        let event = ProviderEvent::CreateActivity {
            event_date: "2026-11-23T18:24:29Z".parse().unwrap(),
            activity_id: "a1".into(),
            agreement_id: "g1".into(),
            requestor_pub_key: None,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"eventType": "CreateActivity", "eventDate": "2026-11-23T18:24:29Z",
                               "activityId": "a1", "agreementId": "g1"})
        );
        let back: ProviderEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
