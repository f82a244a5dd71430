//! Ports: what one service reads of another's records, as traits, so that
//! services depend on these small contracts instead of on each other. The
//! owning service implements each port with a read-only view of what it has
//! committed (its sled records), never by reaching into its actor's state:
//! a read through a port takes no message and waits for no actor.
//!
//! - [`Agreements`]: the market's agreements (read by activity and payment).
//! - [`HostedActivities`]: the provider side of activity: which agreement an
//!   activity hosted here belongs to (read by payment, for debit notes).
//! - [`CreatedActivities`]: the requestor side of activity: the activities
//!   this node created (read by payment, to check incoming debit notes).
//! - [`OpenInvoices`]: payment's invoices that are not finished (read by the
//!   market, which keeps the agreement of such an invoice in its history).

use golem_model::market::Agreement;
use golem_model::{GolemError, NodeId};

/// Where activity and payment read agreements.
pub trait Agreements: Send + Sync + 'static {
    /// The agreement `id` as this node holds it (either party); NotFound otherwise.
    fn agreement(&self, id: &str) -> Result<Agreement, GolemError>;
}

/// Where payment finds the agreement of an activity this node hosts (debit
/// notes issued with only an activityId).
pub trait HostedActivities: Send + Sync + 'static {
    fn agreement_of_activity(&self, activity_id: &str) -> Option<String>;
}

/// Where payment learns which activities this node created as requestor.
pub trait CreatedActivities: Send + Sync + 'static {
    /// The agreement and provider of `activity_id`, when this node created it.
    fn created_activity(&self, activity_id: &str) -> Option<(String, NodeId)>;
}

/// Where the market learns that payment still needs an agreement.
pub trait OpenInvoices: Send + Sync + 'static {
    /// True when agreement `agreement_id` has an invoice that is neither
    /// settled, rejected nor cancelled.
    fn has_open_invoice(&self, agreement_id: &str) -> bool;
}
