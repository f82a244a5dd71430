//! Typed calls of the Golem Market API (`/market-api/v1`) on [`GolemClient`].

use golem_model::market::{
    Agreement, AgreementListEntry, AgreementOperationEvent, AgreementProposal, Demand,
    DemandOfferBase, MarketEvent, Offer, Proposal, Reason,
};

use crate::{ClientError, GolemClient};

const MARKET: &str = "/market-api/v1";

/// Which side of the market a subscription is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Offers,
    Demands,
}

impl Side {
    fn path(self) -> &'static str {
        match self {
            Side::Offers => "offers",
            Side::Demands => "demands",
        }
    }
}

/// Query-string encoding of a value (ids and timestamps may hold `+` and `:`).
fn encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl GolemClient {
    /// `POST /offers`: the new subscription id.
    pub async fn subscribe_offer(&self, offer: &DemandOfferBase) -> Result<String, ClientError> {
        self.post(&format!("{MARKET}/offers"), offer).await
    }

    /// `POST /demands`: the new subscription id.
    pub async fn subscribe_demand(&self, demand: &DemandOfferBase) -> Result<String, ClientError> {
        self.post(&format!("{MARKET}/demands"), demand).await
    }

    pub async fn offers(&self) -> Result<Vec<Offer>, ClientError> {
        self.get(&format!("{MARKET}/offers")).await
    }

    pub async fn demands(&self) -> Result<Vec<Demand>, ClientError> {
        self.get(&format!("{MARKET}/demands")).await
    }

    pub async fn unsubscribe(&self, side: Side, subscription_id: &str) -> Result<(), ClientError> {
        self.delete(&format!("{MARKET}/{}/{subscription_id}", side.path()))
            .await
    }

    /// Long-poll a subscription's events for up to `timeout_seconds`.
    pub async fn market_events(
        &self,
        side: Side,
        subscription_id: &str,
        timeout_seconds: f64,
        max_events: u32,
    ) -> Result<Vec<MarketEvent>, ClientError> {
        self.get(&format!(
            "{MARKET}/{}/{subscription_id}/events?timeout={timeout_seconds}&maxEvents={max_events}",
            side.path()
        ))
        .await
    }

    pub async fn proposal(
        &self,
        side: Side,
        subscription_id: &str,
        proposal_id: &str,
    ) -> Result<Proposal, ClientError> {
        self.get(&format!(
            "{MARKET}/{}/{subscription_id}/proposals/{proposal_id}",
            side.path()
        ))
        .await
    }

    /// Counter `proposal_id`: the id of our counter-proposal.
    pub async fn counter_proposal(
        &self,
        side: Side,
        subscription_id: &str,
        proposal_id: &str,
        proposal: &DemandOfferBase,
    ) -> Result<String, ClientError> {
        self.post(
            &format!(
                "{MARKET}/{}/{subscription_id}/proposals/{proposal_id}",
                side.path()
            ),
            proposal,
        )
        .await
    }

    pub async fn reject_proposal(
        &self,
        side: Side,
        subscription_id: &str,
        proposal_id: &str,
        reason: Option<&Reason>,
    ) -> Result<(), ClientError> {
        self.post_no_reply(
            &format!(
                "{MARKET}/{}/{subscription_id}/proposals/{proposal_id}/reject",
                side.path()
            ),
            reason,
        )
        .await
    }

    /// `POST /agreements`: the new agreement id.
    pub async fn create_agreement(
        &self,
        proposal: &AgreementProposal,
    ) -> Result<String, ClientError> {
        self.post(&format!("{MARKET}/agreements"), proposal).await
    }

    pub async fn agreement(&self, agreement_id: &str) -> Result<Agreement, ClientError> {
        self.get(&format!("{MARKET}/agreements/{agreement_id}"))
            .await
    }

    pub async fn agreements(&self) -> Result<Vec<AgreementListEntry>, ClientError> {
        self.get(&format!("{MARKET}/agreements")).await
    }

    pub async fn confirm_agreement(
        &self,
        agreement_id: &str,
        app_session_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let query = app_session_id
            .map(|session| format!("?appSessionId={}", encode(session)))
            .unwrap_or_default();
        self.post_no_reply::<()>(
            &format!("{MARKET}/agreements/{agreement_id}/confirm{query}"),
            None,
        )
        .await
    }

    /// Ok once approved; a 410 error when the agreement ended otherwise, 408 on timeout.
    pub async fn wait_for_approval(
        &self,
        agreement_id: &str,
        timeout_seconds: f64,
    ) -> Result<(), ClientError> {
        self.post_no_reply::<()>(
            &format!("{MARKET}/agreements/{agreement_id}/wait?timeout={timeout_seconds}"),
            None,
        )
        .await
    }

    pub async fn approve_agreement(
        &self,
        agreement_id: &str,
        app_session_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let query = app_session_id
            .map(|session| format!("?appSessionId={}", encode(session)))
            .unwrap_or_default();
        self.post_no_reply::<()>(
            &format!("{MARKET}/agreements/{agreement_id}/approve{query}"),
            None,
        )
        .await
    }

    pub async fn reject_agreement(
        &self,
        agreement_id: &str,
        reason: Option<&Reason>,
    ) -> Result<(), ClientError> {
        self.post_no_reply(
            &format!("{MARKET}/agreements/{agreement_id}/reject"),
            reason,
        )
        .await
    }

    pub async fn cancel_agreement(
        &self,
        agreement_id: &str,
        reason: Option<&Reason>,
    ) -> Result<(), ClientError> {
        self.post_no_reply(
            &format!("{MARKET}/agreements/{agreement_id}/cancel"),
            reason,
        )
        .await
    }

    pub async fn terminate_agreement(
        &self,
        agreement_id: &str,
        reason: Option<&Reason>,
    ) -> Result<(), ClientError> {
        self.post_no_reply(
            &format!("{MARKET}/agreements/{agreement_id}/terminate"),
            reason,
        )
        .await
    }

    /// Long-poll `agreementEvents` strictly after `after_timestamp` (RFC 3339).
    pub async fn agreement_events(
        &self,
        after_timestamp: Option<&str>,
        timeout_seconds: f64,
        max_events: u32,
        app_session_id: Option<&str>,
    ) -> Result<Vec<AgreementOperationEvent>, ClientError> {
        let mut path =
            format!("{MARKET}/agreementEvents?timeout={timeout_seconds}&maxEvents={max_events}");
        if let Some(after) = after_timestamp {
            path.push_str(&format!("&afterTimestamp={}", encode(after)));
        }
        if let Some(session) = app_session_id {
            path.push_str(&format!("&appSessionId={}", encode(session)));
        }
        self.get(&path).await
    }

    /// `GET /agreements/{id}/terminate/reason`: who terminated it, when and why.
    pub async fn termination_reason(
        &self,
        agreement_id: &str,
    ) -> Result<AgreementOperationEvent, ClientError> {
        self.get(&format!(
            "{MARKET}/agreements/{agreement_id}/terminate/reason"
        ))
        .await
    }
}
