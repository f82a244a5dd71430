//! Debit-note and invoice events: recorded in the same batch as the change
//! they report, with strictly increasing `eventDate`s in millisecond steps (a
//! client's `afterTimestamp` cursor at millisecond precision never repeats or
//! skips one). Memory and sled keep a bounded window (`retention.rs`).
//!
//! Long-polls never wait inside the actor: [`PaymentActor::read_events`]
//! answers what is there now, and the handle waits on the `events_changed`
//! watch outside the actor before asking again.

use chrono::{DateTime, Utc};
use golem_model::payment::*;
use golem_model::GolemError;

use super::actor::PaymentActor;
use super::state::Writes;

impl PaymentActor {
    /// Write an event into `writes`; [`add_event`](Self::add_event) it after the commit.
    pub(super) fn stage_event(
        &mut self,
        writes: &mut Writes,
        event_type: PaymentEventType,
        id: &str,
        rejection: Option<Rejection>,
    ) -> Result<(u64, PaymentEvent), GolemError> {
        let now = Utc::now();
        let now = now
            - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000_000));
        let event_date = match self.state.last_event {
            Some(last) if now <= last => last + chrono::Duration::milliseconds(1),
            _ => now,
        };
        self.state.last_event = Some(event_date);
        let event = PaymentEvent {
            event_type,
            event_date,
            invoice_id: event_type.is_invoice().then(|| id.to_string()),
            debit_note_id: (!event_type.is_invoice()).then(|| id.to_string()),
            rejection,
        };
        self.state.next_seq += 1;
        let seq = self.state.next_seq;
        writes.put("seq/".to_string(), &seq)?;
        writes.put(format!("evt/{seq:020}"), &event)?;
        Ok((seq, event))
    }

    /// A committed event: into memory, and long-polls are woken.
    pub(super) fn add_event(&mut self, event: (u64, PaymentEvent)) {
        self.state.events.push_back(event);
        self.deps.events_changed.send_modify(|count| *count += 1);
    }

    /// Events of one kind strictly after `after` (at most `limit`), each with
    /// the agreement of its document when `with_agreements` (for filtering by
    /// app session outside the actor).
    pub(super) fn read_events(
        &self,
        invoices: bool,
        after: Option<DateTime<Utc>>,
        limit: usize,
        with_agreements: bool,
    ) -> Vec<(PaymentEvent, Option<String>)> {
        let events = &self.state.events;
        let start = match after {
            None => 0,
            Some(after) => events.partition_point(|(_, event)| event.event_date <= after),
        };
        events
            .range(start..)
            .map(|(_, event)| event)
            .filter(|event| event.event_type.is_invoice() == invoices)
            .take(limit)
            .map(|event| {
                let agreement = with_agreements.then(|| self.agreement_of(event)).flatten();
                (event.clone(), agreement)
            })
            .collect()
    }

    fn agreement_of(&self, event: &PaymentEvent) -> Option<String> {
        if let Some(id) = &event.invoice_id {
            return self
                .find_document::<Invoice>(id)
                .ok()
                .flatten()
                .map(|invoice| invoice.agreement_id);
        }
        let id = event.debit_note_id.as_ref()?;
        self.find_document::<DebitNote>(id)
            .ok()
            .flatten()
            .map(|note| note.agreement_id)
    }
}
