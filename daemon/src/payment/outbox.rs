//! Payment's use of the shared outbox (`crate::outbox`): acceptances,
//! rejections and payments for the other node are staged in the same batch as
//! the change they report (`outbox/<seq>` in the `payment` tree), then the
//! actor delivers them: right after the change, and from a timer when an
//! attempt failed (doubling backoff, 100 ms up to 10 s). Each attempt runs
//! outside the actor; its outcome comes back to [`PaymentActor::delivered`].
//! Definitive refusals are logged and dropped (handling on the other side is
//! idempotent and never moves a status back, so a repeat is harmless).

use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, SpawnHandle, WrapFuture};
use chrono::Utc;
use golem_model::bus::BusMessage;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};

use super::actor::PaymentActor;
use super::state::{Writes, TREE};
use crate::outbox::{self, Outbox, OutboxEntry, Outcome, RetryPolicy, Staged};
use crate::store;

const PREFIX: &str = "outbox/";
const LEGACY_PREFIX: &str = "out/";

const POLICY: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(10),
    in_flight_per_target: 32,
};

pub(super) fn load(tree: &sled::Tree) -> Result<Outbox, GolemError> {
    Outbox::load(tree, TREE, PREFIX, POLICY)
}

/// An outbox with nothing loaded yet.
pub(super) fn load_empty() -> Outbox {
    Outbox::new(TREE, PREFIX, POLICY)
}

/// Stage `message` for the payment service of `target` in `writes`.
pub(super) fn stage<M: BusMessage>(
    outbox: &mut Outbox,
    writes: &mut Writes,
    target: NodeId,
    message: &M,
) -> Result<Staged, GolemError> {
    let entry = OutboxEntry::new(target, payment_address(target), message)?;
    outbox.stage(&mut writes.batch, entry)
}

/// A message of the outbox of older builds (`out/<seq>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum LegacyOutgoing {
    AcceptDebitNote(AcceptDebitNote),
    RejectDebitNote(RejectDebitNote),
    AcceptInvoice(AcceptInvoice),
    RejectInvoice(RejectInvoice),
    SendPayment(SendPayment),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LegacyEntry {
    target: NodeId,
    message: LegacyOutgoing,
}

/// Move entries of older builds' outbox into the shared format, in order.
pub(super) fn migrate_legacy(tree: &sled::Tree) -> Result<(), GolemError> {
    let mut outbox = load(tree)?;
    let mut writes = Writes::new();
    let mut moved = 0;
    for item in tree.scan_prefix(LEGACY_PREFIX) {
        let (key, value) = item.map_err(store::StoreError::from)?;
        writes.batch.remove(key.clone());
        let Ok(old) = store::decode::<LegacyEntry>(TREE, &value) else {
            tracing::warn!("dropping a corrupt payment outbox entry of an older build");
            continue;
        };
        let target = old.target;
        let staged = match &old.message {
            LegacyOutgoing::AcceptDebitNote(m) => stage(&mut outbox, &mut writes, target, m),
            LegacyOutgoing::RejectDebitNote(m) => stage(&mut outbox, &mut writes, target, m),
            LegacyOutgoing::AcceptInvoice(m) => stage(&mut outbox, &mut writes, target, m),
            LegacyOutgoing::RejectInvoice(m) => stage(&mut outbox, &mut writes, target, m),
            LegacyOutgoing::SendPayment(m) => stage(&mut outbox, &mut writes, target, m),
        }?;
        drop(staged); // reloaded from the tree by the caller
        moved += 1;
    }
    if moved > 0 {
        tree.apply_batch(writes.batch)
            .map_err(store::StoreError::from)?;
        tracing::info!(moved, "payment outbox of an older build migrated");
    }
    Ok(())
}

impl PaymentActor {
    /// Start every due delivery; wake up again when the next one is due.
    pub(super) fn drive_outbox(&mut self, ctx: &mut Context<Self>) {
        let now = Utc::now();
        for delivery in self.outbox.due(now) {
            let seq = delivery.seq;
            let target = delivery.entry.target;
            let message = delivery.entry.message.clone();
            let call = outbox::deliver(self.deps.router.clone(), delivery);
            ctx.spawn(call.into_actor(self).map(move |result, actor, ctx| {
                actor.delivered(seq, target, &message, result, ctx)
            }));
        }
        if let Some(handle) = self.outbox_timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(next) = self.outbox.next_due() {
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            let handle: SpawnHandle = ctx.run_later(wait, |actor, ctx| {
                actor.outbox_timer = None;
                actor.drive_outbox(ctx);
            });
            self.outbox_timer = Some(handle);
        }
    }

    /// The outcome of one delivery attempt.
    fn delivered(
        &mut self,
        seq: u64,
        target: NodeId,
        message: &str,
        result: Result<(), GolemError>,
        ctx: &mut Context<Self>,
    ) {
        match (self.outbox.finish(&self.deps.tree, seq, &result), result) {
            (Outcome::Retry { attempts, delay }, Err(error)) => {
                tracing::debug!(%target, message, attempts, ?delay, %error.message, "payment message not delivered yet");
            }
            (Outcome::Dropped, Err(error)) => {
                tracing::warn!(%target, message, %error.message, "payment message refused; dropping it");
            }
            _ => {}
        }
        self.drive_outbox(ctx);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_of_older_builds_move_to_the_shared_outbox_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        let target = NodeId::from_bytes([9u8; 20]);
        let old = [
            LegacyOutgoing::AcceptDebitNote(AcceptDebitNote {
                debit_note_id: "dn-1".into(),
                total_amount_accepted: "2".parse().unwrap(),
            }),
            LegacyOutgoing::AcceptInvoice(AcceptInvoice {
                invoice_id: "inv-1".into(),
                total_amount_accepted: "5".parse().unwrap(),
            }),
        ];
        for (seq, message) in old.into_iter().enumerate() {
            let entry = LegacyEntry { target, message };
            tree.insert(
                format!("{LEGACY_PREFIX}{:020}", seq + 7),
                store::encode(&entry).unwrap(),
            )
            .unwrap();
        }
        migrate_legacy(&tree).unwrap();
        assert_eq!(tree.scan_prefix(LEGACY_PREFIX).count(), 0);
        let mut outbox = load(&tree).unwrap();
        let due = outbox.due(Utc::now());
        let names: Vec<&str> = due.iter().map(|d| d.entry.message.as_str()).collect();
        assert_eq!(names, vec![AcceptDebitNote::NAME, AcceptInvoice::NAME]);
        assert!(due.iter().all(|d| d.entry.target == target));
        assert_eq!(due[0].entry.address, payment_address(target));
        assert_eq!(due[1].entry.payload["invoiceId"], "inv-1");
        // Migrating again finds nothing more to move.
        migrate_legacy(&tree).unwrap();
        assert_eq!(load(&tree).unwrap().len(), 2);
    }
}
