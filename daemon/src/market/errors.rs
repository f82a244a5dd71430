//! The market's refusals that more than one part of it gives: a final or
//! expired proposal, subscription or agreement answers 410 Gone (as the
//! original does), an unknown one 404 with its kind and id.

use chrono::{DateTime, Utc};
use golem_model::market::AgreementState;
use golem_model::{ErrorCode, GolemError};

use super::records::SubscriptionKind;

pub(crate) fn gone(message: String) -> GolemError {
    GolemError::new(ErrorCode::Gone, message)
}

pub(crate) fn agreement_not_found(id: &str) -> GolemError {
    GolemError::not_found(format!("agreement {id} not found"))
}

pub(crate) fn proposal_not_found(id: &str) -> GolemError {
    GolemError::not_found(format!("proposal {id} not found"))
}

/// 410 for a proposal past its expiration.
pub(crate) fn expired_proposal(proposal_id: &str, expiration: Option<DateTime<Utc>>) -> GolemError {
    match expiration {
        Some(expiration) => gone(format!(
            "proposal {proposal_id} has expired (negotiable until {})",
            expiration.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )),
        None => gone(format!("proposal {proposal_id} has expired")),
    }
}

/// 410 for a proposal whose subscription has expired.
pub(crate) fn expired_subscription(
    kind: SubscriptionKind,
    id: &str,
    expiration: DateTime<Utc>,
) -> GolemError {
    gone(format!(
        "{} subscription {id} expired at {}; its proposals can no longer be negotiated",
        kind.name(),
        expiration.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    ))
}

/// The message a client gets for an agreement in a final state.
pub(crate) fn final_state_error(id: &str, state: AgreementState) -> GolemError {
    gone(format!("agreement {id} is {state:?}"))
}
