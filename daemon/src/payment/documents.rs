//! What debit notes and invoices share, written once over the [`Document`]
//! trait: looking one up (memory, else sled: finished ones leave memory),
//! listing, moving one forward through its statuses with its event, sending
//! an issued one to its recipient, receiving one from its issuer, and
//! rejecting a received one. The kinds add what differs (`debit_notes.rs`,
//! `invoices.rs`): how one is issued and accepted, what a duplicate is, and
//! the checks against the agreement's other documents.
//!
//! A document is only ever moved forward (`DocumentStatus::rank`), so a
//! repeated or late message changes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use golem_bus::Caller;
use golem_model::bus::BusMessage;
use golem_model::market::{Agreement, AgreementState};
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};

use super::actor::PaymentActor;
use super::outbox;
use super::state::{status_error, State, Writes};
use super::Platform;

/// The [`Document`] accessors whose fields have the same names on
/// `DebitNote` and `Invoice`; used inside both impls.
macro_rules! shared_document_fields {
    () => {
        fn agreement_id(&self) -> &str {
            &self.agreement_id
        }
        fn platform(&self) -> &str {
            &self.payment_platform
        }
        fn payer_addr(&self) -> &str {
            &self.payer_addr
        }
        fn issuer_id(&self) -> NodeId {
            self.issuer_id
        }
        fn recipient_id(&self) -> NodeId {
            self.recipient_id
        }
        fn timestamp(&self) -> DateTime<Utc> {
            self.timestamp
        }
        fn status(&self) -> DocumentStatus {
            self.status
        }
        fn set_status(&mut self, status: DocumentStatus) {
            self.status = status;
        }
    };
}
pub(super) use shared_document_fields;

/// What debit notes and invoices share in how they are stored, listed, sent
/// and moved through their statuses.
pub(super) trait Document:
    Clone + serde::Serialize + serde::de::DeserializeOwned + Send + 'static
{
    /// The kind's name in messages.
    const NAME: &'static str;
    /// Prefix of the kind's keys in the payment tree.
    const KEY_PREFIX: &'static str;
    /// One per agreement, found by agreement after it left memory (`inv-of/<agreement>`).
    const ONE_PER_AGREEMENT: bool;
    /// The event of its arrival at the recipient.
    const RECEIVED_EVENT: PaymentEventType;
    /// How it travels to its recipient.
    type Send: BusMessage<Reply = ()>;
    /// How its rejection travels back to its issuer.
    type Reject: BusMessage<Reply = ()>;
    /// The event of its cancellation by the issuer, at the recipient.
    const CANCELLED_EVENT: PaymentEventType;
    /// How its issuer's cancellation travels to the recipient.
    type Cancel: BusMessage<Reply = ()>;
    #[doc(hidden)]
    fn map(state: &State) -> &HashMap<String, Self>;
    #[doc(hidden)]
    fn map_mut(state: &mut State) -> &mut HashMap<String, Self>;
    fn id(&self) -> &str;
    fn agreement_id(&self) -> &str;
    fn platform(&self) -> &str;
    fn payer_addr(&self) -> &str;
    fn issuer_id(&self) -> NodeId;
    fn recipient_id(&self) -> NodeId;
    fn timestamp(&self) -> DateTime<Utc>;
    fn status(&self) -> DocumentStatus;
    fn set_status(&mut self, status: DocumentStatus);
    fn into_send(self) -> Self::Send;
    fn rejection(id: &str, rejection: Rejection) -> Self::Reject;
    fn cancellation(id: &str) -> Self::Cancel;
    /// The same document delivered again (not other contents under its id).
    fn same_as(&self, other: &Self) -> bool;
}

impl PaymentActor {
    /// The document with `id`: memory, else sled.
    pub(super) fn document<D: Document>(&self, id: &str) -> Result<D, GolemError> {
        self.find_document(id)?
            .ok_or_else(|| GolemError::not_found(format!("unknown {} {id}", D::NAME)))
    }

