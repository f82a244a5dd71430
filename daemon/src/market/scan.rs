//! Market scans (`/market-api/v1/scan`): read-only iterators over the market
//! for tools that want to look at it rather than negotiate. An `offer` scan
//! pages through every live offer this node knows (its own and those learnt
//! from its subnets), in the order they became known, filtered by an optional
//! constraint; once it has seen them all, `GET .../events` long-polls for
//! offers that arrive later. With `peerId` it asks that node for its own
//! offers instead (each offer once per peer). A `demand` scan pages through
//! the caller's own live demands: demands never leave their node, so there
//! are no others to see.
//!
//! Iterators live in memory only (as in the original) and belong to the
//! identity that began them; another identity gets 404. An iterator unused for
//! its `timeout` (default 300 s, the original's) expires; its id is remembered
//! for an hour so that its events answer 404 and its deletion 410, as for an
//! expired subscription. A scan never changes the market: it creates no
//! proposals and sends nothing but the `GetOwnOffers` query of `peerId`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_model::constraints::{CompiledConstraint, Constraint};
use golem_model::market::{Demand, GetOwnOffers, NewScan, Offer, ScanType};
use golem_model::{ErrorCode, GolemError, NodeId};
use serde::Serialize;

use actix::{ActorFutureExt, Context, Handler, Message, ResponseActFuture};
use golem_model::ids::new_id;
use golem_model::market::OfferBroadcast;

use super::actor::MarketActor;
use super::matching::own_offers;
use super::records::{now, parse_constraint};
use super::state::{DemandEntry, OfferEntry, State};
use super::MarketService;

/// Idle lifetime of an iterator when `POST /scan` names none (the original
/// daemon's default; the spec's prose says 30 s).
const DEFAULT_IDLE_SECS: u64 = 300;
const MAX_IDLE_SECS: u64 = 24 * 3600;
/// Live iterators per node; more are refused until some end.
const MAX_LIVE_SCANS: usize = 10_000;
/// How long, and how many, ended iterators are remembered for 404/410 answers.
const ENDED_KEPT_SECS: i64 = 3600;
const MAX_ENDED_SCANS: usize = 10_000;

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
    owner: NodeId,
    scan_type: ScanType,
    /// For demands and for offers fetched from a peer.
    constraint: Option<Constraint>,
    /// The same constraint against the market's key table, for known offers.
    compiled: Option<CompiledConstraint>,
    /// Items up to this arrival number have been looked at.
    after: u64,
    idle: chrono::Duration,
    expires: DateTime<Utc>,
    peers: HashMap<NodeId, PeerScan>,
}

/// What a scan has fetched from one peer (`peerId`).
#[derive(Default)]
struct PeerScan {
    seen: HashSet<String>,
    pending: VecDeque<Offer>,
}

impl PeerScan {
    fn take(&mut self, max: usize) -> Vec<Offer> {
        let count = max.min(self.pending.len());
        self.pending.drain(..count).collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Deleted,
    Expired,
}

struct EndedScan {
    owner: NodeId,
    ending: Ending,
    at: DateTime<Utc>,
}

/// The node's scan iterators, held by the market actor.
#[derive(Default)]
pub(crate) struct Scans {
    live: HashMap<String, ScanIterator>,
    ended: HashMap<String, EndedScan>,
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

    fn expire_if_due(&mut self, id: &str, current: DateTime<Utc>) {
        if self.live.get(id).is_none_or(|scan| scan.expires > current) {
            return;
        }
        if let Some(scan) = self.live.remove(id) {
            tracing::debug!(scan_id = id, "scan iterator expired");
            self.remember(id.to_string(), scan.owner, Ending::Expired, scan.expires);
        }
    }

