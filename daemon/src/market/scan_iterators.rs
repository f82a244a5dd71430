//! The data of market scans (see `scan.rs`): the node's iterators, each
//! paging through offers or demands in the order they became known, the
//! offers fetched from peers, and the ended iterators remembered for their
//! 404/410 answers. Plain data over the market's state; no IO.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_model::constraints::{CompiledConstraint, Constraint};
use golem_model::market::{Demand, Offer, ScanType};
use golem_model::{ErrorCode, GolemError, NodeId};
use serde::Serialize;

use super::state::{DemandEntry, OfferEntry};

/// Idle lifetime of an iterator when `POST /scan` names none (the original
/// daemon's default; the spec's prose says 30 s).
pub(crate) const DEFAULT_IDLE_SECS: u64 = 300;
pub(crate) const MAX_IDLE_SECS: u64 = 24 * 3600;
/// Live iterators per node; more are refused until some end.
pub(crate) const MAX_LIVE_SCANS: usize = 10_000;
/// How long, and how many, ended iterators are remembered for 404/410 answers.
pub(crate) const ENDED_KEPT_SECS: i64 = 3600;
pub(crate) const MAX_ENDED_SCANS: usize = 10_000;

/// The items of one `GET /scan/{id}/events`: a bare JSON array of offers or
/// demands (not events).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ScanItems {
    Offers(Vec<Offer>),
    Demands(Vec<Demand>),
}

