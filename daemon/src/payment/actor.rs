//! The payment actor: it owns the payment records ([`State`]) and the outbox,
//! runs on its own `ServiceArbiter` thread ("payment") and is supervised: a
//! new instance loads everything from sled in `started()`.
//!
//! Timers scheduled in `started()`: the settle round (every second, and when a
//! driver signals), the allocation-expiry sweep (every second), the retention
//! sweep (every 10 s) and the outbox's wake-up (at the next due retry).
//!
//! Every change is one sled batch applied inside a handler; the reply waits
//! for the tree's flush, which runs outside the actor ([`PaymentActor::durable`]).
//! Remote calls (sending a document, checking a payment on chain, outbox
//! deliveries) run outside the actor too and come back through `map`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, ResponseActFuture, ResponseFuture,
    SpawnHandle, WrapFuture,
};
use golem_model::GolemError;

use super::retention::SWEEP_PERIOD;
use super::state::{self, flush, Deps, State};
use crate::outbox::Outbox;

/// Period of the settle round when no driver wakes it.
pub(super) const SETTLE_TICK: Duration = Duration::from_secs(1);
/// Period of the allocation-expiry sweep.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

pub struct PaymentActor {
    pub(super) deps: Arc<Deps>,
    pub(super) state: State,
    pub(super) outbox: Outbox,
    /// Entries were added to the outbox since it was last driven.
    pub(super) outbox_dirty: bool,
    pub(super) outbox_timer: Option<SpawnHandle>,
    /// Held erc20 payments whose on-chain check is running.
    pub(super) rechecking: HashSet<String>,
    /// Load from sled in `started()` (every instance but the first, which
    /// `start` loaded to report errors).
    needs_load: bool,
}

impl PaymentActor {
    pub(super) fn new(deps: Arc<Deps>, loaded: Option<(State, Outbox)>) -> PaymentActor {
        let needs_load = loaded.is_none();
        let (state, outbox) =
            loaded.unwrap_or_else(|| (State::default(), super::outbox::load_empty()));
        PaymentActor {
            deps,
            state,
            outbox,
            outbox_dirty: false,
            outbox_timer: None,
            rechecking: HashSet::new(),
            needs_load,
        }
    }

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

impl Actor for PaymentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if std::mem::take(&mut self.needs_load) {
            match state::load(&self.deps.tree) {
                Ok((state, outbox)) => {
                    self.state = state;
                    self.outbox = outbox;
                }
                Err(error) => {
                    tracing::error!(%error.message, "cannot load the payment records; the payment service stops");
                    ctx.stop();
                    return;
                }
            }
        }
        self.sweep_retention();
        ctx.run_interval(SETTLE_TICK, |actor, ctx| actor.settle_round(ctx));
        ctx.run_interval(EXPIRY_TICK, |actor, _ctx| actor.release_expired());
        ctx.run_interval(SWEEP_PERIOD, |actor, _ctx| actor.sweep_retention());
        self.watch_settled(ctx);
        self.drive_outbox(ctx);
        self.settle_round(ctx);
        // Long-polls that waited on the previous instance look again.
        self.deps.events_changed.send_modify(|count| *count += 1);
    }
}
