//! The activity state machine: New → Initialized (bound on the bus) →
//! Deployed (`deploy`) → Ready (`start`) → Terminated (`terminate`, `Shutdown`
//! or the daemon gone). A command out of order fails with a message naming the
//! command expected now.

use golem_model::activity::{ExeScriptCommand, State};

/// Whether `command` may run in `state`; the error says what is expected instead.
pub fn check_command_order(state: State, command: &ExeScriptCommand) -> Result<(), String> {
    let name = command.name();
    let allowed = match (state, command) {
        (State::Terminated, _) => {
            return Err(format!(
                "activity is Terminated: {name} can not run any more"
            ))
        }
        (State::Unresponsive, _) => {
            return Err(format!("activity is Unresponsive: {name} can not run"))
        }
        (_, ExeScriptCommand::Sign {} | ExeScriptCommand::Terminate {}) => true,
        (State::Initialized, ExeScriptCommand::Deploy { .. }) => true,
        (State::Deployed, ExeScriptCommand::Start { .. } | ExeScriptCommand::Transfer { .. }) => {
            true
        }
        (State::Ready, ExeScriptCommand::Run { .. } | ExeScriptCommand::Transfer { .. }) => true,
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let expected = match state {
        State::New => "the activity is not initialized yet; deploy is expected once it is",
        State::Initialized => "deploy is expected now",
        State::Deployed => "start is expected now",
        State::Ready => "run, transfer or terminate is expected now",
        State::Unresponsive | State::Terminated => "nothing",
    };
    Err(format!("activity is {state}: {expected}, not {name}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn deploy() -> ExeScriptCommand {
        serde_json::from_str(r#"{"deploy":{}}"#).unwrap()
    }
    fn start() -> ExeScriptCommand {
        ExeScriptCommand::Start { args: vec![] }
    }
    fn run() -> ExeScriptCommand {
        ExeScriptCommand::Run {
            entry_point: "x".into(),
            args: vec![],
            capture: None,
        }
    }

    #[test]
    fn happy_path_is_allowed() {
        assert!(check_command_order(State::Initialized, &deploy()).is_ok());
        assert!(check_command_order(State::Deployed, &start()).is_ok());
        assert!(check_command_order(State::Ready, &run()).is_ok());
        for state in [State::Initialized, State::Deployed, State::Ready] {
            assert!(check_command_order(state, &ExeScriptCommand::Terminate {}).is_ok());
        }
    }

    #[test]
    fn wrong_order_names_the_expected_command() {
        let error = check_command_order(State::Initialized, &run()).unwrap_err();
        assert_eq!(
            error,
            "activity is Initialized: deploy is expected now, not run"
        );
        let error = check_command_order(State::Initialized, &start()).unwrap_err();
        assert!(error.contains("deploy is expected"), "{error}");
        let error = check_command_order(State::Deployed, &run()).unwrap_err();
        assert!(error.contains("start is expected"), "{error}");
        let error = check_command_order(State::Ready, &deploy()).unwrap_err();
        assert!(error.contains("run, transfer or terminate"), "{error}");
        let error = check_command_order(State::Terminated, &run()).unwrap_err();
        assert!(error.contains("Terminated"), "{error}");
    }
}
