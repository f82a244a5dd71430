//! How both sides write an agreement: the record built from the two proposal
//! records, a change written through to sled, and an agreement event with a
//! strictly increasing date. Shared by our clients' steps
//! (`agreements.rs`, `agreement_endings.rs`), the counterparty's
//! (`agreement_notices.rs`) and the sweep (`expiry.rs`).

use chrono::{DateTime, Utc};
use golem_model::market::{Agreement, AgreementOperationEvent, AgreementState, Demand, Offer};
use golem_model::GolemError;

use super::db::Db;
use super::errors::agreement_not_found;
use super::records::{AgreementRecord, ProposalRecord, Role};
use super::state::State;

/// The agreement both sides build from the same two proposal records: the
/// demand side from the requestor's last proposal, the offer side from the
/// provider's Draft.
pub(crate) fn build_agreement(
    id: String,
    demand_proposal: &ProposalRecord,
    offer_proposal: &ProposalRecord,
    valid_to: DateTime<Utc>,
    timestamp: DateTime<Utc>,
    state: AgreementState,
) -> Agreement {
    Agreement {
        agreement_id: id,
        demand: Demand {
            properties: demand_proposal.proposal.properties.clone(),
            constraints: demand_proposal.proposal.constraints.clone(),
            demand_id: offer_proposal.demand_id.clone(),
            requestor_id: offer_proposal.requestor_id,
            timestamp: demand_proposal.proposal.timestamp,
        },
        offer: Offer {
            properties: offer_proposal.proposal.properties.clone(),
            constraints: offer_proposal.proposal.constraints.clone(),
            offer_id: offer_proposal.offer_id.clone(),
            provider_id: offer_proposal.provider_id,
            timestamp: offer_proposal.proposal.timestamp,
        },
        valid_to,
        approved_date: None,
        state,
        timestamp,
        app_session_id: None,
        proposed_signature: None,
        approved_signature: None,
        committed_signature: None,
    }
}

/// Change our record of `id` in `role` and write it through.
pub(crate) fn update_agreement(
    db: &Db,
    state: &mut State,
    role: Role,
    id: &str,
    change: impl FnOnce(&mut AgreementRecord),
) -> Result<AgreementRecord, GolemError> {
    let record = state
        .agreements
        .get_mut(&(role, id.to_string()))
        .ok_or_else(|| agreement_not_found(id))?;
    change(record);
    let record = record.clone();
    db.save_agreement(&record)?;
    Ok(record)
}

/// Record an agreement event of our record of `id` in `role`.
pub(crate) fn record_event(
    db: &Db,
    state: &mut State,
    role: Role,
    id: &str,
    make: impl FnOnce(DateTime<Utc>) -> AgreementOperationEvent,
) -> Result<(), GolemError> {
    let session = state
        .agreements
        .get(&(role, id.to_string()))
        .and_then(|record| record.agreement.app_session_id.clone());
    let date = state.next_agreement_event_date();
    state.push_agreement_event(db, role, session, make(date))
}