impl ScanItems {
    pub fn len(&self) -> usize {
        match self {
            ScanItems::Offers(offers) => offers.len(),
            ScanItems::Demands(demands) => demands.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) struct ScanIterator {
    pub(crate) owner: NodeId,
    pub(crate) scan_type: ScanType,
    /// For demands and for offers fetched from a peer.
    pub(crate) constraint: Option<Constraint>,
    /// The same constraint against the market's key table, for known offers.
    pub(crate) compiled: Option<CompiledConstraint>,
    /// Items up to this arrival number have been looked at.
    pub(crate) after: u64,
    pub(crate) idle: chrono::Duration,
    pub(crate) expires: DateTime<Utc>,
    pub(crate) peers: HashMap<NodeId, PeerScan>,
}

/// What a scan has fetched from one peer (`peerId`).
#[derive(Default)]
pub(crate) struct PeerScan {
    pub(crate) seen: HashSet<String>,
    pub(crate) pending: VecDeque<Offer>,
}

impl PeerScan {
    pub(crate) fn take(&mut self, max: usize) -> Vec<Offer> {
        let count = max.min(self.pending.len());
        self.pending.drain(..count).collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    Deleted,
    Expired,
}

pub(crate) struct EndedScan {
    owner: NodeId,
    ending: Ending,
    at: DateTime<Utc>,
}

/// The node's scan iterators, held by the market actor.
#[derive(Default)]
pub(crate) struct Scans {
    pub(crate) live: HashMap<String, ScanIterator>,
    pub(crate) ended: HashMap<String, EndedScan>,
}

fn not_found(id: &str) -> GolemError {
    GolemError::not_found(format!("scan iterator {id} not found"))
}

fn millis(date: DateTime<Utc>) -> String {
    date.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Scans {
    /// Move iterators unused past their timeout to the ended ones, and forget
    /// ended ones after an hour.
    pub(crate) fn sweep(&mut self, current: DateTime<Utc>) {
        let expired: Vec<String> = self
            .live
            .iter()
            .filter(|(_, scan)| scan.expires <= current)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.expire_if_due(&id, current);
        }
        let kept = chrono::Duration::seconds(ENDED_KEPT_SECS);
        self.ended.retain(|_, ended| ended.at + kept > current);
    }

    pub(crate) fn expire_if_due(&mut self, id: &str, current: DateTime<Utc>) {
        if self.live.get(id).is_none_or(|scan| scan.expires > current) {
            return;
        }
        if let Some(scan) = self.live.remove(id) {
            tracing::debug!(scan_id = id, "scan iterator expired");
            self.remember(id.to_string(), scan.owner, Ending::Expired, scan.expires);
        }
    }

    pub(crate) fn remember(
        &mut self,
        id: String,
        owner: NodeId,
        ending: Ending,
        at: DateTime<Utc>,
    ) {
        if self.ended.len() >= MAX_ENDED_SCANS {
            let oldest = self
                .ended
                .iter()
                .min_by_key(|(_, ended)| ended.at)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.ended.remove(&oldest);
            }
        }
        self.ended.insert(id, EndedScan { owner, ending, at });
    }

    /// The live iterator `id` of `owner`; 404 otherwise (an ended one says why).
    pub(crate) fn live_mut(
        &mut self,
        owner: NodeId,
        id: &str,
        current: DateTime<Utc>,
    ) -> Result<&mut ScanIterator, GolemError> {
        self.expire_if_due(id, current);
        match self.live.get(id).map(|scan| scan.owner == owner) {
            Some(true) => self.live.get_mut(id).ok_or_else(|| not_found(id)),
            Some(false) => Err(not_found(id)),
            None => Err(match self.ended.get(id) {
                Some(ended) if ended.owner == owner => match ended.ending {
                    Ending::Deleted => {
                        GolemError::not_found(format!("scan iterator {id} was deleted"))
                    }
                    Ending::Expired => GolemError::not_found(format!(
                        "scan iterator {id} expired at {} (unused for its timeout); begin a new scan",
                        millis(ended.at)
                    )),
                },
                _ => not_found(id),
            }),
        }
    }

    /// `DELETE /scan/{id}`: 410 for an iterator that already ended.
    pub(crate) fn end(
        &mut self,
        owner: NodeId,
        id: &str,
        current: DateTime<Utc>,
    ) -> Result<(), GolemError> {
        self.expire_if_due(id, current);
        match self.live.get(id).map(|scan| scan.owner == owner) {
            Some(true) => {
                self.live.remove(id);
                self.remember(id.to_string(), owner, Ending::Deleted, current);
                Ok(())
            }
            Some(false) => Err(not_found(id)),
            None => Err(match self.ended.get(id) {
                Some(ended) if ended.owner == owner => match ended.ending {
                    Ending::Deleted => GolemError::new(
                        ErrorCode::Gone,
                        format!("scan iterator {id} was already deleted"),
                    ),
                    Ending::Expired => GolemError::new(
                        ErrorCode::Gone,
                        format!("scan iterator {id} has expired at {}", millis(ended.at)),
                    ),
                },
                _ => not_found(id),
            }),
        }
    }
}

impl ScanIterator {
    /// Keep the iterator for its idle timeout after now, plus `hold` (the
    /// long-poll about to wait on it).
    pub(crate) fn touch(&mut self, current: DateTime<Utc>, hold: Duration) {
        let hold = chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::zero());
        self.expires = self.expires.max(current + self.idle + hold);
    }

    /// The next up to `max` live offers after the cursor that pass the filter.
    pub(crate) fn next_offers(
        &mut self,
        offers: &HashMap<String, OfferEntry>,
        arrivals: &std::collections::BTreeMap<u64, String>,
        current: DateTime<Utc>,
        max: usize,
    ) -> Vec<Offer> {
        let mut found = Vec::new();
        for (arrival, id) in arrivals.range(self.after + 1..) {
            if found.len() >= max {
                break;
            }
            self.after = *arrival;
            let Some(entry) = offers.get(id) else {
                continue;
            };
            if !entry.is_live(current) {
                continue;
            }
            if self
                .compiled
                .as_ref()
                .is_some_and(|compiled| !compiled.matches(&entry.form))
            {
                continue;
            }
            found.push(entry.stored.published.offer.clone());
        }
        found
    }

    /// The next up to `max` of the owner's live demands that pass the filter.
    pub(crate) fn next_demands(
        &mut self,
        demands: &HashMap<String, DemandEntry>,
        arrivals: &std::collections::BTreeMap<u64, String>,
        current: DateTime<Utc>,
        max: usize,
    ) -> Vec<Demand> {
        let mut found = Vec::new();
        for (arrival, id) in arrivals.range(self.after + 1..) {
            if found.len() >= max {
                break;
            }
            self.after = *arrival;
            let Some(entry) = demands.get(id) else {
                continue;
            };
            if !entry.is_live(current) || entry.stored.demand.requestor_id != self.owner {
                continue;
            }
            if self
                .constraint
                .as_ref()
                .is_some_and(|constraint| !constraint.matches(&entry.stored.demand.properties))
            {
                continue;
            }
            found.push(entry.stored.demand.clone());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::records::StoredOffer;
    use crate::market::records::{now, parse_constraint};
    use crate::market::state::State;
    use golem_model::market::PublishedOffer;
    use golem_model::properties::Properties;

    fn node(last: u8) -> NodeId {
        format!("0x{}{last:02x}", "11".repeat(19))
            .parse()
            .unwrap_or_else(|error| panic!("node id: {error}"))
    }

    fn offer_entry(id: &str, runtime: &str, expiration: DateTime<Utc>) -> OfferEntry {
        let properties = Properties::from_json(serde_json::json!({
            "golem.runtime.name": runtime,
            "golem.inf.cpu.threads": 4,
        }))
        .unwrap_or_else(|error| panic!("properties: {error}"));
        OfferEntry::new(StoredOffer {
            published: PublishedOffer {
                offer: Offer {
                    properties,
                    constraints: "()".to_string(),
                    offer_id: id.to_string(),
                    provider_id: node(1),
                    timestamp: now(),
                },
                expiration,
            },
            local: false,
            active: true,
        })
        .unwrap_or_else(|error| panic!("offer: {error}"))
    }

    fn scan(state: &mut State, owner: NodeId, constraint: Option<&str>) -> ScanIterator {
        let constraint = constraint.map(|text| {
            parse_constraint(text).unwrap_or_else(|error| panic!("constraint: {error}"))
        });
        let compiled = constraint
            .as_ref()
            .map(|constraint| CompiledConstraint::compile(constraint, &mut state.keys));
        ScanIterator {
            owner,
            scan_type: ScanType::Offer,
            constraint,
            compiled,
            after: 0,
            idle: chrono::Duration::seconds(60),
            expires: now() + chrono::Duration::seconds(60),
            peers: HashMap::new(),
        }
    }

    fn ids(offers: &[Offer]) -> Vec<&str> {
        offers.iter().map(|offer| offer.offer_id.as_str()).collect()
    }

    #[test]
    fn offers_are_paged_in_arrival_order_filtered_and_each_once() {
        let current = now();
        let later = current + chrono::Duration::hours(1);
        let mut state = State::default();
        for (id, runtime) in [("a", "vm"), ("b", "wasmtime"), ("c", "vm"), ("d", "vm")] {
            state.insert_offer(offer_entry(id, runtime, later));
        }
        state.insert_offer(offer_entry(
            "gone",
            "vm",
            current - chrono::Duration::seconds(1),
        ));
        let mut vm = scan(&mut state, node(2), Some("(golem.runtime.name=vm)"));
        let first = vm.next_offers(&state.offers, &state.offer_arrivals, current, 2);
        assert_eq!(ids(&first), ["a", "c"]);
        let second = vm.next_offers(&state.offers, &state.offer_arrivals, current, 2);
        assert_eq!(ids(&second), ["d"], "the expired offer is skipped");
        assert!(vm
            .next_offers(&state.offers, &state.offer_arrivals, current, 2)
            .is_empty());
        state.remove_offer("a");
        state.insert_offer(offer_entry("e", "vm", later));
        let third = vm.next_offers(&state.offers, &state.offer_arrivals, current, 10);
        assert_eq!(ids(&third), ["e"], "only what arrived later");
        assert!(!state.offer_arrivals.values().any(|id| id == "a"));
    }

    #[test]
    fn iterators_belong_to_their_owner_and_end_with_404_then_410() {
        let current = now();
        let owner = node(2);
        let mut state = State::default();
        let mut scans = Scans::default();
        let iterator = scan(&mut state, owner, None);
        scans.live.insert("s".to_string(), iterator);
        assert!(scans.live_mut(owner, "s", current).is_ok());
        let foreign = scans.live_mut(node(3), "s", current).err();
        assert_eq!(foreign.map(|error| error.code), Some(ErrorCode::NotFound));
        assert_eq!(
            scans
                .end(node(3), "s", current)
                .err()
                .map(|error| error.code),
            Some(ErrorCode::NotFound)
        );
        assert!(scans.end(owner, "s", current).is_ok());
        let after = scans.live_mut(owner, "s", current).err();
        assert!(after.is_some_and(
            |error| error.code == ErrorCode::NotFound && error.message.contains("deleted")
        ));
        assert_eq!(
            scans.end(owner, "s", current).err().map(|error| error.code),
            Some(ErrorCode::Gone)
        );

        let mut idle = scan(&mut state, owner, None);
        idle.expires = current + chrono::Duration::seconds(1);
        scans.live.insert("idle".to_string(), idle);
        let later = current + chrono::Duration::seconds(2);
        let expired = scans.live_mut(owner, "idle", later).err();
        assert!(expired.is_some_and(
            |error| error.code == ErrorCode::NotFound && error.message.contains("expired")
        ));
        assert_eq!(
            scans
                .end(owner, "idle", later)
                .err()
                .map(|error| error.code),
            Some(ErrorCode::Gone)
        );
        scans.sweep(later + chrono::Duration::seconds(ENDED_KEPT_SECS + 1));
        assert!(
            scans.ended.is_empty(),
            "ended ids are forgotten after an hour"
        );
    }

    /// `cargo nextest run -E 'test(scan_of_ten_thousand_offers)' --run-ignored only --no-capture`
    #[test]
    #[ignore = "timing, run by hand"]
    fn bench_scan_of_ten_thousand_offers() {
        let current = now();
        let later = current + chrono::Duration::hours(1);
        let mut state = State::default();
        for index in 0..10_000 {
            let runtime = if index % 2 == 0 { "vm" } else { "wasmtime" };
            state.insert_offer(offer_entry(&format!("o{index}"), runtime, later));
        }
        for (label, max) in [("first page of 500", 500), ("all 10,000", 10_000)] {
            let started = std::time::Instant::now();
            let mut iterator = scan(
                &mut state,
                node(2),
                Some("(&(golem.runtime.name=vm)(golem.inf.cpu.threads>=2))"),
            );
            let found = iterator.next_offers(&state.offers, &state.offer_arrivals, current, max);
            let elapsed = started.elapsed();
            let json = serde_json::to_vec(&found)
                .map(|bytes| bytes.len())
                .unwrap_or(0);
            println!(
                "| scan over 10k offers, {label} (filter matches half) | {:.2} ms | {} offers, {json} bytes of JSON |",
                elapsed.as_secs_f64() * 1000.0,
                found.len()
            );
        }
    }
}
