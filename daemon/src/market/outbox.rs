//! The market's use of the shared persisted outbox (`crate::outbox`): notices
//! for a counterparty (proposal rejected; agreement rejected, cancelled or
//! terminated) are stored in the `market` tree under `notice/<seq>` before the
//! step that queued them answers, tried at once, retried with a doubling
//! backoff ([`MarketConfig::outbox_retry_initial`] up to
//! [`MarketConfig::outbox_retry_max`]) until the counterparty answers, and
//! reloaded after a restart. A definite refusal (not a timeout nor an
//! unreachable node) drops the notice with a warning. The market actor drives
//! the deliveries (`outbox_delivery.rs`). Notices stored by older builds
//! (`outbox/<seq>`, a market-only format) are moved over at load.
//!
//! [`MarketConfig::outbox_retry_initial`]: super::settings::MarketConfig::outbox_retry_initial
//! [`MarketConfig::outbox_retry_max`]: super::settings::MarketConfig::outbox_retry_max

use golem_model::market::{
    AgreementCancelled, AgreementRejected, AgreementTerminated, ProposalRejected,
    MARKET_PUBLIC_SERVICE,
};
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};

use super::db::TREE;
use super::settings::MarketConfig;
use crate::outbox::{Outbox, OutboxEntry, RetryPolicy};
use crate::store;

const PREFIX: &str = "notice/";
/// Where builds before the shared outbox stored their notices.
const LEGACY_PREFIX: &str = "outbox/";

/// A notice for a counterparty's market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Notice {
    ProposalRejected(ProposalRejected),
    AgreementRejected(AgreementRejected),
    AgreementCancelled(AgreementCancelled),
    AgreementTerminated(AgreementTerminated),
}

macro_rules! notice_from {
    ($($variant:ident),*) => {$(
        impl From<$variant> for Notice {
            fn from(message: $variant) -> Self {
                Notice::$variant(message)
            }
        }
    )*};
}
notice_from!(
    ProposalRejected,
    AgreementRejected,
    AgreementCancelled,
    AgreementTerminated
);

impl Notice {
    /// The outbox entry delivering this notice to `node`'s market.
    pub(crate) fn entry(&self, node: NodeId) -> Result<OutboxEntry, GolemError> {
        let address = golem_bus::address::net_address(node, MARKET_PUBLIC_SERVICE);
        match self {
            Notice::ProposalRejected(message) => OutboxEntry::new(node, address, message),
            Notice::AgreementRejected(message) => OutboxEntry::new(node, address, message),
            Notice::AgreementCancelled(message) => OutboxEntry::new(node, address, message),
            Notice::AgreementTerminated(message) => OutboxEntry::new(node, address, message),
        }
    }
}

/// A notice as older builds stored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LegacyRecord {
    node: NodeId,
    notice: Notice,
}

/// How the market retries: its configured backoff, every notice in its own
/// attempt (an unreachable node never delays another's).
pub(crate) fn policy(config: &MarketConfig) -> RetryPolicy {
    RetryPolicy {
        initial: config.outbox_retry_initial,
        max: config.outbox_retry_max,
        in_flight_per_target: usize::MAX,
    }
}

/// An empty outbox (nothing loaded yet).
pub(crate) fn empty(config: &MarketConfig) -> Outbox {
    Outbox::new(TREE, PREFIX, policy(config))
}

/// The stored notices, older builds' ones moved over first.
pub(crate) fn load(tree: &sled::Tree, config: &MarketConfig) -> Result<Outbox, GolemError> {
    let mut outbox = Outbox::load(tree, TREE, PREFIX, policy(config))?;
    migrate_legacy(tree, &mut outbox)?;
    Ok(outbox)
}

/// Move notices of the market-only format into the shared one, in order.
fn migrate_legacy(tree: &sled::Tree, outbox: &mut Outbox) -> Result<(), GolemError> {
    let mut batch = sled::Batch::default();
    let mut staged = Vec::new();
    for item in tree.scan_prefix(LEGACY_PREFIX) {
        let (key, value) = item.map_err(store::StoreError::from)?;
        batch.remove(key.clone());
        match store::decode::<LegacyRecord>(TREE, &value) {
            Ok(record) => staged.push(outbox.stage(&mut batch, record.notice.entry(record.node)?)?),
            Err(error) => {
                tracing::warn!(%error, "dropping a corrupt market notice of an older build")
            }
        }
    }
    if staged.is_empty() {
        return Ok(());
    }
    tree.apply_batch(batch).map_err(store::StoreError::from)?;
    tracing::info!(
        moved = staged.len(),
        "market notices of an older build migrated"
    );
    staged.into_iter().for_each(|staged| outbox.add(staged));
    Ok(())
}

/// Store `notice` for `node` (the caller flushes before acknowledging) and
/// keep it due at once. A notice that cannot be stored is kept in memory only.
pub(crate) fn queue(outbox: &mut Outbox, tree: &sled::Tree, node: NodeId, notice: Notice) {
    let staged = notice.entry(node).and_then(|entry| {
        let mut batch = sled::Batch::default();
        let staged = outbox.stage(&mut batch, entry)?;
        if let Err(error) = tree.apply_batch(batch) {
            tracing::error!(%node, %error, "a market notice is kept in memory only");
        }
        Ok(staged)
    });
    match staged {
        Ok(staged) => outbox.add(staged),
        Err(error) => tracing::error!(%node, %error, "a market notice could not be queued"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn notices_of_older_builds_move_to_the_shared_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        let node = NodeId::from_bytes([3u8; 20]);
        let notice = Notice::ProposalRejected(ProposalRejected {
            proposal_id: "ab".into(),
            reason: None,
        });
        let legacy = LegacyRecord {
            node,
            notice: notice.clone(),
        };
        tree.insert(
            format!("{LEGACY_PREFIX}{:020}", 7),
            store::encode(&legacy).unwrap(),
        )
        .unwrap();
        let config = MarketConfig::default();
        let mut outbox = load(&tree, &config).unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(tree.scan_prefix(LEGACY_PREFIX).count(), 0);
        let due = outbox.due(chrono::Utc::now());
        assert_eq!(due[0].entry, notice.entry(node).unwrap());
        // Reloading finds it once, in the shared format.
        assert_eq!(load(&tree, &config).unwrap().len(), 1);
    }
}
