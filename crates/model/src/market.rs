//! The Golem Market API on the wire: the REST DTOs of `/market-api/v1` with the
//! exact camelCase names and enum spellings of the original (ya-client
//! `specs/market-api.yaml`), and the messages the market services of two nodes
//! exchange over `/net/<node>/public/market` and the per-subnet offer broadcast.
//!
//! Properties are always flat dotted keys on the way out ([`Properties`]);
//! input bodies may be nested and are flattened by the daemon.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bus::BusMessage;
use crate::properties::Properties;
use crate::NodeId;

/// The property naming an offer's or demand's subnet; offers match only demands
/// of the same subnet (a missing value is a subnet of its own).
pub const SUBNET_PROPERTY: &str = "golem.node.debug.subnet";

/// Body of `POST /offers`, `POST /demands` and of counter-proposals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemandOfferBase {
    /// Flat or nested JSON object; the daemon flattens it.
    pub properties: Value,
    /// The constraint filter; an empty string means "always true".
    #[serde(default)]
    pub constraints: String,
}

/// An offer as listed by `GET /offers` and embedded in agreements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub properties: Properties,
    pub constraints: String,
    pub offer_id: String,
    pub provider_id: NodeId,
    pub timestamp: DateTime<Utc>,
}

/// A demand as listed by `GET /demands` and embedded in agreements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Demand {
    pub properties: Properties,
    pub constraints: String,
    pub demand_id: String,
    pub requestor_id: NodeId,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProposalState {
    /// Arrived from the market as a match of a subscription.
    Initial,
    /// A bespoke counter-proposal of one party to the other.
    Draft,
    /// Rejected by the other party.
    Rejected,
    /// Promoted into an agreement.
    Accepted,
    /// Neither accepted nor rejected within its validity.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    pub properties: Properties,
    pub constraints: String,
    pub proposal_id: String,
    pub issuer_id: NodeId,
    pub state: ProposalState,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_proposal_id: Option<String>,
}

/// Why something was rejected, cancelled or terminated: a message plus any
/// extra members (`"golem.requestor.code": "Success"`), kept verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub message: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Reason {
    pub fn new(message: impl Into<String>) -> Self {
        Reason {
            message: message.into(),
            extra: Map::new(),
        }
    }
}

/// An event of an offer or demand subscription (`/offers|demands/{id}/events`).
#[allow(clippy::large_enum_variant)] // a wire type, built once per event
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "eventType")]
pub enum MarketEvent {
    #[serde(rename_all = "camelCase")]
    ProposalEvent {
        event_date: DateTime<Utc>,
        proposal: Proposal,
    },
    #[serde(rename_all = "camelCase")]
    ProposalRejectedEvent {
        event_date: DateTime<Utc>,
        proposal_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// Provider side only: a requestor confirmed an agreement and awaits approval.
    #[serde(rename_all = "camelCase")]
    AgreementEvent {
        event_date: DateTime<Utc>,
        agreement: Agreement,
    },
}

impl MarketEvent {
    pub fn event_date(&self) -> DateTime<Utc> {
        match self {
            MarketEvent::ProposalEvent { event_date, .. }
            | MarketEvent::ProposalRejectedEvent { event_date, .. }
            | MarketEvent::AgreementEvent { event_date, .. } => *event_date,
        }
    }
}

/// Body of `POST /agreements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementProposal {
    pub proposal_id: String,
    pub valid_to: DateTime<Utc>,
}

