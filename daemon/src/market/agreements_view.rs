//! The market's agreements as other services read them: a read-only view of
//! the records committed to the `market` tree (a clone of the tree; each read
//! is one lookup and one decode by id). It never sends a message to the
//! market actor, so activity and payment never wait for it, and it answers
//! the same while the actor restarts.

use golem_model::market::Agreement;
use golem_model::{GolemError, NodeId};

use super::db::Db;
use super::errors::agreement_not_found;
use super::ownership::is_party;
use super::records::{AgreementRecord, Role};

/// Read-only agreements of this node (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct AgreementsView {
    db: Db,
}

impl AgreementsView {
    pub(crate) fn new(tree: sled::Tree) -> AgreementsView {
        AgreementsView { db: Db { tree } }
    }

    /// Our record of agreement `id`, the requestor's first when we hold both.
    pub(crate) fn record(&self, owner: NodeId, id: &str) -> Result<AgreementRecord, GolemError> {
        for role in [Role::Requestor, Role::Provider] {
            if let Some(record) = self.db.load_agreement(role, id)? {
                if is_party(&record, owner) {
                    return Ok(record);
                }
            }
        }
        Err(agreement_not_found(id))
    }

    /// Agreement `id` if `owner` is one of its parties here; NotFound otherwise.
    pub fn agreement(&self, owner: NodeId, id: &str) -> Result<Agreement, GolemError> {
        self.record(owner, id).map(|record| record.agreement)
    }

    pub(crate) async fn flush(&self) -> Result<(), sled::Error> {
        crate::store::flush_tree(self.db.tree.clone()).await
    }
}