    pub(super) fn find_document<D: Document>(&self, id: &str) -> Result<Option<D>, GolemError> {
        match D::map(&self.state).get(id) {
            Some(document) => Ok(Some(document.clone())),
            None => self.deps.read(&format!("{}{id}", D::KEY_PREFIX)),
        }
    }

    /// The documents of kind `D` in memory (live and recently finished), oldest first.
    pub(super) fn documents<D: Document>(&self) -> Vec<D> {
        let mut list: Vec<D> = D::map(&self.state).values().cloned().collect();
        list.sort_by_key(|document| document.timestamp());
        list
    }

    /// Store `document` (write-through: one that left memory stays out of it).
    fn keep<D: Document>(&mut self, document: D, in_memory: bool) {
        if in_memory {
            D::map_mut(&mut self.state).insert(document.id().to_string(), document);
        }
    }

    /// Move a document forward to `status` (never backwards), with its event, in one write.
    pub(super) fn update_document<D: Document>(
        &mut self,
        id: &str,
        status: DocumentStatus,
        event: Option<(PaymentEventType, Option<Rejection>)>,
    ) -> Result<D, GolemError> {
        let in_memory = D::map(&self.state).contains_key(id);
        let mut document: D = self.document(id)?;
        if status.rank() <= document.status().rank() {
            return Ok(document);
        }
        document.set_status(status);
        let mut writes = Writes::new();
        writes.put(format!("{}{id}", D::KEY_PREFIX), &document)?;
        let event = match event {
            Some((event_type, rejection)) => {
                Some(self.stage_event(&mut writes, event_type, id, rejection)?)
            }
            None => None,
        };
        self.deps.commit(writes)?;
        self.keep(document.clone(), in_memory);
        if let Some(event) = event {
            self.add_event(event);
        }
        Ok(document)
    }

    /// Provider: what sending `id` delivers, when this node issued it.
    pub(super) fn document_to_send<D: Document>(
        &self,
        id: &str,
    ) -> Result<(NodeId, D::Send), GolemError> {
        let document: D = self.document(id)?;
        if document.issuer_id() != self.deps.node_id {
            return Err(GolemError::forbidden(format!(
                "{} {id} was not issued by this node",
                D::NAME
            )));
        }
        Ok((document.recipient_id(), document.into_send()))
    }

    /// Requestor: a document arrives from the agreement's provider. Checks
    /// common to both kinds, then `check` (the kind's own), then it is stored
    /// RECEIVED with its event.
    pub(super) fn receive_document<D: Document>(
        &mut self,
        caller: NodeId,
        mut document: D,
        check: impl FnOnce(&Self, &Agreement, &D) -> Result<(), GolemError>,
    ) -> Result<(), GolemError> {
        let me = self.deps.node_id;
        if document.recipient_id() != me || document.issuer_id() != caller {
            return Err(GolemError::forbidden(format!(
                "a {} is accepted only from its issuer, addressed to this node",
                D::NAME
            )));
        }
        let agreement = self.check_incoming(caller, document.agreement_id())?;
        let (platform, _, payer) = payment_terms(&agreement)?;
        if document.platform() != platform || !document.payer_addr().eq_ignore_ascii_case(&payer) {
            return Err(GolemError::bad_request(format!(
                "{} {} does not match the payment terms of agreement {}",
                D::NAME,
                document.id(),
                document.agreement_id()
            )));
        }
        if let Some(existing) = self.find_document::<D>(document.id())? {
            if existing.same_as(&document) {
                return Ok(()); // duplicate delivery
            }
            return Err(GolemError::conflict(format!(
                "{} {} was already received with other contents",
                D::NAME,
                document.id()
            )));
        }
        check(self, &agreement, &document)?;
        document.set_status(DocumentStatus::Received);
        let id = document.id().to_string();
        let mut writes = Writes::new();
        writes.put(format!("{}{id}", D::KEY_PREFIX), &document)?;
        self.index_document(&mut writes, &document)?;
        let event = self.stage_event(&mut writes, D::RECEIVED_EVENT, &id, None)?;
        self.deps.commit(writes)?;
        D::map_mut(&mut self.state).insert(id, document);
        self.add_event(event);
        Ok(())
    }