    fn remember(&mut self, id: String, owner: NodeId, ending: Ending, at: DateTime<Utc>) {
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
    fn live_mut(
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
    fn end(&mut self, owner: NodeId, id: &str, current: DateTime<Utc>) -> Result<(), GolemError> {
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
    fn touch(&mut self, current: DateTime<Utc>, hold: Duration) {
        let hold = chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::zero());
        self.expires = self.expires.max(current + self.idle + hold);
    }

    /// The next up to `max` live offers after the cursor that pass the filter.
    fn next_offers(
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
    fn next_demands(
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

/// `POST /scan`.
#[derive(Message)]
#[rtype(result = "Result<String, GolemError>")]
pub(crate) struct BeginScan {
    pub owner: NodeId,
    pub body: NewScan,
}

/// One look of `GET /scan/{id}/events`: the next up to `max` items; `hold`
/// is how long the client still waits (the iterator lives at least that long).
#[derive(Message)]
#[rtype(result = "Result<ScanItems, GolemError>")]
pub(crate) struct NextScanItems {
    pub owner: NodeId,
    pub id: String,
    pub hold: Duration,
    pub max: usize,
}

/// `GET /scan/{id}/events?peerId=`.
#[derive(Message)]
#[rtype(result = "Result<ScanItems, GolemError>")]
pub(crate) struct ScanPeer {
    pub owner: NodeId,
    pub id: String,
    pub peer: NodeId,
    pub timeout: Duration,
    pub max: usize,
}

/// `DELETE /scan/{id}`.
#[derive(Message)]
#[rtype(result = "Result<(), GolemError>")]
pub(crate) struct EndScan {
    pub owner: NodeId,
    pub id: String,
}

impl MarketService {
    /// `POST /scan`: a new iterator owned by `owner`.
    pub async fn begin_scan(&self, owner: NodeId, body: NewScan) -> Result<String, GolemError> {
        self.ask(BeginScan { owner, body }).await
    }

    /// `GET /scan/{id}/events`: the next up to `max` items; when there are
    /// none yet, waits (outside the actor) up to `timeout` for some to
    /// arrive, then `[]`.
    pub async fn collect_scan(
        &self,
        owner: NodeId,
        id: &str,
        timeout: Duration,
        max: usize,
    ) -> Result<ScanItems, GolemError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.signals.catalogue.subscribe();
        loop {
            let hold = deadline.saturating_duration_since(tokio::time::Instant::now());
            let items = self
                .look(deadline, || NextScanItems {
                    owner,
                    id: id.to_string(),
                    hold,
                    max,
                })
                .await?;
            let timed_out = hold.is_zero();
            if !items.is_empty() || max == 0 || timed_out {
                return Ok(items);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                // One last look, so a deletion during the wait answers 404.
                Ok(Err(_)) | Err(_) => {
                    let last = NextScanItems {
                        owner,
                        id: id.to_string(),
                        hold: Duration::ZERO,
                        max: 0,
                    };
                    return self.ask(last).await;
                }
            }
        }
    }

    /// `GET /scan/{id}/events?peerId=`: offers asked of `peer` directly, each
    /// once per iterator; the fetch is bounded by `timeout` (or the remote
    /// call timeout when it is 0).
    pub async fn collect_scan_from_peer(
        &self,
        owner: NodeId,
        id: &str,
        peer: NodeId,
        timeout: Duration,
        max: usize,
    ) -> Result<ScanItems, GolemError> {
        let id = id.to_string();
        self.ask(ScanPeer {
            owner,
            id,
            peer,
            timeout,
            max,
        })
        .await
    }

    /// `DELETE /scan/{id}`.
    pub async fn end_scan(&self, owner: NodeId, id: &str) -> Result<(), GolemError> {
        let id = id.to_string();
        self.ask(EndScan { owner, id }).await
    }
}

impl MarketActor {
    /// `POST /scan`: a new iterator owned by `owner`.
    fn begin_scan(&mut self, owner: NodeId, body: NewScan) -> Result<String, GolemError> {
        let idle_secs = body.timeout.unwrap_or(DEFAULT_IDLE_SECS);
        if !(1..=MAX_IDLE_SECS).contains(&idle_secs) {
            return Err(GolemError::bad_request(format!(
                "timeout must be between 1 and {MAX_IDLE_SECS} seconds, got {idle_secs}"
            )));
        }
        let constraint = body
            .constraints
            .as_deref()
            .map(parse_constraint)
            .transpose()?;
        let current = now();
        let idle = chrono::Duration::seconds(idle_secs as i64);
        let id = new_id();
        {
            let scans = &mut self.scans;
            scans.sweep(current);
            if scans.live.len() >= MAX_LIVE_SCANS {
                return Err(GolemError::unavailable(format!(
                    "this node already has {MAX_LIVE_SCANS} scan iterators; end some with DELETE /scan/{{id}}"
                )));
            }
            let compiled = match (&constraint, body.scan_type) {
                (Some(constraint), ScanType::Offer) => Some(CompiledConstraint::compile(
                    constraint,
                    &mut self.state.keys,
                )),
                _ => None,
            };
            scans.live.insert(
                id.clone(),
                ScanIterator {
                    owner,
                    scan_type: body.scan_type,
                    constraint,
                    compiled,
                    after: 0,
                    idle,
                    expires: current + idle,
                    peers: HashMap::new(),
                },
            );
        }
        tracing::info!(scan_id = %id, scan_type = ?body.scan_type, idle_secs, "scan iterator created");
        Ok(id)
    }

    fn next_scan_items(&mut self, message: NextScanItems) -> Result<ScanItems, GolemError> {
        let current = now();
        let State {
            offers,
            offer_arrivals,
            demands,
            demand_arrivals,
            ..
        } = &self.state;
        let scan = self.scans.live_mut(message.owner, &message.id, current)?;
        scan.touch(current, message.hold);
        let max = message.max;
        Ok(match scan.scan_type {
            ScanType::Offer => {
                ScanItems::Offers(scan.next_offers(offers, offer_arrivals, current, max))
            }
            ScanType::Demand => {
                ScanItems::Demands(scan.next_demands(demands, demand_arrivals, current, max))
            }
        })
    }

    /// Queued offers of the peer, if any; `None` when they must be fetched.
    fn queued_peer_offers(&mut self, message: &ScanPeer) -> Result<Option<ScanItems>, GolemError> {
        let scan = self.scans.live_mut(message.owner, &message.id, now())?;
        if scan.scan_type != ScanType::Offer {
            return Err(GolemError::bad_request(
                "peerId applies to offer scans only (demands never leave their node)",
            ));
        }
        scan.touch(now(), message.timeout);
        let queued = scan.peers.entry(message.peer).or_default();
        if !queued.pending.is_empty() || message.max == 0 {
            return Ok(Some(ScanItems::Offers(queued.take(message.max))));
        }
        Ok(None)
    }

    /// Queue the offers `peer` sent (each once), and take the next page.
    fn queue_peer_offers(
        &mut self,
        message: &ScanPeer,
        fetched: OfferBroadcast,
    ) -> Result<ScanItems, GolemError> {
        let current = now();
        let peer = message.peer;
        let scan = self.scans.live_mut(message.owner, &message.id, current)?;
        let ScanIterator {
            constraint, peers, ..
        } = scan;
        let queued = peers.entry(peer).or_default();
        // A peer answers with what it likes: keep no more than the market
        // would hold of one node.
        let most = self.core.config.limits.max_offers_per_node;
        for published in fetched.offers {
            if queued.seen.len() >= most {
                tracing::debug!(%peer, most, "offers of a peer beyond market.max-offers-per-node left out of the scan");
                break;
            }
            let offer = published.offer;
            if offer.provider_id != peer
                || published.expiration <= current
                || queued.seen.contains(&offer.offer_id)
                || constraint
                    .as_ref()
                    .is_some_and(|constraint| !constraint.matches(&offer.properties))
            {
                continue;
            }
            queued.seen.insert(offer.offer_id.clone());
            queued.pending.push_back(offer);
        }
        Ok(ScanItems::Offers(queued.take(message.max)))
    }
}

impl Handler<BeginScan> for MarketActor {
    type Result = Result<String, GolemError>;

    fn handle(&mut self, message: BeginScan, _ctx: &mut Context<Self>) -> Self::Result {
        self.begin_scan(message.owner, message.body)
    }
}

impl Handler<NextScanItems> for MarketActor {
    type Result = Result<ScanItems, GolemError>;

    fn handle(&mut self, message: NextScanItems, _ctx: &mut Context<Self>) -> Self::Result {
        self.next_scan_items(message)
    }
}

impl Handler<ScanPeer> for MarketActor {
    type Result = ResponseActFuture<Self, Result<ScanItems, GolemError>>;

    /// Queued offers at once; otherwise ask the peer (ourselves: our own
    /// offers) and queue its answer when it comes.
    fn handle(&mut self, message: ScanPeer, _ctx: &mut Context<Self>) -> Self::Result {
        match self.queued_peer_offers(&message) {
            Ok(Some(items)) => return Box::pin(actix::fut::ready(Ok(items))),
            Ok(None) => {}
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        }
        let peer = message.peer;
        if peer == self.core.node_id {
            let own = own_offers(&self.state, None, None);
            return Box::pin(actix::fut::ready(self.queue_peer_offers(&message, own)));
        }
        let bound = if message.timeout.is_zero() {
            self.core.config.remote_timeout
        } else {
            message.timeout
        };
        let call = self.core.call_remote(peer, GetOwnOffers {});
        let fetch = async move {
            tokio::time::timeout(bound, call).await.map_err(|_| {
                GolemError::timeout(format!(
                    "node {peer} did not send its offers within {bound:?}"
                ))
            })?
        };
        Box::pin(actix::fut::wrap_future(fetch).map(
            move |fetched, actor: &mut MarketActor, _ctx| {
                actor.queue_peer_offers(&message, fetched?)
            },
        ))
    }
}

impl Handler<EndScan> for MarketActor {
    type Result = Result<(), GolemError>;

    fn handle(&mut self, message: EndScan, _ctx: &mut Context<Self>) -> Self::Result {
        self.scans.end(message.owner, &message.id, now())?;
        // Wake a long-poll on this iterator so it answers 404 at once.
        self.core.signals.bump_catalogue();
        tracing::info!(scan_id = %message.id, "scan iterator deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::records::StoredOffer;
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
