//! Allocations (the requestor's budgets) and demand decorations: created from
//! yapapi's and golem-js's bodies, charged once per accepted amount
//! ([`PaymentActor::charge`]), released by the client, by `payment
//! release-allocations`, or by the actor's expiry timer once their timeout
//! passed. A released allocation can no longer be charged; it leaves memory
//! with the retention sweep and is still answered (as released) from sled.

use chrono::{DateTime, Utc};
use golem_model::ids::new_id;
use golem_model::payment::*;
use golem_model::{ErrorCode, GolemError};

use super::actor::PaymentActor;
use super::state::{AgreementCharges, AllocationRecord, State, Writes};
use super::{Platform, DEFAULT_PLATFORM};

/// An allocation is expired once its timeout has passed.
pub(super) fn is_expired(allocation: &Allocation, now: DateTime<Utc>) -> bool {
    allocation.timeout.is_some_and(|timeout| timeout <= now)
}

impl PaymentActor {
    /// Create an allocation from the client's body (yapapi's and golem-js's shapes).
    pub(super) fn create_allocation(
        &mut self,
        body: &serde_json::Value,
    ) -> Result<Allocation, GolemError> {
        let field = |name: &str| body.get(name).filter(|value| !value.is_null());
        let platform = match field("paymentPlatform") {
            None => Platform::parse(DEFAULT_PLATFORM)?,
            Some(serde_json::Value::String(name)) if name.is_empty() => {
                Platform::parse(DEFAULT_PLATFORM)?
            }
            Some(serde_json::Value::String(name)) => Platform::parse(name)?,
            Some(serde_json::Value::Object(parts)) => {
                let part = |key: &str| parts.get(key).and_then(|value| value.as_str());
                Platform::from_parts(part("driver"), part("network"), part("token"))?
            }
            Some(other) => {
                return Err(GolemError::bad_request(format!(
                    "paymentPlatform must be a string or {{driver, network, token}}, got {other}"
                )))
            }
        };
        let our = self.deps.our_address();
        let address = match field("address") {
            None => our.clone(),
            Some(serde_json::Value::String(address)) if address.is_empty() => our.clone(),
            Some(serde_json::Value::String(address)) if address.eq_ignore_ascii_case(&our) => {
                our.clone()
            }
            Some(other) => {
                return Err(GolemError::bad_request(format!(
                    "address {other} is not this node's address {our}"
                )))
            }
        };
        let total = parse_amount(
            "totalAmount",
            field("totalAmount").unwrap_or(&serde_json::Value::Null),
        )?;
        let timeout = match field("timeout") {
            None => None,
            Some(value) => Some(
                serde_json::from_value::<DateTime<Utc>>(value.clone()).map_err(|error| {
                    GolemError::bad_request(format!("invalid timeout {value}: {error}"))
                })?,
            ),
        };
        let make_deposit = field("makeDeposit")
            .and_then(|value| value.as_bool())
            .unwrap_or(false);
        let now = Utc::now();
        let allocation = Allocation {
            allocation_id: new_id(),
            address,
            payment_platform: platform.name,
            total_amount: total,
            spent_amount: Decimal::ZERO,
            remaining_amount: total,
            timestamp: now,
            timeout,
            make_deposit,
            created_ts: now,
            updated_ts: now,
        };
        let record = AllocationRecord {
            allocation: allocation.clone(),
            released: false,
        };
        let mut writes = Writes::new();
        writes.put(format!("alloc/{}", allocation.allocation_id), &record)?;
        self.deps.commit(writes)?;
        self.state
            .allocations
            .insert(allocation.allocation_id.clone(), record);
        Ok(allocation)
    }