    /// Invoices are indexed by agreement (one per agreement, found after they left memory).
    pub(super) fn index_document<D: Document>(
        &self,
        writes: &mut Writes,
        document: &D,
    ) -> Result<(), GolemError> {
        if D::ONE_PER_AGREEMENT {
            writes.put(
                super::state::invoice_of_key(document.agreement_id()),
                &document.id().to_string(),
            )?;
        }
        Ok(())
    }

    /// Requestor: reject a received document; the issuer is told through the outbox.
    pub(super) fn reject_document<D: Document>(
        &mut self,
        id: &str,
        rejection: Rejection,
    ) -> Result<(), GolemError> {
        let in_memory = D::map(&self.state).contains_key(id);
        let mut document: D = self.document(id)?;
        if document.recipient_id() != self.deps.node_id {
            return Err(GolemError::forbidden(format!(
                "{} {id} was issued by this node; only its recipient may reject it",
                D::NAME
            )));
        }
        match document.status() {
            DocumentStatus::Rejected => return Ok(()),
            DocumentStatus::Received => {}
            status => return Err(status_error(D::NAME, id, status)),
        }
        document.set_status(DocumentStatus::Rejected);
        let mut writes = Writes::new();
        writes.put(format!("{}{id}", D::KEY_PREFIX), &document)?;
        let staged = outbox::stage(
            &mut self.outbox,
            &mut writes,
            document.issuer_id(),
            &D::rejection(id, rejection),
        )?;
        self.deps.commit(writes)?;
        self.keep(document, in_memory);
        self.outbox.add(staged);
        self.outbox_dirty = true;
        Ok(())
    }

    /// Issuer: whether `id` may be cancelled, and if so what tells its
    /// recipient (`None`: never sent, or already cancelled: nothing to tell).
    /// Only a document not yet accepted (issued, received or rejected) can be.
    pub(super) fn cancellation_of<D: Document>(
        &self,
        id: &str,
    ) -> Result<Option<(NodeId, D::Cancel)>, GolemError> {
        let document: D = self.document(id)?;
        if document.issuer_id() != self.deps.node_id {
            return Err(GolemError::forbidden(format!(
                "{} {id} was not issued by this node; only its issuer may cancel it",
                D::NAME
            )));
        }
        match document.status() {
            DocumentStatus::Issued | DocumentStatus::Cancelled => Ok(None),
            DocumentStatus::Received | DocumentStatus::Rejected => {
                Ok(Some((document.recipient_id(), D::cancellation(id))))
            }
            status => Err(GolemError::conflict(format!(
                "{} {id} is {status:?}: only a {} not yet accepted can be cancelled",
                D::NAME,
                D::NAME
            ))),
        }
    }

    /// Issuer: mark `id` cancelled (after its recipient agreed, when it was sent).
    pub(super) fn mark_cancelled<D: Document>(&mut self, id: &str) -> Result<(), GolemError> {
        let document: D = self.document(id)?;
        if matches!(
            document.status(),
            DocumentStatus::Accepted | DocumentStatus::Settled | DocumentStatus::Failed
        ) {
            return Err(GolemError::conflict(format!(
                "{} {id} was accepted meanwhile; it can no longer be cancelled",
                D::NAME
            )));
        }
        self.update_document::<D>(id, DocumentStatus::Cancelled, None)
            .map(drop)
    }

    /// Recipient: the issuer cancels `id`; refused once it was accepted.
    pub(super) fn cancelled_by_issuer<D: Document>(
        &mut self,
        caller: NodeId,
        id: &str,
    ) -> Result<(), GolemError> {
        let document: D = self.document(id)?;
        if document.issuer_id() != caller || document.recipient_id() != self.deps.node_id {
            return Err(GolemError::forbidden(format!(
                "{caller} is not the issuer of {} {id}",
                D::NAME
            )));
        }
        match document.status() {
            DocumentStatus::Cancelled => Ok(()),
            DocumentStatus::Received | DocumentStatus::Rejected => self
                .update_document::<D>(
                    id,
                    DocumentStatus::Cancelled,
                    Some((D::CANCELLED_EVENT, None)),
                )
                .map(drop),
            status => Err(GolemError::conflict(format!(
                "{} {id} is {status:?} here; the recipient refuses to cancel it",
                D::NAME
            ))),
        }
    }

