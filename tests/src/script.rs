//! ExeScript pieces the end-to-end tests of the VM unit share: a captured
//! `run`, the text of a command's output, and one batch run to its end.

use std::time::Duration;

use golem_client::GolemClient;
use golem_model::activity::{CommandOutput, ExeScriptCommand, ExeScriptCommandResult};
use serde_json::{json, Value};

/// `run` of `entry_point args…` with stdout and stderr captured at the end.
pub fn run_captured(entry_point: &str, args: &[&str]) -> Value {
    json!({"run": {"entry_point": entry_point, "args": args,
        "capture": {"stdout": {"atEnd": {"format": "str"}}, "stderr": {"atEnd": {"format": "str"}}}}})
}

/// A command's captured output as text (empty when there is none).
pub fn output_text(value: &Option<CommandOutput>) -> String {
    match value {
        Some(CommandOutput::Str(text)) => text.clone(),
        Some(CommandOutput::Bin(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        None => String::new(),
    }
}

/// Run `script` (ExeScript JSON) on `activity_id` and wait up to 120 s for
/// all its results; panics when the daemon refuses it.
pub async fn run_batch(
    client: &GolemClient,
    activity_id: &str,
    script: Value,
) -> Vec<ExeScriptCommandResult> {
    let commands: Vec<ExeScriptCommand> =
        serde_json::from_value(script).unwrap_or_else(|error| panic!("bad script: {error}"));
    let batch_id = client
        .exec(activity_id, &commands)
        .await
        .unwrap_or_else(|error| panic!("exec: {error}"));
    client
        .wait_batch(activity_id, &batch_id, Duration::from_secs(120))
        .await
        .unwrap_or_else(|error| panic!("batch results: {error}"))
}
