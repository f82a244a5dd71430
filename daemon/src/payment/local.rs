//! `/local/payment`: what the `golem-daemon payment` commands ask the running
//! daemon (status, drivers, accounts, releasing allocations). Reads of the
//! drivers and accounts need no state and are answered by the actor at once.

use actix::{Context, Handler, ResponseFuture};
use golem_bus::actor::Incoming;
use golem_bus::ServiceEndpoint;
use golem_model::payment::*;
use golem_model::GolemError;

use super::actor::PaymentActor;
use super::status::{accounts, drivers_report};
use super::PaymentSupervisor;

/// The endpoint bound at `/local/payment`.
pub(super) fn endpoint(actor: &PaymentSupervisor) -> ServiceEndpoint {
    ServiceEndpoint::new()
        .on_actor::<GetPaymentStatus, _, _>(actor.clone())
        .on_actor::<ListPaymentDrivers, _, _>(actor.clone())
        .on_actor::<ListAccounts, _, _>(actor.clone())
        .on_actor::<ReleaseAllocations, _, _>(actor.clone())
}

impl Handler<Incoming<GetPaymentStatus>> for PaymentActor {
    type Result = Result<PaymentStatusReport, GolemError>;
    fn handle(&mut self, _: Incoming<GetPaymentStatus>, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.status_report())
    }
}

impl Handler<Incoming<ListPaymentDrivers>> for PaymentActor {
    type Result = Result<Vec<serde_json::Value>, GolemError>;
    fn handle(
        &mut self,
        _: Incoming<ListPaymentDrivers>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        Ok(drivers_report(&self.deps))
    }
}

impl Handler<Incoming<ListAccounts>> for PaymentActor {
    type Result = Result<Vec<Account>, GolemError>;
    fn handle(&mut self, _: Incoming<ListAccounts>, _ctx: &mut Context<Self>) -> Self::Result {
        let mut all = accounts(&self.deps, true);
        all.extend(accounts(&self.deps, false));
        Ok(all)
    }
}

impl Handler<Incoming<ReleaseAllocations>> for PaymentActor {
    type Result = ResponseFuture<Result<Vec<String>, GolemError>>;
    fn handle(&mut self, _: Incoming<ReleaseAllocations>, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.release_all_allocations();
        self.durable(result, ctx)
    }
}
