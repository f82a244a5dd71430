//! The market's records as they are stored (JSON in the `market` tree, see
//! [`super::db`]) and the small rules every part of the market reads them by:
//! which role a record belongs to, when an agreement is final, how a body's
//! properties and constraints are parsed, and the millisecond clock.

use chrono::{DateTime, Utc};
use golem_model::constraints::Constraint;
use golem_model::market::{
    Agreement, AgreementOperationEvent, AgreementState, Demand, DemandOfferBase, Proposal,
    PublishedOffer, Reason, Terminator, SUBNET_PROPERTY,
};
use golem_model::properties::Properties;
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};

/// What kind of subscription an id must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    Offer,
    Demand,
}

impl SubscriptionKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SubscriptionKind::Offer => "offer",
            SubscriptionKind::Demand => "demand",
        }
    }

    /// Our role in the negotiations of such a subscription.
    pub(crate) fn role(self) -> Role {
        match self {
            SubscriptionKind::Offer => Role::Provider,
            SubscriptionKind::Demand => Role::Requestor,
        }
    }

    /// The kind of subscription our records in `role` hang on.
    pub(crate) fn of_role(role: Role) -> SubscriptionKind {
        match role {
            Role::Requestor => SubscriptionKind::Demand,
            Role::Provider => SubscriptionKind::Offer,
        }
    }
}

/// Which side of a negotiation or agreement a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Role {
    Requestor,
    Provider,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Requestor => "Requestor",
            Role::Provider => "Provider",
        }
    }

    pub(crate) fn terminator(self) -> Terminator {
        match self {
            Role::Requestor => Terminator::Requestor,
            Role::Provider => Terminator::Provider,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredOffer {
    pub published: PublishedOffer,
    /// Subscribed on this node (as opposed to learnt from another node).
    pub local: bool,
    /// False once unsubscribed (kept for our own offers to answer 410).
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Tombstone {
    pub provider_id: NodeId,
    pub expiration: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredDemand {
    pub demand: Demand,
    pub expiration: DateTime<Utc>,
    pub active: bool,
}

/// One proposal of a negotiation, as seen from one of our subscriptions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProposalRecord {
    /// Our demand (role Requestor) or offer (role Provider) subscription.
    pub subscription_id: String,
    pub role: Role,
    pub offer_id: String,
    pub demand_id: String,
    pub requestor_id: NodeId,
    pub provider_id: NodeId,
    /// Issued by us (as opposed to by the counterparty).
    pub ours: bool,
    /// Already answered by a counter-proposal.
    pub countered: bool,
    pub proposal: Proposal,
    /// When the negotiation stops: the earlier of the demand's and the offer's
    /// expiry where both are known (the requestor's side), else our own
    /// subscription's. Records written before this field use the subscription's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<DateTime<Utc>>,
}

impl ProposalRecord {
    pub(crate) fn counterparty(&self) -> NodeId {
        match self.role {
            Role::Requestor => self.provider_id,
            Role::Provider => self.requestor_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgreementRecord {
    pub role: Role,
    pub agreement: Agreement,
    /// Our demand or offer subscription.
    pub subscription_id: String,
    /// The provider's Draft the agreement promoted.
    pub offer_proposal_id: String,
    #[serde(default)]
    pub terminator: Option<Terminator>,
    #[serde(default)]
    pub reason: Option<Reason>,
    #[serde(default)]
    pub terminated_date: Option<DateTime<Utc>>,
}

impl AgreementRecord {
    pub(crate) fn counterparty(&self) -> NodeId {
        match self.role {
            Role::Requestor => self.agreement.offer.provider_id,
            Role::Provider => self.agreement.demand.requestor_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgreementEventRecord {
    pub seq: u64,
    pub role: Role,
    /// The app session of our side of the agreement when the event happened.
    pub app_session_id: Option<String>,
    pub event: AgreementOperationEvent,
}

pub(crate) fn parse_constraint(text: &str) -> Result<Constraint, GolemError> {
    golem_model::constraints::parse(text)
        .map_err(|error| GolemError::bad_request(format!("invalid constraints: {error}")))
}

pub(crate) fn subnet_of(properties: &Properties) -> Option<String> {
    properties
        .get(SUBNET_PROPERTY)
        .and_then(|value| value.as_str())
        .map(str::to_string)
}

/// Now, to the millisecond (what every client parses without loss).
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// An agreement that can no longer change (and so may leave memory).
pub(crate) fn is_final(state: AgreementState) -> bool {
    matches!(
        state,
        AgreementState::Terminated
            | AgreementState::Rejected
            | AgreementState::Cancelled
            | AgreementState::Expired
    )
}

/// The properties and constraints of a subscription or proposal body, checked.
pub(crate) fn parse_body(body: DemandOfferBase) -> Result<(Properties, String), GolemError> {
    let parsed = parse_body_once(body)?;
    Ok((parsed.properties, parsed.text))
}

/// A request body with its constraints parsed (once) and kept.
pub(crate) struct ParsedBody {
    pub properties: Properties,
    pub constraint: Constraint,
    /// The constraints as the client wrote them (what is stored and shown).
    pub text: String,
}

/// 400 when the properties or the constraints of `body` do not parse.
pub(crate) fn parse_body_once(body: DemandOfferBase) -> Result<ParsedBody, GolemError> {
    let properties = Properties::from_json(body.properties)
        .map_err(|error| GolemError::bad_request(format!("invalid properties: {error}")))?;
    let constraint = parse_constraint(&body.constraints)?;
    Ok(ParsedBody {
        properties,
        constraint,
        text: body.constraints,
    })
}
