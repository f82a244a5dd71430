//! How a payment actor comes to life: [`PaymentActor::new`] with what
//! `start` loaded (the first instance) or nothing (a restart), `started()`
//! loading from sled when needed and scheduling the timers: the settle round
//! (every second, and when a driver signals), the allocation-expiry and
//! payment-due sweep (every second), the retention sweep (every 10 s) and the outbox's wake-up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context};
use golem_model::GolemError;

use super::actor::{PaymentActor, SETTLE_TICK};
use super::retention::SWEEP_PERIOD;
use super::state::{Deps, State};
use crate::outbox::Outbox;

/// Period of the allocation-expiry sweep.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

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
            overdue_warned: HashSet::new(),
            needs_load,
        }
    }
}

/// Load the state and the outbox (migrating the outbox of older builds).
pub(super) fn load(tree: &sled::Tree) -> Result<(State, Outbox), GolemError> {
    super::outbox::migrate_legacy(tree)?;
    let state = State::load(tree)?;
    let outbox = super::outbox::load(tree)?;
    Ok((state, outbox))
}

impl Actor for PaymentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if std::mem::take(&mut self.needs_load) {
            match load(&self.deps.tree) {
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
        self.state.presize(self.deps.retention.memory_count);
        self.sweep_retention();
        ctx.run_interval(SETTLE_TICK, |actor, ctx| actor.settle_round(ctx));
        ctx.run_interval(EXPIRY_TICK, |actor, _ctx| {
            actor.release_expired();
            actor.check_payment_dues();
        });
        ctx.run_interval(SWEEP_PERIOD, |actor, _ctx| actor.sweep_retention());
        self.watch_settled(ctx);
        self.drive_outbox(ctx);
        self.settle_round(ctx);
        // Long-polls that waited on the previous instance look again.
        self.deps.events_changed.send_modify(|count| *count += 1);
    }
}
