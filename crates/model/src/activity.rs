//! Activity wire types: the ExeScript commands a requestor sends, the results and
//! runtime events it reads back (polled or as SSE), activity state and usage, and
//! the bus messages between the daemon's activity service and an exe unit.
//!
//! JSON shapes follow the Golem Activity API exactly: command variants are
//! camelCase (`deploy`, `run`, ...) with snake_case fields (`entry_point`),
//! [`ExeScriptCommandResult`] is camelCase, and the SSE [`RuntimeEvent`] is
//! snake_case (`batch_id`, `return_code`).
//!
//! Who talks to whom on the bus:
//! - the activity service calls the exe unit bound at [`exe_unit_address`]
//!   (`/local/exeunit/<activityId>`) with [`ExecBatch`], [`GetBatchResults`],
//!   [`StreamBatchEvents`], [`GetState`], [`GetUsage`], [`GetRunningCommand`] and
//!   [`Shutdown`];
//! - the exe unit calls [`ACTIVITY_SERVICE`] (`/local/activity`) with
//!   [`ReportState`], [`ReportUsage`], [`ReportBatchEvent`] and
//!   [`ReportBatchResult`]. It sends them one at a time, in order, so the
//!   service can append results and events to a batch as they arrive and serve
//!   both polling (cumulative results) and SSE (events) from what it keeps.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bus::BusMessage;

// ---------------------------------------------------------------------------
// ExeScript commands
// ---------------------------------------------------------------------------

/// One command of an ExeScript batch, e.g. `{"run": {"entry_point": "hello", "args": []}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExeScriptCommand {
    Deploy {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        net: Vec<DeployNetwork>,
        /// hostname -> IP
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        hosts: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        volumes: Option<DeployVolumes>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<ProgressArgs>,
    },
    Start {
        #[serde(default)]
        args: Vec<String>,
    },
    Run {
        entry_point: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capture: Option<Capture>,
    },
    Transfer {
        from: String,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        depth: Option<u32>,
        /// A glob, a list of globs or `{includes, excludes, desc}` objects; kept
        /// verbatim until an exe unit supports filesets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fileset: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<ProgressArgs>,
    },
    Sign {},
    Terminate {},
}

impl ExeScriptCommand {
    /// The command's name as the requestor writes it (`deploy`, `run`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ExeScriptCommand::Deploy { .. } => "deploy",
            ExeScriptCommand::Start { .. } => "start",
            ExeScriptCommand::Run { .. } => "run",
            ExeScriptCommand::Transfer { .. } => "transfer",
            ExeScriptCommand::Sign {} => "sign",
            ExeScriptCommand::Terminate {} => "terminate",
        }
    }

    /// The running-command view (`GET .../command`).
    pub fn to_state(&self) -> ExeScriptCommandState {
        let params = match self {
            ExeScriptCommand::Start { args } => Some(args.clone()),
            ExeScriptCommand::Run {
                entry_point, args, ..
            } => Some(
                std::iter::once(entry_point.clone())
                    .chain(args.iter().cloned())
                    .collect(),
            ),
            ExeScriptCommand::Transfer { from, to, .. } => Some(vec![from.clone(), to.clone()]),
            _ => None,
        };
        let mut name = self.name().to_string();
        if let Some(first) = name.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        ExeScriptCommandState {
            command: name,
            progress: None,
            params,
        }
    }
}

/// Parse the `text` of an exec request: a JSON list of commands.
pub fn parse_exe_script(text: &str) -> Result<Vec<ExeScriptCommand>, serde_json::Error> {
    serde_json::from_str(text)
}

/// A VPN the requestor attaches the activity to (`deploy.net`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployNetwork {
    pub id: String,
    pub ip: String,
    #[serde(default)]
    pub mask: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    pub node_ip: String,
    /// IP -> NodeId
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
}

/// `deploy.volumes`: either a list of container paths or a map from path to a
/// mount description (`{"host": {}}`, `{"ram": {"size": "1GiB"}}`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeployVolumes {
    Paths(Vec<String>),
    Detailed(BTreeMap<String, serde_json::Value>),
}

/// `{"updateInterval": "300ms", "updateStep": N}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_step: Option<u64>,
}

/// How `run` captures the command's output, per stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capture {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<CaptureMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<CaptureMode>,
}