    /// Provider: only the recipient of a document we issued may accept or reject it.
    pub(super) fn check_issued<D: Document>(
        &self,
        caller: NodeId,
        id: &str,
    ) -> Result<(), GolemError> {
        let document: D = self.document(id)?;
        if document.issuer_id() != self.deps.node_id || document.recipient_id() != caller {
            return Err(GolemError::forbidden(format!(
                "{caller} is not the recipient of {} {id}",
                D::NAME
            )));
        }
        Ok(())
    }

    /// The agreement, when this node is its provider and it may be billed.
    pub(super) fn provider_agreement(&self, agreement_id: &str) -> Result<Agreement, GolemError> {
        let agreement = self.deps.agreements.agreement(agreement_id)?;
        if agreement.offer.provider_id != self.deps.node_id {
            return Err(GolemError::forbidden(format!(
                "this node is not the provider of agreement {agreement_id}"
            )));
        }
        if !matches!(
            agreement.state,
            AgreementState::Approved | AgreementState::Terminated
        ) {
            return Err(GolemError::conflict(format!(
                "agreement {agreement_id} is {:?}; only approved or terminated agreements are billed",
                agreement.state
            )));
        }
        Ok(agreement)
    }

    /// The agreement, when this node is its requestor and `caller` its provider.
    pub(super) fn check_incoming(
        &self,
        caller: NodeId,
        agreement_id: &str,
    ) -> Result<Agreement, GolemError> {
        let agreement = self.deps.agreements.agreement(agreement_id)?;
        if agreement.demand.requestor_id != self.deps.node_id
            || agreement.offer.provider_id != caller
        {
            return Err(GolemError::forbidden(format!(
                "{caller} is not the provider of agreement {agreement_id} with this node"
            )));
        }
        Ok(agreement)
    }

    pub(super) fn caller_id(&self, caller: Caller) -> NodeId {
        match caller {
            Caller::Local => self.deps.node_id,
            Caller::Remote(node) => node,
        }
    }
}

/// The agreement's platform, payee (offer) and payer (demand) addresses.
pub(super) fn payment_terms(agreement: &Agreement) -> Result<(String, String, String), GolemError> {
    let address_key = |platform: &str| format!("golem.com.payment.platform.{platform}.address");
    let text = |value: Option<&serde_json::Value>| {
        value.and_then(|value| value.as_str()).map(String::from)
    };
    let chosen = text(
        agreement
            .demand
            .properties
            .get("golem.com.payment.chosen-platform"),
    );
    let platform = match chosen {
        Some(platform) => platform,
        None => Platform::known()
            .into_iter()
            .map(|platform| platform.name)
            .find(|platform| {
                agreement
                    .offer
                    .properties
                    .get(&address_key(platform))
                    .is_some()
                    && agreement
                        .demand
                        .properties
                        .get(&address_key(platform))
                        .is_some()
            })
            .ok_or_else(|| {
                GolemError::bad_request(format!(
                    "agreement {} names no payment platform both sides have",
                    agreement.agreement_id
                ))
            })?,
    };
    let payee = text(agreement.offer.properties.get(&address_key(&platform))).ok_or_else(|| {
        GolemError::bad_request(format!(
            "the offer of agreement {} has no {} address",
            agreement.agreement_id, platform
        ))
    })?;
    let payer =
        text(agreement.demand.properties.get(&address_key(&platform))).ok_or_else(|| {
            GolemError::bad_request(format!(
                "the demand of agreement {} has no {} address",
                agreement.agreement_id, platform
            ))
        })?;
    Ok((platform, payee, payer))
}
