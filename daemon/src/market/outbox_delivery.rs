//! The market actor's side of the outbox: a handler queues a notice (stored
//! with its state change, flushed before the handler answers) and the actor
//! tries it at once, each delivery in its own future whose outcome the actor
//! settles; one actor timer wakes it for the next retry.

use std::future::Future;
use std::pin::Pin;

use actix::{ActorFutureExt, AsyncContext, Context};
use golem_model::{GolemError, NodeId};
use tokio::time::Instant;

use super::actor::MarketActor;
use super::outbox::{Notice, OutboxRecord};

/// A delivery attempt, owning all it needs.
type Delivery = Pin<Box<dyn Future<Output = Result<(), GolemError>>>>;

impl MarketActor {
    /// Queue `notice` for `node` (stored now; the handler's answer waits for
    /// the flush) and try it at once.
    pub(crate) fn notify_remote(
        &mut self,
        ctx: &mut Context<Self>,
        node: NodeId,
        notice: impl Into<Notice>,
    ) {
        let record = OutboxRecord {
            node,
            notice: notice.into(),
        };
        self.outbox.queue(&self.core.db.tree, record);
        self.run_outbox(ctx);
    }

    /// Start every due delivery and set the timer for the next due one.
    pub(crate) fn run_outbox(&mut self, ctx: &mut Context<Self>) {
        let (due, next) = self.outbox.take_due(Instant::now());
        for (seq, record) in due {
            let delivery = self.deliver_notice(record);
            ctx.spawn(actix::fut::wrap_future(delivery).map(
                move |result, actor: &mut MarketActor, ctx| {
                    let MarketActor { core, outbox, .. } = actor;
                    outbox.settle(&core.db.tree, seq, result, &core.config);
                    actor.run_outbox(ctx);
                },
            ));
        }
        if let Some(timer) = self.outbox_timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(next) = next {
            let delay = next.saturating_duration_since(Instant::now());
            self.outbox_timer = Some(ctx.run_later(delay, |actor, ctx| {
                actor.outbox_timer = None;
                actor.run_outbox(ctx);
            }));
        }
    }

    /// The call that delivers `record` (owning all it needs).
    fn deliver_notice(&self, record: OutboxRecord) -> Delivery {
        let node = record.node;
        let core = &self.core;
        match record.notice {
            Notice::ProposalRejected(message) => {
                let call = core.call_remote(node, message);
                Box::pin(async move { call.await.map(drop) })
            }
            Notice::AgreementRejected(message) => {
                let call = core.call_remote(node, message);
                Box::pin(async move { call.await.map(drop) })
            }
            Notice::AgreementCancelled(message) => {
                let call = core.call_remote(node, message);
                Box::pin(async move { call.await.map(drop) })
            }
            Notice::AgreementTerminated(message) => {
                let call = core.call_remote(node, message);
                Box::pin(async move { call.await.map(drop) })
            }
        }
    }
}