/// `{"stream": {limit?, format?}}` or `{"atEnd": {"head"|"tail"|"headTail": N?, format?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CaptureMode {
    AtEnd {
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        part: Option<CapturePart>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<CaptureFormat>,
    },
    Stream {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<CaptureFormat>,
    },
}

/// Which bytes `atEnd` keeps: the first, the last, or the first and last N/2
/// bytes. `None` leaves the size to the exe unit's default limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CapturePart {
    Head(Option<usize>),
    Tail(Option<usize>),
    HeadTail(Option<usize>),
}

/// `str` (lossy UTF-8 text; `string` accepted) or `bin` (bytes; `binary` accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    #[default]
    #[serde(alias = "string")]
    Str,
    #[serde(alias = "binary")]
    Bin,
}

// ---------------------------------------------------------------------------
// Results and runtime events
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandResult {
    Ok,
    Error,
}

/// Captured output: a string for `str` capture, a byte array for `bin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandOutput {
    Str(String),
    Bin(Vec<u8>),
}

/// The outcome of one command of a batch, as `GET .../exec/{batchId}` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExeScriptCommandResult {
    pub index: u32,
    pub event_date: DateTime<Utc>,
    pub result: CommandResult,
    pub stdout: Option<CommandOutput>,
    pub stderr: Option<CommandOutput>,
    pub message: Option<String>,
    /// True on the last result of a batch: the last command, or the first that failed.
    pub is_batch_finished: bool,
}

/// One SSE `runtime` event of a batch (snake_case on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeEvent {
    pub batch_id: String,
    pub index: u32,
    pub timestamp: NaiveDateTime,
    pub kind: RuntimeEventKind,
}

impl RuntimeEvent {
    pub fn new(batch_id: impl Into<String>, index: u32, kind: RuntimeEventKind) -> Self {
        RuntimeEvent {
            batch_id: batch_id.into(),
            index,
            timestamp: Utc::now().naive_utc(),
            kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeEventKind {
    Started {
        command: ExeScriptCommand,
    },
    Finished {
        return_code: i32,
        message: Option<String>,
    },
    Stdout(CommandOutput),
    Stderr(CommandOutput),
    Progress(CommandProgress),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandProgress {
    /// `[current, total]` steps, counted from 0.
    pub step: (u32, u32),
    pub message: Option<String>,
    /// `[current, total?]` within the step.
    pub progress: (u64, Option<u64>),
    pub unit: Option<String>,
}

/// The running-command view: `{"command": "Run", "params": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExeScriptCommandState {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------
// State and usage
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum State {
    #[default]
    New,
    Initialized,
    Deployed,
    Ready,
    Unresponsive,
    Terminated,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// `[current, next]`: `next` is set while a transition is under way
/// (e.g. `["Initialized", "Deployed"]` during `deploy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct StatePair(pub State, pub Option<State>);

impl StatePair {
    pub fn alive(&self) -> bool {
        self.0 != State::Terminated && self.1 != Some(State::Terminated)
    }
}

impl From<State> for StatePair {
    fn from(state: State) -> Self {
        StatePair(state, None)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActivityState {
    pub state: StatePair,
    /// Why the activity was terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when an error caused the state change.
    #[serde(
        rename = "errorMessage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_message: Option<String>,
}

impl From<State> for ActivityState {
    fn from(state: State) -> Self {
        ActivityState {
            state: state.into(),
            reason: None,
            error_message: None,
        }
    }
}

/// Usage counters aligned with the agreement's `golem.com.usage.vector`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ActivityUsage {
    #[serde(
        rename = "currentUsage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_usage: Option<Vec<f64>>,
    /// Unix seconds.
    pub timestamp: i64,
}

// ---------------------------------------------------------------------------
// Bus messages
// ---------------------------------------------------------------------------

/// The activity service's endpoint; exe units send their reports here.
pub const ACTIVITY_SERVICE: &str = "/local/activity";

/// Prefix of the address an exe unit binds for its activity.
pub const EXE_UNIT_ADDRESS_PREFIX: &str = "/local/exeunit/";

/// `/local/exeunit/<activityId>`: where the exe unit of an activity listens.
pub fn exe_unit_address(activity_id: &str) -> String {
    format!("{EXE_UNIT_ADDRESS_PREFIX}{activity_id}")
}

/// To the exe unit: queue a batch. Replies with the batch id once accepted
/// (batches run one after another in arrival order); Conflict for a batch id
/// already used, Gone once the activity is terminated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecBatch {
    pub batch_id: String,
    pub commands: Vec<ExeScriptCommand>,
}
impl BusMessage for ExecBatch {
    const NAME: &'static str = "ExecBatch";
    type Reply = String;
}

/// To the exe unit: the results of a batch so far, cumulative from index 0.
/// With `command_index`, only results up to it; with `timeout_sec`, waits that
/// long for that result (or for the batch to finish) before answering with
/// what it has. NotFound for an unknown batch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GetBatchResults {
    pub batch_id: String,
    #[serde(default)]
    pub command_index: Option<u32>,
    #[serde(default)]
    pub timeout_sec: Option<f64>,
}
impl BusMessage for GetBatchResults {
    const NAME: &'static str = "GetBatchResults";
    type Reply = Vec<ExeScriptCommandResult>;
}

/// To the exe unit (stream call): every runtime event of the batch from its
/// start, then live ones; the stream ends after the batch's last `finished`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBatchEvents {
    pub batch_id: String,
}
impl BusMessage for StreamBatchEvents {
    const NAME: &'static str = "StreamBatchEvents";
    type Reply = RuntimeEvent;
}

/// To the exe unit: its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetState;
impl BusMessage for GetState {
    const NAME: &'static str = "GetState";
    type Reply = ActivityState;
}

/// To the exe unit: its usage counters now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetUsage;
impl BusMessage for GetUsage {
    const NAME: &'static str = "GetUsage";
    type Reply = ActivityUsage;
}

/// To the exe unit: the command being executed, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRunningCommand;
impl BusMessage for GetRunningCommand {
    const NAME: &'static str = "GetRunningCommand";
    type Reply = Option<ExeScriptCommandState>;
}

/// To the exe unit: stop. A running command is killed and ends with an Error
/// result; the exe unit reports Terminated (with `reason`) and exits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Shutdown {
    #[serde(default)]
    pub reason: Option<String>,
}
impl BusMessage for Shutdown {
    const NAME: &'static str = "Shutdown";
    type Reply = ();
}

/// From the exe unit to [`ACTIVITY_SERVICE`]: its state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportState {
    pub activity_id: String,
    pub state: ActivityState,
}
impl BusMessage for ReportState {
    const NAME: &'static str = "ReportState";
    type Reply = ();
}

/// From the exe unit to [`ACTIVITY_SERVICE`], every second: usage counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportUsage {
    pub activity_id: String,
    pub usage: ActivityUsage,
}
impl BusMessage for ReportUsage {
    const NAME: &'static str = "ReportUsage";
    type Reply = ();
}

