//! One persisted outbox for the services that must tell another node about a
//! change they have already committed (market: rejections, cancellations,
//! terminations; payment: acceptances, rejections, payments).
//!
//! An [`OutboxEntry`] names the target node, the bus address to call there, the
//! message name and its JSON payload, with the attempts made so far and when
//! the next one is due. Entries live in the OWNING service's sled tree under a
//! prefix it chooses (`<prefix><seq:020>`), so an entry is written in the same
//! batch as the change it reports, and reloaded after a restart.
//!
//! The outbox never runs a task of its own: the owning actor drives it.
//! - [`Outbox::stage`] puts a new entry into the change's `sled::Batch`; after
//!   the batch is applied, [`Outbox::add`] makes it pending (a failed write
//!   leaves no entry behind);
//! - [`Outbox::due`] hands out the entries whose time has come (marking them in
//!   flight, at most [`RetryPolicy::in_flight_per_target`] per node, oldest
//!   first); the actor calls [`deliver`] for each outside its state (e.g.
//!   `ctx.spawn(wrap_future(deliver(..)).map(..))`);
//! - [`Outbox::finish`] applies the outcome: delivered or refused for good
//!   (not [`GolemError::is_transient`]) removes the entry; a transient failure
//!   doubles its delay, from [`RetryPolicy::initial`] up to
//!   [`RetryPolicy::max`], and stores the attempt count and the next try;
//! - [`Outbox::next_due`] says when to wake up again (a timer of the actor).
//!
//! It must never block on the network itself nor hold anything across an
//! await: it is plain data owned by one actor.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_bus::{Caller, Router};
use golem_model::bus::BusMessage;
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};

use crate::store;

/// A message waiting to reach another node, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// The node the message is for (deliveries are limited per node).
    pub target: NodeId,
    /// The full bus address to call, e.g. `/net/<node>/public/payment`.
    pub address: String,
    /// The bus message name (`BusMessage::NAME`).
    pub message: String,
    /// The message itself, as the bus encodes it.
    pub payload: serde_json::Value,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due (`None`: at once).
    #[serde(default)]
    pub next_try: Option<DateTime<Utc>>,
}

impl OutboxEntry {
    /// An entry delivering `message` to `address` on `target`.
    pub fn new<M: BusMessage>(
        target: NodeId,
        address: String,
        message: &M,
    ) -> Result<OutboxEntry, GolemError> {
        let payload = serde_json::to_value(message).map_err(|error| {
            GolemError::internal(format!("cannot encode {} for the outbox: {error}", M::NAME))
        })?;
        Ok(OutboxEntry {
            target,
            address,
            message: M::NAME.to_string(),
            payload,
            attempts: 0,
            next_try: None,
        })
    }
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The delay after the first failure; it doubles with each one.
    pub initial: Duration,
    /// The longest delay between two attempts.
    pub max: Duration,
    /// Deliveries in flight to one node at a time.
    pub in_flight_per_target: usize,
}

/// The delay before attempt `attempts + 1`: `initial * 2^(attempts - 1)`, at most `max`.
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    initial.saturating_mul(1u32 << exponent).min(max)
}

/// An entry staged in a batch, pending once the batch is applied.
#[must_use = "add it to the outbox after the batch is written"]
pub struct Staged {
    seq: u64,
    entry: OutboxEntry,
}

/// An entry handed out for one delivery attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: u64,
    pub entry: OutboxEntry,
}

/// What became of an entry after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Refused for good by the target: dropped.
    Dropped,
    /// Not reached: tried again after `delay`.
    Retry {
        attempts: u32,
        delay: Duration,
    },
    /// The entry was no longer pending.
    Unknown,
}

#[derive(Debug)]
struct Pending {
    entry: OutboxEntry,
    in_flight: bool,
}

/// The pending entries of one service, mirrored under `prefix` in its tree.
#[derive(Debug)]
pub struct Outbox {
    tree_name: &'static str,
    prefix: &'static str,
    policy: RetryPolicy,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
}

impl Outbox {
    /// An empty outbox (nothing stored yet).
    pub fn new(tree_name: &'static str, prefix: &'static str, policy: RetryPolicy) -> Outbox {
        Outbox {
            tree_name,
            prefix,
            policy,
            next_seq: 1,
            pending: BTreeMap::new(),
        }
    }

    /// Load the entries stored under `prefix` in `tree` (corrupt ones are skipped).
    pub fn load(
        tree: &sled::Tree,
        tree_name: &'static str,
        prefix: &'static str,
        policy: RetryPolicy,
    ) -> Result<Outbox, GolemError> {
        let mut outbox = Outbox::new(tree_name, prefix, policy);
        for item in tree.scan_prefix(prefix) {
            let (key, value) = item.map_err(store::StoreError::from)?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let Ok(seq) = key[prefix.len()..].parse::<u64>() else {
                tracing::warn!(%key, "skipping an outbox key that is not a number");
                continue;
            };
            match store::decode::<OutboxEntry>(tree_name, &value) {
                Ok(entry) => {
                    outbox.next_seq = outbox.next_seq.max(seq + 1);
                    outbox.pending.insert(
                        seq,
                        Pending {
                            entry,
                            in_flight: false,
                        },
                    );
                }
                Err(error) => tracing::warn!(%key, %error, "skipping a corrupt outbox entry"),
            }
        }
        Ok(outbox)
    }

    fn key(&self, seq: u64) -> String {
        format!("{}{seq:020}", self.prefix)
    }

