//! What a run leaves behind when it dies (SIGKILL, a crash, its daemon
//! killed under it): each session keeps a small journal,
//! `<sessions-dir>/<pid>.json`, of its allocation and the agreements it signed,
//! and removes it when it finishes cleanly. Every new session first ends what
//! the journals of dead processes name ([`clean_dead_sessions`]): their
//! agreements are terminated (so providers free their capacity at once) and
//! their allocations released. A journal naming another daemon (another
//! NodeId) is left for a session of that daemon.
//!
//! It never touches what a live process holds, and never reads the daemon's
//! lists: only what a dead session of this tool wrote down.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use golem_client::GolemClient;
use golem_model::market::Reason;
use serde::{Deserialize, Serialize};

/// What one session holds on one daemon.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub pid: u32,
    /// The daemon's NodeId.
    pub node_id: String,
    pub allocation_id: String,
    pub agreements: Vec<String>,
}

/// The journal of the running session; rewritten on each change.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    record: Mutex<JournalRecord>,
}

impl Journal {
    /// Start the journal of this process for `allocation_id` on `node_id`.
    /// A journal that cannot be written only costs the clean-up: it is logged.
    pub fn create(dir: &Path, node_id: &str, allocation_id: &str) -> Journal {
        let pid = std::process::id();
        let journal = Journal {
            path: dir.join(format!("{pid}.json")),
            record: Mutex::new(JournalRecord {
                pid,
                node_id: node_id.to_string(),
                allocation_id: allocation_id.to_string(),
                agreements: Vec::new(),
            }),
        };
        if let Err(error) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot create the sessions directory");
        }
        if let Err(error) = journal.write() {
            tracing::warn!(path = %journal.path.display(), %error, "cannot write the session journal");
        }
        journal
    }

    /// Note an agreement the session signed (a failed write is logged and
    /// returned: the next write holds it too).
    pub fn agreement(&self, agreement_id: &str) -> std::io::Result<()> {
        self.lock().agreements.push(agreement_id.to_string());
        self.write().inspect_err(|error| {
            tracing::warn!(path = %self.path.display(), %error, "cannot write the session journal");
        })
    }

    /// The session ended cleanly: nothing is left to clean.
    pub fn close(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalRecord> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replace the file with the record. The lock is held to the rename:
    /// agreements signed together write one after the other, so none loses
    /// the partial file to another's rename and the last write holds all.
    fn write(&self) -> std::io::Result<()> {
        let record = self.lock();
        let text = serde_json::to_vec(&*record)?;
        let partial = self.path.with_extension("json.partial");
        std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, &self.path))
    }
}

/// What [`clean_dead_sessions`] ended.
#[derive(Debug, Default, PartialEq)]
pub struct Cleaned {
    pub sessions: usize,
    pub agreements: usize,
    pub allocations: usize,
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The reason given to providers for an agreement of a dead session.
pub fn abandoned_reason(pid: u32) -> Reason {
    let mut reason = Reason::new(format!(
        "the requestor session (golem-requestor pid {pid}) that made this agreement ended without closing it"
    ));
    reason
        .extra
        .insert("golem.requestor.code".into(), "SessionEnded".into());
    reason
}

/// End what dead sessions on daemon `node_id` left: terminate their
/// agreements, release their allocations, remove their journals. Agreements
/// already ended and allocations already released are skipped quietly.
pub async fn clean_dead_sessions(client: &GolemClient, dir: &Path, node_id: &str) -> Cleaned {
    let mut cleaned = Cleaned::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return cleaned;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("json") {
            continue;
        }
        let record: JournalRecord = match std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        {
            Some(record) => record,
            None => {
                tracing::warn!(path = %path.display(), "unreadable session journal; removed");
                let _ = std::fs::remove_file(&path);
                continue;
            }
        };
        if record.node_id != node_id || process_alive(record.pid) {
            continue;
        }
        for agreement_id in &record.agreements {
            match client
                .terminate_agreement(agreement_id, Some(&abandoned_reason(record.pid)))
                .await
            {
                Ok(()) => cleaned.agreements += 1,
                Err(error) => {
                    tracing::debug!(%agreement_id, %error, "not terminated (already ended?)")
                }
            }
        }
        match client.release_allocation(&record.allocation_id).await {
            Ok(()) => cleaned.allocations += 1,
            Err(error) => {
                tracing::debug!(allocation_id = %record.allocation_id, %error, "not released (already?)")
            }
        }
        let _ = std::fs::remove_file(&path);
        cleaned.sessions += 1;
    }
    cleaned
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_journal_names_the_allocation_and_agreements_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::create(dir.path(), "0xabc", "alloc-1");
        journal.agreement("agreement-1").unwrap();
        journal.agreement("agreement-2").unwrap();
        let path = dir.path().join(format!("{}.json", std::process::id()));
        let record: JournalRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(record.allocation_id, "alloc-1");
        assert_eq!(record.agreements, ["agreement-1", "agreement-2"]);
        assert_eq!(record.node_id, "0xabc");
        journal.close();
        assert!(!path.exists());
    }

    /// Agreements signed at once (40 in a scale-lab job) each rewrite the
    /// journal: it used to lose some to the partial file's race.
    #[test]
    fn agreements_noted_at_once_all_reach_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let journal = std::sync::Arc::new(Journal::create(dir.path(), "0xabc", "alloc-1"));
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    for n in 0..25 {
                        journal
                            .agreement(&format!("agreement-{writer}-{n}"))
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let path = dir.path().join(format!("{}.json", std::process::id()));
        let record: JournalRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(record.agreements.len(), 200);
        assert!(!path.with_extension("json.partial").exists());
        journal.close();
    }

    #[tokio::test]
    async fn journals_of_live_processes_and_other_daemons_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // This process is alive: its journal stays.
        let journal = Journal::create(dir.path(), "0xabc", "alloc-1");
        // A dead process of another daemon: stays too.
        let other = JournalRecord {
            pid: u32::MAX - 1,
            node_id: "0xdef".into(),
            allocation_id: "alloc-2".into(),
            agreements: vec![],
        };
        std::fs::write(
            dir.path().join("other.json"),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        // Nothing listens there: a call would fail, but none is made.
        let client = GolemClient::new("http://127.0.0.1:9", "key");
        let cleaned = clean_dead_sessions(&client, dir.path(), "0xabc").await;
        assert_eq!(cleaned, Cleaned::default());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        journal.close();
    }
}
