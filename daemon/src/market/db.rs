//! The market's sled layout: every record is written through to the `market`
//! tree as the market actor changes it (and the tree flushed before a step is
//! acknowledged), so a restart reloads exactly what was there. Key layout (all
//! JSON values):
//!
//! | key | value |
//! |---|---|
//! | `offer/<offerId>` | [`StoredOffer`]: our own offers and those learnt from other nodes |
//! | `tombstone/<offerId>` | [`Tombstone`]: unsubscribed offers of other nodes, until their expiry |
//! | `demand/<demandId>` | [`StoredDemand`] |
//! | `proposal/<subscriptionId>/<proposalId>` | [`ProposalRecord`] |
//! | `agreement/<role>/<agreementId>` | [`AgreementRecord`] |
//! | `event/<subscriptionId>/<seq>` | a pending [`MarketEvent`], removed once delivered |
//! | `agreement-event/<seq>` | [`AgreementEventRecord`] |
//! | `agreement-ended/<ms>/<role>/<agreementId>` | nothing: a final agreement that left memory, by when it ended, for the history pruning |
//!
//! `<seq>` is a zero-padded counter, so a prefix scan returns events in order.

use chrono::{DateTime, Utc};
use golem_model::market::MarketEvent;
use golem_model::GolemError;
use serde::Serialize;

use super::records::{
    AgreementEventRecord, AgreementRecord, ProposalRecord, Role, StoredDemand, StoredOffer,
    Tombstone,
};
use crate::store::{self, StoreError};

pub(crate) const TREE: &str = "market";

fn sled_error(error: sled::Error) -> GolemError {
    StoreError::from(error).into()
}

fn offer_key(id: &str) -> String {
    format!("offer/{id}")
}
fn tombstone_key(id: &str) -> String {
    format!("tombstone/{id}")
}
fn demand_key(id: &str) -> String {
    format!("demand/{id}")
}
fn proposal_key(subscription_id: &str, proposal_id: &str) -> String {
    format!("proposal/{subscription_id}/{proposal_id}")
}
fn agreement_key(role: Role, id: &str) -> String {
    format!("agreement/{}/{id}", role.as_str())
}
fn event_key(subscription_id: &str, seq: u64) -> String {
    format!("event/{subscription_id}/{seq:020}")
}
const AGREEMENT_ENDED: &str = "agreement-ended/";
fn agreement_ended_key(ended: DateTime<Utc>, role: Role, id: &str) -> String {
    let millis = u64::try_from(ended.timestamp_millis()).unwrap_or(0);
    format!("{AGREEMENT_ENDED}{millis:020}/{}/{id}", role.as_str())
}
fn agreement_event_key(seq: u64) -> String {
    format!("agreement-event/{seq:020}")
}

/// The tree the market's records are written through to.
#[derive(Clone)]
pub(crate) struct Db {
    pub tree: sled::Tree,
}

impl Db {
    fn put<T: Serialize>(&self, key: String, value: &T) -> Result<(), GolemError> {
        let bytes = store::encode(value)?;
        self.tree.insert(key, bytes).map_err(sled_error)?;
        Ok(())
    }

    fn delete(&self, key: String) -> Result<(), GolemError> {
        self.tree.remove(key).map_err(sled_error)?;
        Ok(())
    }