impl AgreementProposal {
    /// An agreement on `proposal_id` valid for `valid_for` from now.
    pub fn valid_for(proposal_id: impl Into<String>, valid_for: std::time::Duration) -> Self {
        let valid_for = chrono::Duration::from_std(valid_for).unwrap_or(chrono::Duration::MAX);
        AgreementProposal {
            proposal_id: proposal_id.into(),
            valid_to: Utc::now()
                .checked_add_signed(valid_for)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgreementState {
    /// Created by the requestor, not yet sent.
    Proposal,
    /// Confirmed by the requestor, awaiting the provider's approval.
    Pending,
    Cancelled,
    Rejected,
    Approved,
    Expired,
    Terminated,
}

impl AgreementState {
    /// States an agreement never leaves.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            AgreementState::Cancelled
                | AgreementState::Rejected
                | AgreementState::Expired
                | AgreementState::Terminated
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Terminator {
    Requestor,
    Provider,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    pub agreement_id: String,
    pub demand: Demand,
    pub offer: Offer,
    pub valid_to: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_date: Option<DateTime<Utc>>,
    pub state: AgreementState,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_signature: Option<String>,
}

/// An event of `GET /agreementEvents`; both parties see the same ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "eventType")]
pub enum AgreementOperationEvent {
    #[serde(rename_all = "camelCase")]
    AgreementApprovedEvent {
        event_date: DateTime<Utc>,
        agreement_id: String,
    },
    #[serde(rename_all = "camelCase")]
    AgreementRejectedEvent {
        event_date: DateTime<Utc>,
        agreement_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    #[serde(rename_all = "camelCase")]
    AgreementCancelledEvent {
        event_date: DateTime<Utc>,
        agreement_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    #[serde(rename_all = "camelCase")]
    AgreementTerminatedEvent {
        event_date: DateTime<Utc>,
        agreement_id: String,
        terminator: Terminator,
        signature: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
}

impl AgreementOperationEvent {
    pub fn event_date(&self) -> DateTime<Utc> {
        match self {
            AgreementOperationEvent::AgreementApprovedEvent { event_date, .. }
            | AgreementOperationEvent::AgreementRejectedEvent { event_date, .. }
            | AgreementOperationEvent::AgreementCancelledEvent { event_date, .. }
            | AgreementOperationEvent::AgreementTerminatedEvent { event_date, .. } => *event_date,
        }
    }

    pub fn agreement_id(&self) -> &str {
        match self {
            AgreementOperationEvent::AgreementApprovedEvent { agreement_id, .. }
            | AgreementOperationEvent::AgreementRejectedEvent { agreement_id, .. }
            | AgreementOperationEvent::AgreementCancelledEvent { agreement_id, .. }
            | AgreementOperationEvent::AgreementTerminatedEvent { agreement_id, .. } => {
                agreement_id
            }
        }
    }
}

/// One row of `GET /agreements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementListEntry {
    pub id: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default)]
    pub approved_date: Option<DateTime<Utc>>,
    /// `Requestor` or `Provider`.
    pub role: String,
}

// ---------------------------------------------------------------------------
// Between the market services of two nodes.
// ---------------------------------------------------------------------------

/// The market's public bus endpoint; other nodes reach it as
/// What a market scan iterates over (`type` of [`NewScan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanType {
    Offer,
    Demand,
}

/// Body of `POST /scan`: a read-only iterator over the market, answered with
/// the iterator id. `GET /scan/{id}/events` then returns bare [`Offer`]s (or
/// [`Demand`]s), not events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewScan {
    #[serde(rename = "type")]
    pub scan_type: ScanType,
    /// Optional filter over the scanned items' properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<String>,
    /// Seconds an unused iterator is kept (each use starts the period anew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// `/net/<nodeId>/public/market`, and the caller is authenticated by the net.
pub const MARKET_PUBLIC_SERVICE: &str = "/public/market";

/// The gossip topic of the offers of one subnet (`None`: offers without one).
pub fn offers_topic(subnet: Option<&str>) -> String {
    match subnet {
        Some(subnet) => format!("golem-market/offers/subnet/{subnet}"),
        None => "golem-market/offers/no-subnet".to_string(),
    }
}

/// An offer as it travels between nodes: the offer plus its expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedOffer {
    pub offer: Offer,
    pub expiration: DateTime<Utc>,
}

/// An unsubscribed offer, remembered until it would have expired so that a
/// replayed announcement cannot bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferUnsubscribed {
    pub offer_id: String,
    pub expiration: DateTime<Utc>,
}

/// Payload of a broadcast on an [`offers_topic`]. Receivers drop every offer
/// whose `providerId` is not the broadcast's (signed) origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferBroadcast {
    pub offers: Vec<PublishedOffer>,
    #[serde(default)]
    pub unsubscribed: Vec<OfferUnsubscribed>,
}

/// Ask a node for its own live offers and its unsubscriptions, of every
/// subnet (a node asks each peer it newly connects to, so it need not wait
/// for the periodic re-announcement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetOwnOffers {}
impl BusMessage for GetOwnOffers {
    const NAME: &'static str = "GetOwnOffers";
    type Reply = OfferBroadcast;
}

/// Requestor → provider: the first counter-proposal of a negotiation. The
/// provider has never seen `initialProposalId` (the offer as the requestor's
/// market matched it) and records it, then `proposal` as a Draft countering it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitialProposalReceived {
    pub offer_id: String,
    pub demand_id: String,
    pub initial_proposal_id: String,
    pub initial_timestamp: DateTime<Utc>,
    pub proposal: Proposal,
}
impl BusMessage for InitialProposalReceived {
    const NAME: &'static str = "InitialProposalReceived";
    type Reply = ();
}

/// Either party → the other: a counter to `proposal.prevProposalId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProposalReceived {
    pub proposal: Proposal,
}
impl BusMessage for ProposalReceived {
    const NAME: &'static str = "ProposalReceived";
    type Reply = ();
}

/// Either party → the issuer of `proposalId`: it is rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProposalRejected {
    pub proposal_id: String,
    #[serde(default)]
    pub reason: Option<Reason>,
}
impl BusMessage for ProposalRejected {
    const NAME: &'static str = "ProposalRejected";
    type Reply = ();
}

