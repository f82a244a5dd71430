//! The market actor's side of the outbox: a handler queues a notice (stored
//! with its state change, flushed before the handler answers) and the actor
//! tries it at once, each delivery in its own future (bounded by the market's
//! remote timeout) whose outcome the actor settles; one actor timer wakes it
//! for the next retry.

use actix::{ActorFutureExt, AsyncContext, Context};
use chrono::Utc;
use golem_model::{GolemError, NodeId};

use super::actor::MarketActor;
use super::outbox::{self, Notice};
use crate::outbox::Outcome;

impl MarketActor {
    /// Queue `notice` for `node` (stored now; the handler's answer waits for
    /// the flush) and try it at once.
    pub(crate) fn notify_remote(
        &mut self,
        ctx: &mut Context<Self>,
        node: NodeId,
        notice: impl Into<Notice>,
    ) {
        outbox::queue(&mut self.outbox, &self.core.db.tree, node, notice.into());
        self.run_outbox(ctx);
    }

    /// Start every due delivery and set the timer for the next due one.
    pub(crate) fn run_outbox(&mut self, ctx: &mut Context<Self>) {
        for delivery in self.outbox.due(Utc::now()) {
            let seq = delivery.seq;
            let node = delivery.entry.target;
            let notice = delivery.entry.message.clone();
            let delivery_name = notice.clone();
            let timeout = self.core.config.remote_timeout;
            let attempt = crate::outbox::deliver(self.core.router.clone(), delivery);
            let bounded = async move {
                tokio::time::timeout(timeout, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(GolemError::timeout(format!(
                            "node {node} did not answer {notice} within {timeout:?}"
                        )))
                    })
            };
            let notice = delivery_name.clone();
            ctx.spawn(actix::fut::wrap_future(bounded).map(
                move |result, actor: &mut MarketActor, ctx| {
                    let outcome = actor.outbox.finish(&actor.core.db.tree, seq, &result);
                    log_outcome(node, &notice, &result, &outcome);
                    actor.run_outbox(ctx);
                },
            ));
        }
        if let Some(timer) = self.outbox_timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(next) = self.outbox.next_due() {
            let delay = (next - Utc::now()).to_std().unwrap_or_default();
            self.outbox_timer = Some(ctx.run_later(delay, |actor, ctx| {
                actor.outbox_timer = None;
                actor.run_outbox(ctx);
            }));
        }
    }
}

fn log_outcome(node: NodeId, notice: &str, result: &Result<(), GolemError>, outcome: &Outcome) {
    match (outcome, result) {
        (Outcome::Delivered, _) => tracing::info!(%node, notice, "market notice delivered"),
        (Outcome::Retry { attempts, delay }, Err(error)) => {
            tracing::warn!(%node, notice, attempts, ?delay, %error, "market notice not delivered; retrying")
        }
        (Outcome::Dropped, Err(error)) => {
            tracing::warn!(%node, notice, %error, "market notice refused by the counterparty; dropping it")
        }
        _ => {}
    }
}
