//! Provider events: what the provider agent must do (start an exe unit for a
//! new activity, stop one that was destroyed). They are persisted under
//! `provider-event/<seq>` and kept for [`PROVIDER_EVENT_RETENTION`] (at most
//! the newest `events-count`); the agent reads them by date with a long-poll
//! that waits outside the actor.
//!
//! [`PROVIDER_EVENT_RETENTION`]: super::super::records::PROVIDER_EVENT_RETENTION

use actix::{Context, Handler};
use chrono::{DateTime, Utc};
use golem_model::activity_control::ProviderEvent;

use super::{ProviderActivityActor, EVENT_PREFIX};
use crate::store;

/// Provider events after `after` (oldest first), at most `max_events`.
pub(super) struct ReadEvents {
    pub after: Option<DateTime<Utc>>,
    pub max_events: usize,
}

impl actix::Message for ReadEvents {
    type Result = Vec<ProviderEvent>;
}

impl Handler<ReadEvents> for ProviderActivityActor {
    type Result = Vec<ProviderEvent>;

    fn handle(&mut self, message: ReadEvents, _ctx: &mut Context<Self>) -> Vec<ProviderEvent> {
        let events = &self.book.events;
        // Events are pushed in date order: the cursor is a binary search (a
        // clock stepping back can only repeat an event the agent already
        // handled, which it skips).
        let start = message.after.map_or(0, |after| {
            events.partition_point(|(_, event)| event.event_date() <= after)
        });
        events
            .range(start..)
            .take(message.max_events)
            .map(|(_, event)| event.clone())
            .collect()
    }
}

impl ProviderActivityActor {
    /// Persist and queue an event for the agent.
    pub(super) fn push_event(&mut self, event: ProviderEvent) {
        let seq = self.book.next_event_seq;
        self.book.next_event_seq += 1;
        let key = format!("{EVENT_PREFIX}{seq:020}");
        match store::encode(&event) {
            Ok(bytes) => {
                if let Err(error) = self.shared.tree.insert(key, bytes) {
                    tracing::error!(%error, "cannot persist a provider event");
                }
            }
            Err(error) => tracing::error!(%error, "cannot encode a provider event"),
        }
        self.book.events.push_back((seq, event));
        self.changed();
    }

    /// Drop provider events older than their retention or beyond the
    /// newest `max_provider_events`, from memory and sled.
    pub(super) fn drop_old_events(&mut self) {
        let retention = self.shared.retention;
        let Ok(age) = chrono::Duration::from_std(retention.provider_events) else {
            return;
        };
        let leaving = events_leaving(
            &self.book.events,
            Utc::now() - age,
            retention.max_provider_events,
        );
        let mut batch = sled::Batch::default();
        let mut dropped = 0usize;
        for (seq, _) in self.book.events.drain(..leaving) {
            batch.remove(format!("{EVENT_PREFIX}{seq:020}").as_bytes());
            dropped += 1;
        }
        if dropped > 0 {
            if let Err(error) = self.shared.tree.apply_batch(batch) {
                tracing::warn!(%error, "cannot drop old provider events from the store");
            }
            tracing::debug!(dropped, "old provider events dropped");
        }
    }
}

/// How many of the oldest events leave: those older than `oldest_kept` and
/// those beyond the newest `most` (events are in date order, so a prefix).
fn events_leaving(
    events: &std::collections::VecDeque<(u64, ProviderEvent)>,
    oldest_kept: DateTime<Utc>,
    most: usize,
) -> usize {
    let too_many = events.len().saturating_sub(most);
    let old = events.partition_point(|(_, event)| event.event_date() < oldest_kept);
    old.max(too_many)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(seq: u64, date: DateTime<Utc>) -> (u64, ProviderEvent) {
        let event = serde_json::from_value(serde_json::json!({
            "eventType": "DestroyActivity",
            "eventDate": date,
            "activityId": format!("a{seq}"),
            "agreementId": "ag",
        }))
        .unwrap();
        (seq, event)
    }

    #[test]
    fn events_leave_by_age_and_beyond_the_count_the_oldest_first() {
        let start = Utc::now();
        let events: std::collections::VecDeque<_> = (0..10)
            .map(|seq| event(seq, start + chrono::Duration::seconds(seq as i64)))
            .collect();
        // Young events beyond the newest four: six leave.
        assert_eq!(events_leaving(&events, start, 4), 6);
        // Old events leave even under the count.
        assert_eq!(
            events_leaving(&events, start + chrono::Duration::seconds(8), 100),
            8
        );
        // Under both bounds nothing leaves.
        assert_eq!(events_leaving(&events, start, 100), 0);
    }
}