    pub(crate) fn scan<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, GolemError> {
        let mut records = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (key, value) = item.map_err(sled_error)?;
            let key = String::from_utf8_lossy(&key).into_owned();
            match store::decode::<T>(TREE, &value) {
                Ok(record) => records.push((key, record)),
                Err(error) => {
                    tracing::warn!(%key, %error, "skipping a corrupt market record")
                }
            }
        }
        Ok(records)
    }

    pub(crate) fn save_offer(&self, offer: &StoredOffer) -> Result<(), GolemError> {
        self.put(offer_key(&offer.published.offer.offer_id), offer)
    }
    pub(crate) fn delete_offer(&self, id: &str) -> Result<(), GolemError> {
        self.delete(offer_key(id))
    }
    pub(crate) fn save_tombstone(&self, id: &str, tombstone: &Tombstone) -> Result<(), GolemError> {
        self.put(tombstone_key(id), tombstone)
    }
    pub(crate) fn delete_tombstone(&self, id: &str) -> Result<(), GolemError> {
        self.delete(tombstone_key(id))
    }
    pub(crate) fn save_demand(&self, demand: &StoredDemand) -> Result<(), GolemError> {
        self.put(demand_key(&demand.demand.demand_id), demand)
    }
    pub(crate) fn save_proposal(&self, record: &ProposalRecord) -> Result<(), GolemError> {
        self.put(
            proposal_key(&record.subscription_id, &record.proposal.proposal_id),
            record,
        )
    }
    pub(crate) fn delete_proposal(
        &self,
        subscription_id: &str,
        proposal_id: &str,
    ) -> Result<(), GolemError> {
        self.delete(proposal_key(subscription_id, proposal_id))
    }
    pub(crate) fn delete_demand(&self, id: &str) -> Result<(), GolemError> {
        self.delete(demand_key(id))
    }

    pub(crate) fn delete_agreement_event(&self, seq: u64) -> Result<(), GolemError> {
        self.delete(agreement_event_key(seq))
    }

    /// An agreement record from sled (those compacted out of memory).
    pub(crate) fn load_agreement(
        &self,
        role: Role,
        id: &str,
    ) -> Result<Option<AgreementRecord>, GolemError> {
        match self.tree.get(agreement_key(role, id)).map_err(sled_error)? {
            Some(bytes) => Ok(Some(store::decode(TREE, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Note a final agreement that left memory, for the history pruning;
    /// true when it was not noted before (every start notes the final
    /// agreements again: those noted are read, not written twice).
    pub(crate) fn schedule_agreement_prune(
        &self,
        ended: DateTime<Utc>,
        role: Role,
        id: &str,
    ) -> Result<bool, GolemError> {
        let key = agreement_ended_key(ended, role, id);
        if self.tree.contains_key(&key).map_err(sled_error)? {
            return Ok(false);
        }
        self.tree.insert(key, &[]).map_err(sled_error)?;
        Ok(true)
    }

    /// How many final agreements the history schedule holds.
    pub(crate) fn count_scheduled_agreements(&self) -> Result<usize, GolemError> {
        let mut count = 0;
        for item in self.tree.scan_prefix(AGREEMENT_ENDED).keys() {
            item.map_err(sled_error)?;
            count += 1;
        }
        Ok(count)
    }

    /// The oldest final agreements of the history schedule, at most `most`:
    /// the first `oldest` of them whatever their age, then those that ended
    /// before `cutoff` (the schedule's key, role, id).
    pub(crate) fn agreements_to_prune(
        &self,
        cutoff: DateTime<Utc>,
        oldest: usize,
        most: usize,
    ) -> Result<Vec<(sled::IVec, Role, String)>, GolemError> {
        let end = agreement_ended_key(cutoff, Role::Provider, "");
        let end = &end[..end.len() - "/Provider/".len()];
        let mut ended = Vec::new();
        for (rank, item) in self
            .tree
            .scan_prefix(AGREEMENT_ENDED)
            .keys()
            .take(most)
            .enumerate()
        {
            let key = item.map_err(sled_error)?;
            let text = String::from_utf8_lossy(&key).into_owned();
            if rank >= oldest && text.as_str() >= end {
                break;
            }
            let mut parts = text[AGREEMENT_ENDED.len()..].splitn(3, '/').skip(1);
            let role = match parts.next() {
                Some("Requestor") => Role::Requestor,
                Some("Provider") => Role::Provider,
                _ => continue,
            };
            let Some(id) = parts.next() else { continue };
            ended.push((key.clone(), role, id.to_string()));
        }
        Ok(ended)
    }

    /// Remove a final agreement and its schedule entry, in one batch.
    pub(crate) fn prune_agreement(
        &self,
        schedule_key: &[u8],
        role: Role,
        id: &str,
    ) -> Result<(), GolemError> {
        let mut batch = sled::Batch::default();
        batch.remove(schedule_key);
        batch.remove(agreement_key(role, id).as_bytes());
        self.tree.apply_batch(batch).map_err(sled_error)
    }

    pub(crate) fn save_agreement(&self, record: &AgreementRecord) -> Result<(), GolemError> {
        self.put(
            agreement_key(record.role, &record.agreement.agreement_id),
            record,
        )
    }
    pub(crate) fn save_event(
        &self,
        subscription_id: &str,
        seq: u64,
        event: &MarketEvent,
    ) -> Result<(), GolemError> {
        self.put(event_key(subscription_id, seq), event)
    }
    pub(crate) fn delete_event(&self, subscription_id: &str, seq: u64) -> Result<(), GolemError> {
        self.delete(event_key(subscription_id, seq))
    }
    pub(crate) fn save_agreement_event(
        &self,
        record: &AgreementEventRecord,
    ) -> Result<(), GolemError> {
        self.put(agreement_event_key(record.seq), record)
    }
}
