//! The market's persistent outbox: state-change notices for a counterparty
//! (proposal rejected, agreement rejected, cancelled or terminated) that could
//! not be delivered at once. Each notice is written to the `market` tree under
//! `outbox/<seq>` together with the state change it reports (the step that
//! queued it answers after the flush), tried at once, retried with a bounded
//! exponential backoff ([`MarketConfig::outbox_retry_initial`] doubling up to
//! [`MarketConfig::outbox_retry_max`]) until the counterparty answers, and
//! reloaded after a restart. A counterparty's definite refusal (not a timeout
//! nor an unreachable node) drops the notice with a warning. Every notice is
//! tried in its own future, so an unreachable node never delays another's.
//!
//! [`Outbox`] is the bookkeeping alone (queue, take what is due, settle an
//! outcome; no IO but the tree); the market actor drives it
//! (`outbox_delivery.rs`). Its API is kept that narrow so that a shared
//! persisted outbox can take its place.
//!
//! [`MarketConfig::outbox_retry_initial`]: super::settings::MarketConfig::outbox_retry_initial
//! [`MarketConfig::outbox_retry_max`]: super::settings::MarketConfig::outbox_retry_max

use std::collections::BTreeMap;
use std::time::Duration;

use golem_model::market::{
    AgreementCancelled, AgreementRejected, AgreementTerminated, ProposalRejected,
};
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::db::TREE;
use super::settings::MarketConfig;
use crate::store;

const PREFIX: &str = "outbox/";

fn key(seq: u64) -> String {
    format!("{PREFIX}{seq:020}")
}

/// A notice for a counterparty's market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Notice {
    ProposalRejected(ProposalRejected),
    AgreementRejected(AgreementRejected),
    AgreementCancelled(AgreementCancelled),
    AgreementTerminated(AgreementTerminated),
}

impl Notice {
    fn name(&self) -> &'static str {
        match self {
            Notice::ProposalRejected(_) => "ProposalRejected",
            Notice::AgreementRejected(_) => "AgreementRejected",
            Notice::AgreementCancelled(_) => "AgreementCancelled",
            Notice::AgreementTerminated(_) => "AgreementTerminated",
        }
    }
}

macro_rules! notice_from {
    ($($variant:ident),*) => {$(
        impl From<$variant> for Notice {
            fn from(message: $variant) -> Self {
                Notice::$variant(message)
            }
        }
    )*};
}
notice_from!(
    ProposalRejected,
    AgreementRejected,
    AgreementCancelled,
    AgreementTerminated
);

/// One stored notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutboxRecord {
    pub node: NodeId,
    pub notice: Notice,
}

/// Retry bookkeeping in memory (a restart retries everything at once).
#[derive(Debug)]
struct Pending {
    record: OutboxRecord,
    attempts: u32,
    next_attempt: Instant,
    in_flight: bool,
}

/// The outbox in memory, mirrored in the tree.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
}