/// Requestor → provider: a confirmed agreement awaiting approval. The provider
/// rebuilds the demand and offer snapshots from its own proposal records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementReceived {
    pub agreement_id: String,
    /// The provider's Draft the agreement promotes.
    pub proposal_id: String,
    pub offer_id: String,
    pub valid_to: DateTime<Utc>,
    pub timestamp: DateTime<Utc>,
}
impl BusMessage for AgreementReceived {
    const NAME: &'static str = "AgreementReceived";
    type Reply = ();
}

/// Provider → requestor: approved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementApproved {
    pub agreement_id: String,
    pub approved_date: DateTime<Utc>,
}
impl BusMessage for AgreementApproved {
    const NAME: &'static str = "AgreementApproved";
    type Reply = ();
}

/// Provider → requestor: rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementRejected {
    pub agreement_id: String,
    #[serde(default)]
    pub reason: Option<Reason>,
}
impl BusMessage for AgreementRejected {
    const NAME: &'static str = "AgreementRejected";
    type Reply = ();
}

/// Requestor → provider: cancelled before approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementCancelled {
    pub agreement_id: String,
    #[serde(default)]
    pub reason: Option<Reason>,
}
impl BusMessage for AgreementCancelled {
    const NAME: &'static str = "AgreementCancelled";
    type Reply = ();
}

/// Either party → the other: terminated. `terminator` says which side the
/// caller speaks for (both sides live on one node when it trades with itself);
/// the receiver checks that the caller is that party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementTerminated {
    pub agreement_id: String,
    pub terminator: Terminator,
    pub terminated_date: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<Reason>,
}
impl BusMessage for AgreementTerminated {
    const NAME: &'static str = "AgreementTerminated";
    type Reply = ();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node() -> NodeId {
        "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
            .parse()
            .unwrap()
    }

    #[test]
    fn events_carry_event_type_and_camel_case() {
        let date: DateTime<Utc> = "2026-01-02T03:04:05.123Z".parse().unwrap();
        let event = MarketEvent::ProposalEvent {
            event_date: date,
            proposal: Proposal {
                properties: Properties::from_json(serde_json::json!({"a": {"b": 1}})).unwrap(),
                constraints: "()".into(),
                proposal_id: "p".into(),
                issuer_id: node(),
                state: ProposalState::Initial,
                timestamp: date,
                prev_proposal_id: None,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["eventType"], "ProposalEvent");
        assert_eq!(json["eventDate"], "2026-01-02T03:04:05.123Z");
        assert_eq!(json["proposal"]["proposalId"], "p");
        assert_eq!(json["proposal"]["state"], "Initial");
        assert_eq!(json["proposal"]["properties"]["a.b"], 1);
        assert!(json["proposal"].get("prevProposalId").is_none());
        let back: MarketEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);

        let rejected = MarketEvent::ProposalRejectedEvent {
            event_date: date,
            proposal_id: "p".into(),
            reason: Some(Reason::new("no")),
        };
        let json = serde_json::to_value(&rejected).unwrap();
        assert_eq!(json["eventType"], "ProposalRejectedEvent");
        assert_eq!(json["proposalId"], "p");
        assert_eq!(json["reason"]["message"], "no");
    }

    #[test]
    fn reason_keeps_extra_members() {
        let reason: Reason = serde_json::from_value(serde_json::json!({
            "message": "Successfully finished all work",
            "golem.requestor.code": "Success"
        }))
        .unwrap();
        assert_eq!(reason.message, "Successfully finished all work");
        assert_eq!(reason.extra["golem.requestor.code"], "Success");
        let json = serde_json::to_value(&reason).unwrap();
        assert_eq!(json["golem.requestor.code"], "Success");
    }

    #[test]
    fn new_scan_uses_the_original_field_names() {
        let scan: NewScan = serde_json::from_value(serde_json::json!({
            "type": "offer",
            "constraints": "(golem.runtime.name=vm)",
            "timeout": 30
        }))
        .unwrap();
        assert_eq!(scan.scan_type, ScanType::Offer);
        assert_eq!(scan.timeout, Some(30));
        let bare: NewScan = serde_json::from_value(serde_json::json!({"type": "demand"})).unwrap();
        assert_eq!(bare.scan_type, ScanType::Demand);
        assert_eq!(bare.constraints, None);
        assert!(serde_json::from_value::<NewScan>(serde_json::json!({"type": "Offer"})).is_err());
    }

    #[test]
    fn terminated_event_shape() {
        let date: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
        let event = AgreementOperationEvent::AgreementTerminatedEvent {
            event_date: date,
            agreement_id: "a".into(),
            terminator: Terminator::Provider,
            signature: String::new(),
            reason: None,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["eventType"], "AgreementTerminatedEvent");
        assert_eq!(json["agreementId"], "a");
        assert_eq!(json["terminator"], "Provider");
    }
}