/// From the exe unit to [`ACTIVITY_SERVICE`]: one runtime event of a batch
/// (started, stdout/stderr chunk of a `stream` capture, finished), in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatchEvent {
    pub activity_id: String,
    pub event: RuntimeEvent,
}
impl BusMessage for ReportBatchEvent {
    const NAME: &'static str = "ReportBatchEvent";
    type Reply = ();
}

/// From the exe unit to [`ACTIVITY_SERVICE`]: the result of one command. The
/// results of a batch arrive in index order; the one with `is_batch_finished`
/// is the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatchResult {
    pub activity_id: String,
    pub batch_id: String,
    pub result: ExeScriptCommandResult,
}
impl BusMessage for ReportBatchResult {
    const NAME: &'static str = "ReportBatchResult";
    type Reply = ();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn deploy_start_batch_from_yapapi() {
        let commands = parse_exe_script(r#"[{"deploy": {}}, {"start": {"args": []}}]"#).unwrap();
        assert_eq!(commands.len(), 2);
        assert!(matches!(
            &commands[0],
            ExeScriptCommand::Deploy { volumes: None, .. }
        ));
        assert_eq!(commands[1], ExeScriptCommand::Start { args: vec![] });
        // golem-js sends start without args
        let commands = parse_exe_script(r#"[{"deploy":{}},{"start":{}}]"#).unwrap();
        assert_eq!(commands[1], ExeScriptCommand::Start { args: vec![] });
        // and it serializes back to the same short form
        assert_eq!(
            serde_json::to_value(&commands).unwrap(),
            json!([{"deploy": {}}, {"start": {"args": []}}])
        );
    }

    #[test]
    fn run_with_stream_capture_from_yapapi() {
        let text = r#"[{"run":{"entry_point":"/bin/sh","args":["-c","date"],"capture":{"stdout":{"stream":{}},"stderr":{"stream":{}}}}}]"#;
        let commands = parse_exe_script(text).unwrap();
        let stream = CaptureMode::Stream {
            limit: None,
            format: None,
        };
        assert_eq!(
            commands[0],
            ExeScriptCommand::Run {
                entry_point: "/bin/sh".into(),
                args: vec!["-c".into(), "date".into()],
                capture: Some(Capture {
                    stdout: Some(stream.clone()),
                    stderr: Some(stream),
                }),
            }
        );
        let back: serde_json::Value = serde_json::to_value(&commands).unwrap();
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn at_end_capture_variants() {
        // golem-js: {"atEnd":{"format":"string"}}
        let mode: CaptureMode =
            serde_json::from_value(json!({"atEnd": {"format": "string"}})).unwrap();
        assert_eq!(
            mode,
            CaptureMode::AtEnd {
                part: None,
                format: Some(CaptureFormat::Str)
            }
        );
        let mode: CaptureMode =
            serde_json::from_value(json!({"atEnd": {"headTail": 100, "format": "bin"}})).unwrap();
        assert_eq!(
            mode,
            CaptureMode::AtEnd {
                part: Some(CapturePart::HeadTail(Some(100))),
                format: Some(CaptureFormat::Bin)
            }
        );
        let mode: CaptureMode = serde_json::from_value(json!({"atEnd": {"tail": 5}})).unwrap();
        assert_eq!(
            mode,
            CaptureMode::AtEnd {
                part: Some(CapturePart::Tail(Some(5))),
                format: None
            }
        );
        let mode: CaptureMode =
            serde_json::from_value(json!({"stream": {"limit": 1024, "format": "str"}})).unwrap();
        assert_eq!(
            mode,
            CaptureMode::Stream {
                limit: Some(1024),
                format: Some(CaptureFormat::Str)
            }
        );
        assert_eq!(
            serde_json::to_value(CaptureMode::AtEnd {
                part: Some(CapturePart::Head(Some(7))),
                format: Some(CaptureFormat::Str)
            })
            .unwrap(),
            json!({"atEnd": {"head": 7, "format": "str"}})
        );
    }

    #[test]
    fn transfer_sign_terminate() {
        let commands = parse_exe_script(
            r#"[{"transfer":{"from":"http://h/x.zip","to":"container:/in/","format":"zip","depth":0,"fileset":"*.o"}},
                {"transfer":{"from":"container:/golem/output/x","to":"gftp://0xabc/1"}},
                {"sign":{}},{"terminate":{}}]"#,
        )
        .unwrap();
        match &commands[0] {
            ExeScriptCommand::Transfer {
                format,
                depth,
                fileset,
                ..
            } => {
                assert_eq!(format.as_deref(), Some("zip"));
                assert_eq!(*depth, Some(0));
                assert_eq!(fileset, &Some(json!("*.o")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(commands[2], ExeScriptCommand::Sign {});
        assert_eq!(commands[3], ExeScriptCommand::Terminate {});
        assert!(parse_exe_script(r#"[{"launch":{}}]"#).is_err());
    }

    #[test]
    fn deploy_with_everything() {
        let command: ExeScriptCommand = serde_json::from_value(json!({"deploy": {
            "net": [{"id": "n1", "ip": "192.168.0.0", "mask": "255.255.255.0", "nodeIp": "192.168.0.2",
                     "nodes": {"192.168.0.3": "0x01"}}],
            "hosts": {"a": "192.168.0.3"},
            "hostname": "me",
            "volumes": ["/golem/input"],
            "env": {"K": "V"},
            "progress": {"updateInterval": "300ms", "updateStep": 10}
        }}))
        .unwrap();
        match command {
            ExeScriptCommand::Deploy {
                net,
                hosts,
                hostname,
                volumes,
                env,
                progress,
            } => {
                assert_eq!(net[0].node_ip, "192.168.0.2");
                assert_eq!(hosts["a"], "192.168.0.3");
                assert_eq!(hostname.as_deref(), Some("me"));
                assert_eq!(
                    volumes,
                    Some(DeployVolumes::Paths(vec!["/golem/input".into()]))
                );
                assert_eq!(env["K"], "V");
                assert_eq!(progress.unwrap().update_interval.as_deref(), Some("300ms"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn command_result_is_camel_case() {
        let result = ExeScriptCommandResult {
            index: 0,
            event_date: DateTime::parse_from_rfc3339("2026-11-23T18:24:29.439149Z")
                .unwrap()
                .with_timezone(&Utc),
            result: CommandResult::Ok,
            stdout: Some(CommandOutput::Str("hello\n".into())),
            stderr: None,
            message: None,
            is_batch_finished: true,
        };
        let value = serde_json::to_value(&result).unwrap();
        assert_eq!(
            value,
            json!({"index": 0, "eventDate": "2026-11-23T18:24:29.439149Z", "result": "Ok",
                   "stdout": "hello\n", "stderr": null, "message": null, "isBatchFinished": true})
        );
        let back: ExeScriptCommandResult = serde_json::from_value(value).unwrap();
        assert_eq!(back, result);
        let bin = serde_json::to_value(CommandOutput::Bin(vec![1, 2])).unwrap();
        assert_eq!(bin, json!([1, 2]));
    }

    #[test]
    fn runtime_events_are_snake_case() {
        let timestamp =
            NaiveDateTime::parse_from_str("2026-11-23T18:24:29.5", "%Y-%m-%dT%H:%M:%S%.f").unwrap();
        let event = |kind| RuntimeEvent {
            batch_id: "b1".into(),
            index: 1,
            timestamp,
            kind,
        };
        assert_eq!(
            serde_json::to_value(event(RuntimeEventKind::Finished {
                return_code: 0,
                message: None
            }))
            .unwrap(),
            json!({"batch_id": "b1", "index": 1, "timestamp": "2026-11-23T18:24:29.500",
                   "kind": {"finished": {"return_code": 0, "message": null}}})
        );
        assert_eq!(
            serde_json::to_value(event(RuntimeEventKind::Stdout(CommandOutput::Str(
                "x".into()
            ))))
            .unwrap()["kind"],
            json!({"stdout": "x"})
        );
        assert_eq!(
            serde_json::to_value(event(RuntimeEventKind::Started {
                command: ExeScriptCommand::Terminate {}
            }))
            .unwrap()["kind"],
            json!({"started": {"command": {"terminate": {}}}})
        );
        let parsed: RuntimeEvent = serde_json::from_value(json!({"batch_id": "b", "index": 0,
            "timestamp": "2026-11-23T18:24:29.439149", "kind": {"stderr": "oops"}}))
        .unwrap();
        assert_eq!(
            parsed.kind,
            RuntimeEventKind::Stderr(CommandOutput::Str("oops".into()))
        );
    }

    #[test]
    fn state_and_usage_shapes() {
        let state = ActivityState {
            state: StatePair(State::Initialized, Some(State::Deployed)),
            reason: None,
            error_message: None,
        };
        assert_eq!(
            serde_json::to_value(&state).unwrap(),
            json!({"state": ["Initialized", "Deployed"]})
        );
        let terminated: ActivityState = serde_json::from_value(
            json!({"state": ["Terminated", null], "reason": "done", "errorMessage": "x"}),
        )
        .unwrap();
        assert!(!terminated.state.alive());
        assert_eq!(terminated.reason.as_deref(), Some("done"));
        assert_eq!(terminated.error_message.as_deref(), Some("x"));
        let usage = ActivityUsage {
            current_usage: Some(vec![1.5, 2.0]),
            timestamp: 1_700_000_000,
        };
        assert_eq!(
            serde_json::to_value(&usage).unwrap(),
            json!({"currentUsage": [1.5, 2.0], "timestamp": 1_700_000_000})
        );
    }

    #[test]
    fn running_command_view() {
        let run = ExeScriptCommand::Run {
            entry_point: "hello".into(),
            args: vec!["a".into()],
            capture: None,
        };
        assert_eq!(
            serde_json::to_value(run.to_state()).unwrap(),
            json!({"command": "Run", "params": ["hello", "a"]})
        );
    }

    #[test]
    fn bus_messages_round_trip() {
        let exec = ExecBatch {
            batch_id: "b".into(),
            commands: parse_exe_script(r#"[{"deploy":{}}]"#).unwrap(),
        };
        let back: ExecBatch = serde_json::from_value(serde_json::to_value(&exec).unwrap()).unwrap();
        assert_eq!(back, exec);
        let query: GetBatchResults = serde_json::from_value(json!({"batch_id": "b"})).unwrap();
        assert_eq!(query.command_index, None);
        let _: GetState = serde_json::from_value(serde_json::Value::Null).unwrap();
        assert_eq!(exe_unit_address("a1"), "/local/exeunit/a1");
    }
}