impl Outbox {
    /// Load the stored notices.
    pub(crate) fn load(tree: &sled::Tree) -> Result<Outbox, GolemError> {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        for item in tree.scan_prefix(PREFIX) {
            let (key, value) = item.map_err(|error| {
                GolemError::internal(format!("cannot read the market outbox: {error}"))
            })?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let Ok(seq) = key.trim_start_matches(PREFIX).parse::<u64>() else {
                tracing::warn!(%key, "skipping a market outbox key that is not a number");
                continue;
            };
            match store::decode::<OutboxRecord>(TREE, &value) {
                Ok(record) => {
                    outbox.next_seq = outbox.next_seq.max(seq + 1);
                    outbox.pending.insert(seq, Pending::new(record, now));
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "skipping a corrupt market outbox record")
                }
            }
        }
        Ok(outbox)
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Store `record` (the caller flushes before acknowledging) and keep it
    /// due at once. A notice that cannot be stored is kept in memory only.
    pub(crate) fn queue(&mut self, tree: &sled::Tree, record: OutboxRecord) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let stored = store::encode(&record)
            .map_err(GolemError::from)
            .and_then(|bytes| {
                tree.insert(key(seq), bytes).map_err(|error| {
                    GolemError::internal(format!("cannot store a market notice: {error}"))
                })
            });
        if let Err(error) = stored {
            tracing::error!(node = %record.node, %error, "a market notice is kept in memory only");
        }
        self.pending
            .insert(seq, Pending::new(record, Instant::now()));
    }

    /// The notices due at `now`, marked in flight; and when the next one not
    /// due yet will be.
    pub(crate) fn take_due(&mut self, now: Instant) -> (Vec<(u64, OutboxRecord)>, Option<Instant>) {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (seq, pending) in self.pending.iter_mut() {
            if pending.in_flight {
                continue;
            }
            if pending.next_attempt <= now {
                pending.in_flight = true;
                due.push((*seq, pending.record.clone()));
            } else {
                next = Some(next.map_or(pending.next_attempt, |at| at.min(pending.next_attempt)));
            }
        }
        (due, next)
    }

    /// Apply the outcome of delivering notice `seq`: delivered or refused
    /// (dropped), or not reached (tried again after a backoff).
    pub(crate) fn settle(
        &mut self,
        tree: &sled::Tree,
        seq: u64,
        result: Result<(), GolemError>,
        config: &MarketConfig,
    ) {
        let Some(pending) = self.pending.get_mut(&seq) else {
            return;
        };
        let node = pending.record.node;
        let notice = pending.record.notice.name();
        match result {
            Ok(()) => tracing::debug!(%node, notice, "market notice delivered"),
            Err(error) if is_transient(&error) => {
                pending.attempts += 1;
                let delay = backoff(
                    pending.attempts,
                    config.outbox_retry_initial,
                    config.outbox_retry_max,
                );
                pending.next_attempt = Instant::now() + delay;
                pending.in_flight = false;
                tracing::warn!(%node, notice, attempts = pending.attempts, ?delay, %error, "market notice not delivered; retrying");
                return;
            }
            Err(error) => {
                tracing::warn!(%node, notice, %error, "market notice refused by the counterparty; dropping it")
            }
        }
        if let Err(error) = tree.remove(key(seq)) {
            tracing::error!(%error, "removing a delivered market notice failed");
        }
        self.pending.remove(&seq);
    }
}

impl Pending {
    fn new(record: OutboxRecord, next_attempt: Instant) -> Pending {
        Pending {
            record,
            attempts: 0,
            next_attempt,
            in_flight: false,
        }
    }
}

/// The delay before attempt `attempts + 1`: `initial * 2^(attempts - 1)`, at
/// most `max`.
pub(crate) fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    initial.saturating_mul(1u32 << exponent).min(max)
}

/// Whether a failed delivery is worth retrying: the node was not reached or
/// did not answer (as opposed to answering with a refusal).
pub(crate) fn is_transient(error: &GolemError) -> bool {
    error.is_transient()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let initial = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        let delays: Vec<Duration> = (1..=9)
            .map(|attempt| backoff(attempt, initial, max))
            .collect();
        assert_eq!(delays[0], Duration::from_millis(500));
        assert_eq!(delays[1], Duration::from_secs(1));
        assert_eq!(delays[2], Duration::from_secs(2));
        assert_eq!(delays[6], Duration::from_secs(30));
        assert_eq!(delays[8], Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX, initial, max), max);
    }

    #[test]
    fn only_unreached_or_silent_nodes_are_retried() {
        assert!(is_transient(&GolemError::timeout("no answer")));
        assert!(is_transient(&GolemError::internal("net broke")));
        assert!(!is_transient(&GolemError::bad_request(
            "agreement is already terminated"
        )));
        assert!(!is_transient(&GolemError::not_found("no such agreement")));
    }

    #[test]
    fn notices_survive_reloading_the_tree() {
        let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let db = sled::open(directory.path()).unwrap_or_else(|error| panic!("sled: {error}"));
        let tree = db
            .open_tree(TREE)
            .unwrap_or_else(|error| panic!("tree: {error}"));
        let record = OutboxRecord {
            node: NodeId::from_bytes([7u8; 20]),
            notice: Notice::AgreementCancelled(AgreementCancelled {
                agreement_id: "a1".into(),
                reason: None,
            }),
        };
        let bytes = store::encode(&record).unwrap_or_else(|error| panic!("encode: {error}"));
        tree.insert(key(41), bytes)
            .unwrap_or_else(|error| panic!("insert: {error}"));
        tree.insert("outbox/garbage", b"x".to_vec())
            .unwrap_or_else(|error| panic!("insert: {error}"));
        let outbox = Outbox::load(&tree).unwrap_or_else(|error| panic!("load: {error}"));
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.next_seq, 42);
        assert_eq!(
            outbox.pending.get(&41).map(|pending| &pending.record),
            Some(&record)
        );
    }
}
