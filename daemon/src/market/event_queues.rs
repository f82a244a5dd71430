//! The pending events of every subscription, as a mailbox between the market
//! actor and the REST long-polls: the actor opens a queue when a subscription
//! of ours becomes live, fills it, and drops it when the subscription ends;
//! a long-poll takes from an open queue of its owner without a message to the
//! actor (one thread hop less on the hottest market path, demand → first
//! proposal). Anything the fast path cannot answer (an unknown, foreign,
//! expired or ended subscription) goes to the actor, which gives the precise
//! refusal. The handle outlives actor restarts: [`EventQueues::clear`] before a
//! reload (RFC 002, "Event queues").

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use golem_model::market::MarketEvent;
use golem_model::NodeId;

use super::records::SubscriptionKind;

/// Who may take a queue's events, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access {
    pub owner: NodeId,
    pub kind: SubscriptionKind,
    pub expiration: DateTime<Utc>,
}

#[derive(Default)]
struct Queue {
    /// Set while the subscription is live and ours; `None` for events loaded
    /// before their subscription (the actor answers those).
    access: Option<Access>,
    events: VecDeque<(u64, MarketEvent)>,
}

/// A cheap, shared handle (see the module doc).
#[derive(Clone, Default)]
pub(crate) struct EventQueues {
    queues: Arc<Mutex<HashMap<String, Queue>>>,
}

impl EventQueues {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many subscriptions have a queue, and how many events they hold.
    pub(crate) fn sizes(&self) -> (usize, usize) {
        let queues = self.lock();
        let events = queues.values().map(|queue| queue.events.len()).sum();
        (queues.len(), events)
    }

    /// Forget every queue (before the actor loads its records again).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Let `access.owner` take the events of `subscription_id` directly.
    pub(crate) fn open(&self, subscription_id: &str, access: Access) {
        self.lock()
            .entry(subscription_id.to_string())
            .or_default()
            .access = Some(access);
    }

    pub(crate) fn push(&self, subscription_id: &str, seq: u64, event: MarketEvent) {
        self.lock()
            .entry(subscription_id.to_string())
            .or_default()
            .events
            .push_back((seq, event));
    }

    /// Undelivered events of a subscription.
    pub(crate) fn pending(&self, subscription_id: &str) -> usize {
        self.lock()
            .get(subscription_id)
            .map_or(0, |queue| queue.events.len())
    }

    /// Whether the actor still keeps a queue (open or with events) for it.
    pub(crate) fn contains(&self, subscription_id: &str) -> bool {
        self.lock().contains_key(subscription_id)
    }

    /// Remove and return up to `max` events, whoever asks (the actor checked).
    pub(crate) fn take(&self, subscription_id: &str, max: usize) -> Vec<(u64, MarketEvent)> {
        let mut queues = self.lock();
        let Some(queue) = queues.get_mut(subscription_id) else {
            return Vec::new();
        };
        let count = max.min(queue.events.len());
        queue.events.drain(..count).collect()
    }

    /// Up to `max` events of a queue open to `owner` for `kind` and not
    /// expired at `now`; `None` when the fast path cannot decide.
    pub(crate) fn take_open(
        &self,
        owner: NodeId,
        kind: SubscriptionKind,
        subscription_id: &str,
        now: DateTime<Utc>,
        max: usize,
    ) -> Option<Vec<(u64, MarketEvent)>> {
        let mut queues = self.lock();
        let queue = queues.get_mut(subscription_id)?;
        let access = queue.access?;
        if access.owner != owner || access.kind != kind || access.expiration <= now {
            return None;
        }
        let count = max.min(queue.events.len());
        Some(queue.events.drain(..count).collect())
    }

    /// Close a queue and return what was left in it.
    pub(crate) fn remove(&self, subscription_id: &str) -> Option<VecDeque<(u64, MarketEvent)>> {
        self.lock()
            .remove(subscription_id)
            .map(|queue| queue.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> MarketEvent {
        MarketEvent::ProposalRejectedEvent {
            event_date: Utc::now(),
            proposal_id: id.into(),
            reason: None,
        }
    }

    fn node(byte: u8) -> NodeId {
        NodeId::from_bytes([byte; 20])
    }

    #[test]
    fn only_the_owner_of_a_live_open_queue_takes_directly() {
        let queues = EventQueues::default();
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(60);
        queues.push("s", 1, event("a"));
        // Not open yet: the actor decides.
        assert!(queues
            .take_open(node(1), SubscriptionKind::Demand, "s", now, 10)
            .is_none());
        queues.open(
            "s",
            Access {
                owner: node(1),
                kind: SubscriptionKind::Demand,
                expiration: later,
            },
        );
        for (owner, kind, at) in [
            (node(2), SubscriptionKind::Demand, now),
            (node(1), SubscriptionKind::Offer, now),
            (node(1), SubscriptionKind::Demand, later),
        ] {
            assert!(queues.take_open(owner, kind, "s", at, 10).is_none());
        }
        queues.push("s", 2, event("b"));
        let taken = queues
            .take_open(node(1), SubscriptionKind::Demand, "s", now, 1)
            .unwrap_or_else(|| panic!("the owner takes from an open queue"));
        assert_eq!(taken.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1]);
        assert_eq!(queues.pending("s"), 1);
        assert_eq!(queues.remove("s").map(|left| left.len()), Some(1));
        assert!(queues
            .take_open(node(1), SubscriptionKind::Demand, "s", now, 10)
            .is_none());
    }
}