    /// Write `entry` into `batch` under a fresh sequence number.
    pub fn stage(
        &mut self,
        batch: &mut sled::Batch,
        entry: OutboxEntry,
    ) -> Result<Staged, GolemError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        batch.insert(self.key(seq).as_bytes(), store::encode(&entry)?);
        Ok(Staged { seq, entry })
    }

    /// The batch holding `staged` was written: the entry is pending.
    pub fn add(&mut self, staged: Staged) {
        self.pending.insert(
            staged.seq,
            Pending {
                entry: staged.entry,
                in_flight: false,
            },
        );
    }

    /// Entries not delivered yet.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The entries due at `now`, oldest first, marked in flight.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Delivery> {
        let mut in_flight: HashMap<NodeId, usize> = HashMap::new();
        for pending in self.pending.values().filter(|pending| pending.in_flight) {
            *in_flight.entry(pending.entry.target).or_default() += 1;
        }
        let mut due = Vec::new();
        for (seq, pending) in self.pending.iter_mut() {
            if pending.in_flight || pending.entry.next_try.is_some_and(|at| at > now) {
                continue;
            }
            let count = in_flight.entry(pending.entry.target).or_default();
            if *count >= self.policy.in_flight_per_target {
                continue;
            }
            *count += 1;
            pending.in_flight = true;
            due.push(Delivery {
                seq: *seq,
                entry: pending.entry.clone(),
            });
        }
        due
    }

    /// The earliest next try of an entry not in flight; `Some(now)` or earlier
    /// when one is due already.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.pending
            .values()
            .filter(|pending| !pending.in_flight)
            .map(|pending| pending.entry.next_try.unwrap_or(DateTime::<Utc>::MIN_UTC))
            .min()
    }

    /// Apply the outcome of delivering entry `seq` (stored changes go to `tree`).
    pub fn finish(
        &mut self,
        tree: &sled::Tree,
        seq: u64,
        result: &Result<(), GolemError>,
    ) -> Outcome {
        let key = self.key(seq);
        let Some(pending) = self.pending.get_mut(&seq) else {
            return Outcome::Unknown;
        };
        let outcome = match result {
            Ok(()) => Outcome::Delivered,
            Err(error) if error.is_transient() => {
                let entry = &mut pending.entry;
                entry.attempts += 1;
                let delay = backoff(entry.attempts, self.policy.initial, self.policy.max);
                entry.next_try =
                    Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
                pending.in_flight = false;
                if let Err(error) =
                    store::encode(&*entry)
                        .map_err(GolemError::from)
                        .and_then(|bytes| {
                            tree.insert(key.as_bytes(), bytes)
                                .map(drop)
                                .map_err(|error| GolemError::internal(error.to_string()))
                        })
                {
                    tracing::warn!(tree = self.tree_name, %error.message, "storing an outbox attempt failed");
                }
                return Outcome::Retry {
                    attempts: entry.attempts,
                    delay,
                };
            }
            Err(_) => Outcome::Dropped,
        };
        if let Err(error) = tree.remove(key.as_bytes()) {
            tracing::error!(tree = self.tree_name, %error, "removing a finished outbox entry failed");
        }
        self.pending.remove(&seq);
        outcome
    }
}

/// Make one attempt at delivering `delivery` (as this node, `Caller::Local`).
pub async fn deliver(router: Router, delivery: Delivery) -> Result<(), GolemError> {
    let entry = delivery.entry;
    router
        .call_raw(Caller::Local, &entry.address, &entry.message, entry.payload)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Ping(u32);
    impl BusMessage for Ping {
        const NAME: &'static str = "Ping";
        type Reply = ();
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            in_flight_per_target: 2,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let initial = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        assert_eq!(backoff(1, initial, max), Duration::from_millis(500));
        assert_eq!(backoff(3, initial, max), Duration::from_secs(2));
        assert_eq!(backoff(9, initial, max), max);
        assert_eq!(backoff(u32::MAX, initial, max), max);
    }

    #[test]
    fn entries_survive_reloading_retry_with_backoff_and_leave_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("test").unwrap();
        let node = NodeId::from_bytes([7u8; 20]);
        let mut outbox = Outbox::new("test", "out/", policy());
        let mut batch = sled::Batch::default();
        let mut staged = Vec::new();
        for n in 0..3 {
            let entry = OutboxEntry::new(node, "/net/x/public/test".into(), &Ping(n)).unwrap();
            staged.push(outbox.stage(&mut batch, entry).unwrap());
        }
        tree.apply_batch(batch).unwrap();
        staged.into_iter().for_each(|staged| outbox.add(staged));

        let now = Utc::now();
        let due = outbox.due(now);
        assert_eq!(due.len(), 2, "at most two in flight per node");
        assert!(outbox.due(now).is_empty());
        let retry = outbox.finish(&tree, due[0].seq, &Err(GolemError::timeout("no answer")));
        assert!(matches!(retry, Outcome::Retry { attempts: 1, .. }));
        assert_eq!(
            outbox.finish(&tree, due[1].seq, &Err(GolemError::bad_request("no"))),
            Outcome::Dropped
        );

        let reloaded = Outbox::load(&tree, "test", "out/", policy()).unwrap();
        assert_eq!(reloaded.len(), 2);
        assert_eq!(reloaded.next_seq, 4);
        let mut reloaded = reloaded;
        let due = reloaded.due(now);
        assert_eq!(due.len(), 1, "the retried one waits for its backoff");
        assert_eq!(due[0].entry.payload, serde_json::json!(2));
        assert_eq!(
            reloaded.finish(&tree, due[0].seq, &Ok(())),
            Outcome::Delivered
        );
        let later = now + chrono::Duration::seconds(1);
        let due = reloaded.due(later);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].entry.attempts, 1);
        assert_eq!(
            reloaded.finish(&tree, due[0].seq, &Ok(())),
            Outcome::Delivered
        );
        assert!(reloaded.is_empty());
        assert_eq!(tree.scan_prefix("out/").count(), 0);
    }
}
