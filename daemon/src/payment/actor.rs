//! The payment actor: it owns the payment records ([`State`]) and the outbox,
//! runs on its own `ServiceArbiter` thread ("payment") and is supervised: a
//! new instance loads everything from sled in `started()` (`lifecycle.rs`,
//! with the timers).
//!
//! Every change is one sled batch applied inside a handler; the reply waits
//! for the tree's flush, which runs outside the actor ([`PaymentActor::durable`]).
//! Remote calls (sending a document, checking a payment on chain, outbox
//! deliveries) run outside the actor too and come back through `map`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, Context, ResponseActFuture, ResponseFuture, SpawnHandle, WrapFuture};
use golem_model::GolemError;

use super::state::{flush, Deps, State};
use crate::outbox::Outbox;

/// Period of the settle round when no driver wakes it.
pub(super) const SETTLE_TICK: Duration = Duration::from_secs(1);

pub struct PaymentActor {
    pub(super) deps: Arc<Deps>,
    pub(super) state: State,
    pub(super) outbox: Outbox,
    /// Entries were added to the outbox since it was last driven.
    pub(super) outbox_dirty: bool,
    pub(super) outbox_timer: Option<SpawnHandle>,
    /// Held erc20 payments whose on-chain check is running.
    pub(super) rechecking: HashSet<String>,
    /// Pending payments already reported past their due date (`due.rs`).
    pub(super) overdue_warned: HashSet<String>,
    /// Load from sled in `started()` (every instance but the first, which
    /// `start` loaded to report errors).
    pub(super) needs_load: bool,
}

impl PaymentActor {
    /// Reply with `result` once the change it reports is flushed to disk;
    /// the flush runs outside the actor.
    pub(super) fn durable<T: Send + 'static>(
        &mut self,
        result: Result<T, GolemError>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<T, GolemError>> {
        self.after_change(ctx);
        let tree = self.deps.tree.clone();
        Box::pin(async move {
            let value = result?;
            flush(tree).await?;
            Ok(value)
        })
    }

    /// [`durable`](Self::durable) for a reply computed by a future of the actor.
    pub(super) fn durable_later<T: 'static>(
        &self,
        future: ResponseActFuture<Self, Result<T, GolemError>>,
    ) -> ResponseActFuture<Self, Result<T, GolemError>> {
        let tree = self.deps.tree.clone();
        Box::pin(future.then(move |result, actor, ctx| {
            actor.after_change(ctx);
            async move {
                let value = result?;
                flush(tree).await?;
                Ok(value)
            }
            .into_actor(actor)
        }))
    }

    /// Start deliveries of what a change put into the outbox.
    pub(super) fn after_change(&mut self, ctx: &mut Context<Self>) {
        if std::mem::take(&mut self.outbox_dirty) {
            self.drive_outbox(ctx);
        }
    }
}
