//! Offer controls: whether all offers are paused. The dashboard's "pause
//! offers" button changes it; the agent watches it, retiring every offer when
//! paused and subscribing them again on resume. (Presets are (de)activated in
//! `presets.toml`, see [`crate::presets::set_active`].) Saved in
//! `<data-dir>/offer-controls.json` so that a restart keeps the choice.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub const CONTROLS_FILE: &str = "offer-controls.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ControlState {
    /// No offer is published while paused.
    pub paused: bool,
}

/// The controls, shared between the dashboard and the agent's tasks.
pub struct OfferControls {
    path: PathBuf,
    state: watch::Sender<ControlState>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot save the offer controls in {path}: {source} (check the data dir's permissions)")]
pub struct ControlsError {
    path: PathBuf,
    source: std::io::Error,
}

impl OfferControls {
    /// The controls saved in `data_dir`; an unreadable file is logged and
    /// treated as none (all offers published).
    pub fn open(data_dir: &Path) -> OfferControls {
        let path = data_dir.join(CONTROLS_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "ignoring unreadable offer controls");
                ControlState::default()
            }),
            Err(_) => ControlState::default(),
        };
        OfferControls {
            path,
            state: watch::Sender::new(state),
        }
    }

    pub fn current(&self) -> ControlState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every later change.
    pub fn watch(&self) -> watch::Receiver<ControlState> {
        self.state.subscribe()
    }

    /// Change, save (temp file + rename) and tell the watchers.
    pub fn change(
        &self,
        change: impl FnOnce(&mut ControlState),
    ) -> Result<ControlState, ControlsError> {
        let mut next = self.current();
        change(&mut next);
        let error = |source| ControlsError {
            path: self.path.clone(),
            source,
        };
        let temporary = self.path.with_extension("json.tmp");
        let bytes =
            serde_json::to_vec_pretty(&next).map_err(|e| error(std::io::Error::other(e)))?;
        std::fs::write(&temporary, bytes).map_err(error)?;
        std::fs::rename(&temporary, &self.path).map_err(error)?;
        self.state.send_replace(next.clone());
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn changes_are_saved_and_seen_by_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let controls = OfferControls::open(dir.path());
        assert!(!controls.current().paused);
        let mut watcher = controls.watch();
        controls.change(|state| state.paused = true).unwrap();
        assert!(watcher.has_changed().unwrap());
        assert!(watcher.borrow_and_update().paused);
        let reopened = OfferControls::open(dir.path());
        assert!(reopened.current().paused);
        reopened.change(|state| state.paused = false).unwrap();
        assert!(!OfferControls::open(dir.path()).current().paused);
    }
}