    /// `PUT /allocations/{id}`: a new `totalAmount` (never below what is
    /// spent) and/or a new `timeout` (in the future) for a live allocation.
    pub(super) fn amend_allocation(
        &mut self,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<Allocation, GolemError> {
        let Some(fields) = body.as_object() else {
            return Err(GolemError::bad_request(
                "the allocation update must be a JSON object with totalAmount and/or timeout",
            ));
        };
        let field = |name: &str| fields.get(name).filter(|value| !value.is_null());
        let mut allocation = self.allocation_for_client(id)?;
        if let Some(value) = field("totalAmount") {
            let total = parse_amount("totalAmount", value)?;
            if total < allocation.spent_amount {
                return Err(GolemError::bad_request(format!(
                    "totalAmount {total} is below what allocation {id} has spent ({}); it cannot go below that",
                    allocation.spent_amount
                )));
            }
            allocation.total_amount = total.normalize();
            allocation.remaining_amount = (total - allocation.spent_amount).normalize();
        }
        if let Some(value) = field("timeout") {
            let timeout =
                serde_json::from_value::<DateTime<Utc>>(value.clone()).map_err(|error| {
                    GolemError::bad_request(format!("invalid timeout {value}: {error}"))
                })?;
            if timeout <= Utc::now() {
                return Err(GolemError::bad_request(format!(
                    "timeout {} is in the past; release the allocation instead",
                    timeout.to_rfc3339()
                )));
            }
            allocation.timeout = Some(timeout);
        }
        allocation.updated_ts = Utc::now();
        let record = AllocationRecord {
            allocation: allocation.clone(),
            released: false,
        };
        let mut writes = Writes::new();
        writes.put(format!("alloc/{id}"), &record)?;
        self.deps.commit(writes)?;
        self.state.allocations.insert(id.to_string(), record);
        Ok(allocation)
    }

    /// Live allocations, oldest first.
    pub(super) fn allocations(&self) -> Vec<Allocation> {
        let now = Utc::now();
        let mut list: Vec<Allocation> = self
            .state
            .allocations
            .values()
            .filter(|record| !record.released && !is_expired(&record.allocation, now))
            .map(|record| record.allocation.clone())
            .collect();
        list.sort_by_key(|allocation| allocation.created_ts);
        list
    }

    /// An allocation record: memory, else sled (released ones leave memory).
    fn allocation_record(&self, id: &str) -> Result<Option<AllocationRecord>, GolemError> {
        match self.state.allocations.get(id) {
            Some(record) => Ok(Some(record.clone())),
            None => self.deps.read(&format!("alloc/{id}")),
        }
    }

    pub(super) fn allocation(&self, id: &str) -> Result<Allocation, GolemError> {
        live_allocation(self.allocation_record(id)?, id)
    }

    /// `GET /allocations/{id}`: as the original, a released or expired
    /// allocation is Not Found there (its message still says why); charging
    /// it stays Gone.
    pub(super) fn allocation_for_client(&self, id: &str) -> Result<Allocation, GolemError> {
        self.allocation(id).map_err(|error| match error.code {
            ErrorCode::Gone => GolemError::not_found(error.message),
            _ => error,
        })
    }

    /// Release: what is left is freed; the allocation can no longer be charged.
    pub(super) fn release_allocation(&mut self, id: &str) -> Result<(), GolemError> {
        let Some(mut record) = self.allocation_record(id)? else {
            return Err(GolemError::not_found(format!("unknown allocation {id}")));
        };
        if record.released {
            return Ok(());
        }
        record.released = true;
        record.allocation.updated_ts = Utc::now();
        let mut writes = Writes::new();
        writes.put(format!("alloc/{id}"), &record)?;
        self.deps.commit(writes)?;
        self.state.allocations.insert(id.to_string(), record);
        Ok(())
    }

    /// The expiry timer: release allocations whose timeout passed.
    pub(super) fn release_expired(&mut self) {
        let now = Utc::now();
        let expired: Vec<String> = self
            .state
            .allocations
            .values()
            .filter(|record| !record.released && is_expired(&record.allocation, now))
            .map(|record| record.allocation.allocation_id.clone())
            .collect();
        for id in expired {
            match self.release_allocation(&id) {
                Ok(()) => tracing::info!(allocation_id = %id, "allocation expired; released"),
                Err(error) => {
                    tracing::warn!(allocation_id = %id, %error.message, "releasing an expired allocation failed")
                }
            }
        }
    }

    /// Release every live allocation (`payment release-allocations`); returns their ids.
    pub(super) fn release_all_allocations(&mut self) -> Result<Vec<String>, GolemError> {
        let ids: Vec<String> = self
            .allocations()
            .into_iter()
            .map(|allocation| allocation.allocation_id)
            .collect();
        for id in &ids {
            self.release_allocation(id)?;
        }
        Ok(ids)
    }

    /// Properties and constraints a demand needs to be paid from `ids`.
    pub(super) fn demand_decorations(
        &self,
        ids: &[String],
    ) -> Result<MarketDecoration, GolemError> {
        let mut properties = Vec::new();
        let mut constraints = Vec::new();
        for id in ids {
            let allocation = self.allocation(id)?;
            let key = format!(
                "golem.com.payment.platform.{}.address",
                allocation.payment_platform
            );
            if properties
                .iter()
                .any(|property: &MarketProperty| property.key == key)
            {
                continue;
            }
            constraints.push(format!("({key}=*)"));
            properties.push(MarketProperty {
                key,
                value: allocation.address.clone(),
            });
        }
        properties.push(MarketProperty {
            key: "golem.com.payment.protocol.version".into(),
            value: PAYMENT_PROTOCOL_VERSION.into(),
        });
        constraints.push("(golem.com.payment.protocol.version>1)".into());
        Ok(MarketDecoration {
            properties,
            constraints,
        })
    }

    /// What an agreement has been charged: memory, else sled.
    fn charges_of(&self, agreement_id: &str) -> Result<AgreementCharges, GolemError> {
        match self.state.charges.get(agreement_id) {
            Some(charges) => Ok(charges.clone()),
            None => Ok(self
                .deps
                .read(&format!("charge/{agreement_id}"))?
                .unwrap_or_default()),
        }
    }

    /// Charge `allocation_id` so the agreement has cost what `update` makes of
    /// its charges; refuses over-budget. Writes go into `writes`; memory is
    /// changed by [`Charge::apply`] once they are committed.
    pub(super) fn charge(
        &self,
        writes: &mut Writes,
        agreement_id: &str,
        allocation_id: &str,
        platform: &str,
        payer_addr: &str,
        update: impl FnOnce(&mut AgreementCharges),
    ) -> Result<Charge, GolemError> {
        let allocation = self.allocation(allocation_id)?;
        if allocation.payment_platform != platform
            || !allocation.address.eq_ignore_ascii_case(payer_addr)
        {
            return Err(GolemError::bad_request(format!(
                "allocation {allocation_id} is for {} {}, the document is for {platform} {payer_addr}",
                allocation.payment_platform, allocation.address
            )));
        }
        let mut charges = self.charges_of(agreement_id)?;
        let before = charges.charged();
        update(&mut charges);
        let delta = charges.charged() - before;
        if delta > allocation.remaining_amount {
            return Err(GolemError::conflict(format!(
                "allocation {allocation_id} has {} left, accepting needs {delta}",
                allocation.remaining_amount
            )));
        }
        let mut allocation = allocation;
        allocation.spent_amount = (allocation.spent_amount + delta).normalize();
        allocation.remaining_amount = (allocation.remaining_amount - delta).normalize();
        allocation.updated_ts = Utc::now();
        charges.allocation_id = Some(allocation_id.to_string());
        let record = AllocationRecord {
            allocation,
            released: false,
        };
        writes.put(format!("alloc/{allocation_id}"), &record)?;
        writes.put(format!("charge/{agreement_id}"), &charges)?;
        Ok(Charge {
            agreement_id: agreement_id.to_string(),
            record,
            charges,
        })
    }
}

/// A charge written to a batch, applied to memory after the batch.
pub(super) struct Charge {
    agreement_id: String,
    record: AllocationRecord,
    charges: AgreementCharges,
}

impl Charge {
    pub fn apply(self, state: &mut State) {
        state
            .allocations
            .insert(self.record.allocation.allocation_id.clone(), self.record);
        state.charges.insert(self.agreement_id, self.charges);
    }
}

/// The allocation of `record` when it may still be charged.
fn live_allocation(record: Option<AllocationRecord>, id: &str) -> Result<Allocation, GolemError> {
    match record {
        None => Err(GolemError::not_found(format!("unknown allocation {id}"))),
        Some(record) if record.released => Err(GolemError::new(
            ErrorCode::Gone,
            match record.allocation.timeout {
                Some(at) if at <= record.allocation.updated_ts => format!(
                    "allocation {id} expired at {} and was released; create a new one",
                    at.to_rfc3339()
                ),
                _ => format!("allocation {id} was released"),
            },
        )),
        Some(record) if is_expired(&record.allocation, Utc::now()) => Err(GolemError::new(
            ErrorCode::Gone,
            format!(
                "allocation {id} expired at {}; create a new one",
                record
                    .allocation
                    .timeout
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default()
            ),
        )),
        Some(record) => Ok(record.allocation),
    }
}
