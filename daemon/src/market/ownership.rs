//! Who may touch what: a subscription belongs to the identity that made it, an
//! agreement record to its party in our role, and a counterparty's message
//! moves only the records of which it is the counterparty. Every refusal is a
//! 404, so a foreign id reveals nothing.

use chrono::{DateTime, Utc};
use golem_model::{GolemError, NodeId};

use super::errors::agreement_not_found;
pub use super::records::SubscriptionKind;
use super::records::{AgreementRecord, Role};
use super::state::State;

/// An owned, not unsubscribed subscription: still live, or expired at the given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscriptionStatus {
    Live,
    Expired(DateTime<Utc>),
}

/// The status of subscription `id` of `kind` owned by `owner`; 404 when it is
/// unknown, another identity's, or unsubscribed.
pub(crate) fn owned_subscription(
    state: &State,
    owner: NodeId,
    kind: SubscriptionKind,
    id: &str,
    current: DateTime<Utc>,
) -> Result<SubscriptionStatus, GolemError> {
    let expiration = match kind {
        SubscriptionKind::Offer => state
            .offers
            .get(id)
            .filter(|entry| {
                entry.stored.local
                    && entry.stored.active
                    && entry.stored.published.offer.provider_id == owner
            })
            .map(|entry| entry.stored.published.expiration),
        SubscriptionKind::Demand => state
            .demands
            .get(id)
            .filter(|entry| entry.stored.active && entry.stored.demand.requestor_id == owner)
            .map(|entry| entry.stored.expiration),
    };
    match expiration {
        Some(expiration) if expiration <= current => Ok(SubscriptionStatus::Expired(expiration)),
        Some(_) => Ok(SubscriptionStatus::Live),
        None => Err(GolemError::not_found(format!(
            "{} subscription {id} not found",
            kind.name()
        ))),
    }
}

/// 404 unless `id` is a live subscription of `kind` owned by `owner` (an
/// expired one is 404 too, as the original answers its events).
pub(crate) fn check_subscription(
    state: &State,
    owner: NodeId,
    kind: SubscriptionKind,
    id: &str,
    current: DateTime<Utc>,
) -> Result<(), GolemError> {
    match owned_subscription(state, owner, kind, id, current)? {
        SubscriptionStatus::Live => Ok(()),
        SubscriptionStatus::Expired(_) => Err(GolemError::not_found(format!(
            "{} subscription {id} not found",
            kind.name()
        ))),
    }
}

/// Whether `owner` is our party of `record` (in the record's role).
pub(crate) fn is_party(record: &AgreementRecord, owner: NodeId) -> bool {
    let party = match record.role {
        Role::Requestor => record.agreement.demand.requestor_id,
        Role::Provider => record.agreement.offer.provider_id,
    };
    party == owner
}

/// Our record of agreement `id` in `role`, if `owner` is its party.
pub(crate) fn owned_agreement<'a>(
    state: &'a State,
    owner: NodeId,
    role: Role,
    id: &str,
) -> Result<&'a AgreementRecord, GolemError> {
    state
        .agreements
        .get(&(role, id.to_string()))
        .filter(|record| is_party(record, owner))
        .ok_or_else(|| agreement_not_found(id))
}

/// Our role in agreement `id` (the requestor's when we hold both).
pub(crate) fn any_role(state: &State, owner: NodeId, id: &str) -> Result<Role, GolemError> {
    [Role::Requestor, Role::Provider]
        .into_iter()
        .find(|role| owned_agreement(state, owner, *role, id).is_ok())
        .ok_or_else(|| agreement_not_found(id))
}

/// Our record of `id` in `role`, if `caller` is its counterparty.
pub(crate) fn counterparty_record<'a>(
    state: &'a State,
    role: Role,
    id: &str,
    caller: NodeId,
) -> Result<&'a AgreementRecord, GolemError> {
    state
        .agreements
        .get(&(role, id.to_string()))
        .filter(|record| record.counterparty() == caller)
        .ok_or_else(|| agreement_not_found(id))
}
