//! Finding providers: the negotiator subscribes the demand, scores the offers
//! that arrive (cheapest expected cost first, skipping providers that failed
//! before or cost more than the caps), negotiates with several providers in
//! parallel (each counter and agreement in its own task, so one slow provider
//! never blocks the others) and hands signed agreements to the executor. A
//! provider that refuses for capacity (a rejection marked
//! `golem.proposal.rejection.is-final: false`, or worded "no free resources",
//! or an agreement it countered and then rejected) is asked again with a
//! backoff: the demand is published anew, which brings its offer back as a
//! fresh Initial proposal, as the original's clients do when they refresh
//! their demand. Also the market scan behind `golem-requestor offers` and the
//! diagnosis of a demand no offer matches.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_model::market::{AgreementProposal, DemandOfferBase, MarketEvent, ProposalState, Reason};
use golem_model::properties::Properties;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::demand::{LinearPrice, PriceCaps};
use crate::events::{Event, EventSink};

/// An approved agreement, ready for activities.
#[derive(Debug, Clone)]
pub struct SignedAgreement {
    pub agreement_id: String,
    pub provider_id: String,
    pub provider_name: String,
    pub price: LinearPrice,
}

/// Which providers are busy with us, busy with others or failed us in this session.
#[derive(Debug, Default)]
pub struct ProviderBook {
    /// Our agreements (signed, or being negotiated) with each provider.
    pub busy: HashMap<String, usize>,
    /// Providers that refused one more of our agreements for capacity, by
    /// how many of ours they held then: never asked for more than that in
    /// this session (they are full with us, not busy with others).
    pub full_with_us: HashMap<String, usize>,
    pub failed: HashSet<String>,
    /// Matching providers that refused us for capacity, by provider id: asked
    /// again after their backoff.
    pub waiting: HashMap<String, BusyProvider>,
}

/// A matching provider that refused for capacity, and when to ask it again.
#[derive(Debug, Clone)]
pub struct BusyProvider {
    pub provider_name: String,
    /// The provider's own words, e.g. "no free resources: 1 of 1 agreements are running".
    pub reason: String,
    pub refusals: u32,
    pub retry_at: Instant,
}

/// The first retry of a busy provider; it doubles up to [`MAX_BUSY_BACKOFF`].
const FIRST_BUSY_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BUSY_BACKOFF: Duration = Duration::from_secs(4);

/// How long to wait before asking a provider again after its `refusals`-th
/// capacity refusal: doubling from [`FIRST_BUSY_BACKOFF`], capped, and spread
/// by up to a quarter so that requestors refused together do not return together.
pub fn busy_backoff(refusals: u32, spread: f64) -> Duration {
    let doubled = FIRST_BUSY_BACKOFF.saturating_mul(1 << refusals.saturating_sub(1).min(8));
    doubled
        .min(MAX_BUSY_BACKOFF)
        .mul_f64(1.0 + spread.clamp(0.0, 1.0) / 4.0)
}

/// Whether a provider's rejection means "busy, ask again later": the
/// original's `golem.proposal.rejection.is-final: false`, or our providers'
/// "no free resources" wording.
pub fn is_capacity_refusal(reason: Option<&Reason>) -> bool {
    let Some(reason) = reason else { return false };
    let not_final = reason
        .extra
        .get("golem.proposal.rejection.is-final")
        .and_then(|value| value.as_bool())
        == Some(false);
    not_final || reason.message.to_lowercase().contains("no free resources")
}

impl ProviderBook {
    /// Note a capacity refusal of `provider_id` and set its next retry.
    fn refused_for_capacity(&mut self, provider_id: &str, provider_name: &str, reason: &str) {
        let entry = self
            .waiting
            .entry(provider_id.to_string())
            .or_insert_with(|| BusyProvider {
                provider_name: provider_name.to_string(),
                reason: reason.to_string(),
                refusals: 0,
                retry_at: Instant::now(),
            });
        entry.refusals += 1;
        entry.reason = reason.to_string();
        let spread = f64::from(rand::random::<u16>()) / f64::from(u16::MAX);
        entry.retry_at = Instant::now() + busy_backoff(entry.refusals, spread);
    }

    /// The names of the providers waited for, sorted.
    pub fn waiting_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .waiting
            .values()
            .map(|busy| busy.provider_name.clone())
            .collect();
        names.sort();
        names
    }

    /// Our agreements with `provider_id`, signed or being negotiated.
    pub fn ours(&self, provider_id: &str) -> usize {
        self.busy.get(provider_id).copied().unwrap_or(0)
    }

    /// One more agreement with `provider_id` is being negotiated.
    pub fn take_slot(&mut self, provider_id: &str) {
        *self.busy.entry(provider_id.to_string()).or_default() += 1;
    }

    /// An agreement with `provider_id` ended, or its negotiation failed.
    pub fn release_slot(&mut self, provider_id: &str) {
        if let Some(count) = self.busy.get_mut(provider_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.busy.remove(provider_id);
            }
        }
    }

    /// A capacity refusal of `provider_id` (its slot already released): a
    /// provider that holds agreements of ours is full with us and is not
    /// waited for; any other is busy with others and asked again later.
    fn refused(&mut self, provider_id: &str, provider_name: &str, reason: &str) {
        match self.ours(provider_id) {
            0 => self.refused_for_capacity(provider_id, provider_name, reason),
            ours => {
                self.full_with_us.insert(provider_id.to_string(), ours);
            }
        }
    }

    /// Whether to ask `provider_id` for one more agreement, `per_provider`
    /// being the most we hold with one provider at once.
    fn may_ask(&self, provider_id: &str, now: Instant, per_provider: usize) -> bool {
        let room = self
            .full_with_us
            .get(provider_id)
            .map_or(per_provider, |full| per_provider.min(*full));
        self.ours(provider_id) < room
            && !self.failed.contains(provider_id)
            && self
                .waiting
                .get(provider_id)
                .is_none_or(|busy| busy.retry_at <= now)
    }
}

pub type SharedBook = Arc<Mutex<ProviderBook>>;

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The provider's display name (`golem.node.id.name`), else a short NodeId.
pub fn provider_name(properties: &Properties, provider_id: &str) -> String {
    properties
        .get("golem.node.id.name")
        .and_then(|value| value.as_str())
        .map(String::from)
        .unwrap_or_else(|| provider_id.chars().take(10).collect())
}

#[derive(Debug, Clone)]
struct Candidate {
    proposal_id: String,
    provider_id: String,
    provider_name: String,
    score: f64,
}

/// Settings of one negotiation.
pub struct Negotiation {
    pub client: GolemClient,
    pub demand: DemandOfferBase,
    pub caps: PriceCaps,
    /// Expected busy seconds per agreement, for scoring.
    pub expected_seconds: f64,
    pub agreement_validity: Duration,
    /// The most agreements held with one provider at once.
    pub agreements_per_provider: usize,
    /// How many agreements the executor wants alive now.
    pub target: watch::Receiver<usize>,
    /// Agreements signed and still in use (the executor decrements it).
    pub active: Arc<AtomicUsize>,
    pub book: SharedBook,
    pub signed: mpsc::UnboundedSender<SignedAgreement>,
    pub events: EventSink,
    /// Offers seen, for the no-match diagnosis.
    pub seen: Arc<AtomicUsize>,
    /// Never sent on: its sender is dropped when the executor is done.
    pub shutdown: watch::Receiver<()>,
}

enum Outcome {
    /// Our counter (`proposal_id`) reached this provider.
    Countered {
        proposal_id: String,
        provider_id: String,
        provider_name: String,
    },
    /// A counter or agreement attempt with this provider ended.
    Done { provider_id: String, ok: bool },
    /// The provider refused for capacity (`reason`): ask again after a backoff.
    Busy {
        provider_id: String,
        provider_name: String,
        reason: String,
    },
}

impl Negotiation {
    /// Run until the task is aborted; re-subscribes when it needs offers it has
    /// already used.
    pub async fn run(self) {
        let mut subscription: Option<(String, Instant)> = None;
        let mut candidates: HashMap<String, Candidate> = HashMap::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        // Our counters by their proposal id: whom a rejection comes from.
        let mut countered: HashMap<String, (String, String)> = HashMap::new();
        // Rejections read before their counter's outcome arrived.
        let mut early_rejections: HashMap<String, Option<Reason>> = HashMap::new();
        let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel::<Outcome>();
        let mut waiting_shown: Vec<String> = Vec::new();
        loop {
            while let Ok(outcome) = outcome_rx.try_recv() {
                match outcome {
                    Outcome::Countered {
                        proposal_id,
                        provider_id,
                        provider_name,
                    } => {
                        if let Some(reason) = early_rejections.remove(&proposal_id) {
                            self.rejected(&provider_id, &provider_name, reason, &mut in_flight);
                        } else {
                            countered.insert(proposal_id, (provider_id, provider_name));
                        }
                    }
                    Outcome::Done { provider_id, ok } => {
                        in_flight.remove(&provider_id);
                        let mut book = lock(&self.book);
                        if ok {
                            book.waiting.remove(&provider_id);
                        } else {
                            book.release_slot(&provider_id);
                        }
                    }
                    Outcome::Busy {
                        provider_id,
                        provider_name,
                        reason,
                    } => {
                        in_flight.remove(&provider_id);
                        let mut book = lock(&self.book);
                        book.release_slot(&provider_id);
                        book.refused(&provider_id, &provider_name, &reason);
                    }
                }
            }
            let waiting_now = lock(&self.book).waiting_names();
            if waiting_now != waiting_shown {
                waiting_shown = waiting_now;
                self.events.emit(Event::ProvidersBusy {
                    provider_names: waiting_shown.clone(),
                });
            }
            if self.shutdown.has_changed().is_err() || self.target.has_changed().is_err() {
                // The executor is done: withdraw the demand and stop.
                if let Some((demand_id, _)) = subscription {
                    let _ = self.client.unsubscribe(Side::Demands, &demand_id).await;
                }
                return;
            }
            let target = *self.target.borrow();
            let active = self.active.load(Ordering::SeqCst);
            let mut need = target.saturating_sub(active + in_flight.len());
            if target == 0 {
                let mut target = self.target.clone();
                let _ = tokio::time::timeout(Duration::from_millis(200), target.changed()).await;
                continue;
            }
            let Some((demand_id, since)) = subscription.clone() else {
                match self.client.subscribe_demand(&self.demand).await {
                    Ok(id) => subscription = Some((id, Instant::now())),
                    Err(error) => {
                        tracing::warn!(%error, "cannot subscribe the demand");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                continue;
            };
            // Counter the cheapest usable offers, providers we hold fewer
            // agreements with first.
            while need > 0 {
                let best = {
                    let book = lock(&self.book);
                    let now = Instant::now();
                    candidates
                        .values()
                        .filter(|c| !in_flight.contains(&c.provider_id))
                        .filter(|c| book.may_ask(&c.provider_id, now, self.agreements_per_provider))
                        .min_by(|a, b| {
                            book.ours(&a.provider_id)
                                .cmp(&book.ours(&b.provider_id))
                                .then(a.score.total_cmp(&b.score))
                        })
                        .cloned()
                };
                let Some(best) = best else { break };
                candidates.remove(&best.provider_id);
                lock(&self.book).take_slot(&best.provider_id);
                in_flight.insert(best.provider_id.clone());
                need -= 1;
                let client = self.client.clone();
                let demand = self.demand.clone();
                let demand_id = demand_id.clone();
                let outcome = outcome_tx.clone();
                let events = self.events.clone();
                tokio::spawn(async move {
                    match client
                        .counter_proposal(Side::Demands, &demand_id, &best.proposal_id, &demand)
                        .await
                    {
                        Ok(proposal_id) => {
                            let _ = outcome.send(Outcome::Countered {
                                proposal_id,
                                provider_id: best.provider_id,
                                provider_name: best.provider_name,
                            });
                        }
                        Err(error) => {
                            events.emit(Event::NegotiationFailed {
                                provider_id: best.provider_id.clone(),
                                message: error.to_string(),
                            });
                            let _ = outcome.send(Outcome::Done {
                                provider_id: best.provider_id,
                                ok: false,
                            });
                        }
                    }
                });
            }
            // Used up every offer we had, a busy provider's retry is due, or
            // a provider we hold an agreement with may take one more (an
            // offer's proposal is countered once): ask the market again for
            // fresh ones.
            let retry_due = {
                let book = lock(&self.book);
                let now = Instant::now();
                let busy_due = book.waiting.iter().any(|(provider_id, busy)| {
                    busy.retry_at <= now && !candidates.contains_key(provider_id)
                });
                let room_with_ours = book.busy.keys().any(|provider_id| {
                    !candidates.contains_key(provider_id)
                        && book.may_ask(provider_id, now, self.agreements_per_provider)
                });
                busy_due || room_with_ours
            };
            let stale = since.elapsed() > Duration::from_secs(3)
                || (retry_due && since.elapsed() > FIRST_BUSY_BACKOFF);
            if need > 0 && in_flight.is_empty() && stale {
                let _ = self.client.unsubscribe(Side::Demands, &demand_id).await;
                subscription = None;
                // Their proposals belonged to the old subscription.
                candidates.clear();
                continue;
            }
            // Poll the demand's events; stop at once when the executor is done.
            let mut shutdown = self.shutdown.clone();
            let polled = tokio::select! {
                polled = self.client.market_events(Side::Demands, &demand_id, 0.5, 50) => polled,
                _ = shutdown.changed() => continue,
            };
            let events = match polled {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "demand events failed");
                    if error.status() == Some(404) {
                        subscription = None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            for event in events {
                match event {
                    MarketEvent::ProposalEvent { proposal, .. } => {
                        let provider_id = proposal.issuer_id.to_string();
                        let name = provider_name(&proposal.properties, &provider_id);
                        match proposal.state {
                            ProposalState::Initial => {
                                self.seen.fetch_add(1, Ordering::SeqCst);
                                let price = LinearPrice::from_properties(&proposal.properties);
                                if let Some(reason) = price.exceeds(&self.caps) {
                                    self.events.emit(Event::OfferSkipped {
                                        provider_id,
                                        provider_name: name,
                                        reason,
                                    });
                                    continue;
                                }
                                if lock(&self.book).failed.contains(&provider_id) {
                                    continue;
                                }
                                let score = price.expected_cost(self.expected_seconds);
                                self.events.emit(Event::OfferReceived {
                                    provider_id: provider_id.clone(),
                                    provider_name: name.clone(),
                                    expected_cost: score,
                                });
                                candidates.insert(
                                    provider_id.clone(),
                                    Candidate {
                                        proposal_id: proposal.proposal_id,
                                        provider_id,
                                        provider_name: name,
                                        score,
                                    },
                                );
                            }
                            ProposalState::Draft if in_flight.contains(&provider_id) => {
                                let price = LinearPrice::from_properties(&proposal.properties);
                                self.spawn_agreement(
                                    proposal.proposal_id,
                                    provider_id,
                                    name,
                                    price,
                                    outcome_tx.clone(),
                                );
                            }
                            _ => {}
                        }
                    }
                    MarketEvent::ProposalRejectedEvent {
                        proposal_id,
                        reason,
                        ..
                    } => {
                        tracing::debug!(%proposal_id, ?reason, "a provider rejected our proposal");
                        match countered.remove(&proposal_id) {
                            Some((provider_id, provider_name)) => {
                                self.rejected(&provider_id, &provider_name, reason, &mut in_flight)
                            }
                            None => {
                                early_rejections.insert(proposal_id, reason);
                            }
                        }
                    }
                    MarketEvent::AgreementEvent { .. } => {}
                }
            }
        }
    }

    /// A provider rejected our counter: wait for it when it is busy, else
    /// leave it for this session (its policy will not change).
    fn rejected(
        &self,
        provider_id: &str,
        provider_name: &str,
        reason: Option<Reason>,
        in_flight: &mut HashSet<String>,
    ) {
        in_flight.remove(provider_id);
        let message = reason
            .as_ref()
            .map(|reason| reason.message.clone())
            .unwrap_or_else(|| "no reason given".into());
        let mut book = lock(&self.book);
        book.release_slot(provider_id);
        if is_capacity_refusal(reason.as_ref()) {
            book.refused(provider_id, provider_name, &message);
        } else {
            book.failed.insert(provider_id.to_string());
            drop(book);
            self.events.emit(Event::NegotiationFailed {
                provider_id: provider_id.to_string(),
                message: format!("{provider_name} rejected our proposal: {message}"),
            });
        }
    }

    fn spawn_agreement(
        &self,
        proposal_id: String,
        provider_id: String,
        provider_name: String,
        price: LinearPrice,
        outcome: mpsc::UnboundedSender<Outcome>,
    ) {
        let client = self.client.clone();
        let validity = self.agreement_validity;
        let signed = self.signed.clone();
        let events = self.events.clone();
        let active = self.active.clone();
        tokio::spawn(async move {
            let result = async {
                let agreement_id = client
                    .create_agreement(&AgreementProposal::valid_for(&proposal_id, validity))
                    .await?;
                client.confirm_agreement(&agreement_id, None).await?;
                client.wait_for_approval(&agreement_id, 15.0).await?;
                Ok::<_, golem_client::ClientError>(agreement_id)
            }
            .await;
            let ok = match result {
                Ok(agreement_id) => {
                    active.fetch_add(1, Ordering::SeqCst);
                    events.emit(Event::AgreementSigned {
                        agreement_id: agreement_id.clone(),
                        provider_id: provider_id.clone(),
                        provider_name: provider_name.clone(),
                    });
                    let _ = signed.send(SignedAgreement {
                        agreement_id,
                        provider_id: provider_id.clone(),
                        provider_name,
                        price,
                    });
                    true
                }
                // It countered, then refused the agreement: another
                // requestor took its room in between.
                Err(error) if error.to_string().to_lowercase().contains("rejected") => {
                    let _ = outcome.send(Outcome::Busy {
                        provider_id,
                        provider_name,
                        reason: format!("it rejected the agreement ({error})"),
                    });
                    return;
                }
                Err(error) => {
                    events.emit(Event::NegotiationFailed {
                        provider_id: provider_id.clone(),
                        message: error.to_string(),
                    });
                    false
                }
            };
            let _ = outcome.send(Outcome::Done { provider_id, ok });
        });
    }
}

/// One offer on the market, as `golem-requestor offers` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct OfferSummary {
    pub provider_id: String,
    pub provider_name: String,
    pub runtime: String,
    pub cpu_threads: Option<f64>,
    pub mem_gib: Option<f64>,
    pub storage_gib: Option<f64>,
    pub price: LinearPrice,
    /// Our demand's clauses this offer does not meet (empty: it matches).
    pub unmatched: Vec<String>,
    #[serde(skip)]
    pub properties: Properties,
    #[serde(skip)]
    pub constraints: String,
}

/// Collect the offers of `subnet` for `window`, with a probe demand that
/// constrains nothing but the subnet; each is checked against `constraints`
/// (our full filter) to name what it does not meet.
pub async fn scan(
    client: &GolemClient,
    subnet: &str,
    constraints: &str,
    window: Duration,
) -> Result<Vec<OfferSummary>, golem_client::ClientError> {
    let probe = DemandOfferBase {
        properties: serde_json::json!({
            "golem.node.debug.subnet": subnet,
            "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 600_000,
        }),
        constraints: format!("(golem.node.debug.subnet={subnet})"),
    };
    let filter = golem_model::constraints::parse(constraints).unwrap_or_default();
    let demand_id = client.subscribe_demand(&probe).await?;
    let deadline = Instant::now() + window;
    let mut offers: HashMap<String, OfferSummary> = HashMap::new();
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = client
            .market_events(Side::Demands, &demand_id, left.as_secs_f64().min(0.3), 100)
            .await?;
        if batch.is_empty()
            && !offers.is_empty()
            && quiet_since.elapsed() > Duration::from_millis(300)
        {
            break;
        }
        for event in batch {
            let MarketEvent::ProposalEvent { proposal, .. } = event else {
                continue;
            };
            if proposal.state != ProposalState::Initial {
                continue;
            }
            quiet_since = Instant::now();
            let properties = proposal.properties;
            let provider_id = proposal.issuer_id.to_string();
            let number = |key: &str| properties.get(key).and_then(|value| value.as_f64());
            let runtime = properties
                .get("golem.runtime.name")
                .and_then(|value| value.as_str())
                .unwrap_or("?")
                .to_string();
            offers.insert(
                format!("{provider_id}/{runtime}"),
                OfferSummary {
                    provider_name: provider_name(&properties, &provider_id),
                    runtime,
                    cpu_threads: number("golem.inf.cpu.threads"),
                    mem_gib: number("golem.inf.mem.gib"),
                    storage_gib: number("golem.inf.storage.gib"),
                    price: LinearPrice::from_properties(&properties),
                    unmatched: filter.unmatched_clauses(&properties),
                    provider_id,
                    properties,
                    constraints: proposal.constraints,
                },
            );
        }
    }
    let _ = client.unsubscribe(Side::Demands, &demand_id).await;
    let mut offers: Vec<OfferSummary> = offers.into_values().collect();
    offers.sort_by(|a, b| {
        (a.provider_name.as_str(), a.runtime.as_str())
            .cmp(&(b.provider_name.as_str(), b.runtime.as_str()))
    });
    Ok(offers)
}

/// A one-paragraph explanation of why no offer matched `demand` in `subnet`.
pub async fn diagnose(
    client: &GolemClient,
    subnet: &str,
    demand: &DemandOfferBase,
    caps_note: Option<String>,
) -> String {
    let offers = match scan(
        client,
        subnet,
        &demand.constraints,
        Duration::from_millis(1500),
    )
    .await
    {
        Ok(offers) => offers,
        Err(error) => return format!("and the market could not be scanned: {error}"),
    };
    if offers.is_empty() {
        return format!(
            "no provider offers anything in subnet {subnet:?} (are providers running, with the same --subnet?)"
        );
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    let demand_properties = Properties::from_json(demand.properties.clone()).unwrap_or_default();
    let mut provider_side = 0;
    for offer in &offers {
        for clause in &offer.unmatched {
            *counts.entry(clause.clone()).or_default() += 1;
        }
        let offer_filter = golem_model::constraints::parse(&offer.constraints).ok();
        if offer_filter.is_some_and(|filter| !filter.matches(&demand_properties)) {
            provider_side += 1;
        }
    }
    let mut clauses: Vec<(String, usize)> = counts.into_iter().collect();
    clauses.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let matching = offers
        .iter()
        .filter(|offer| offer.unmatched.is_empty())
        .count();
    let unmatched = offers.len() - matching;
    let mut text = format!("{} offer(s) in subnet {subnet:?}", offers.len());
    if matching > 0 {
        let all = if unmatched == 0 { "" } else { "of them " };
        text.push_str(&format!(": {matching} {all}meet our constraints"));
        if provider_side > 0 {
            text.push_str(&format!(", but {provider_side} refuse our demand"));
        }
        if let Some(note) = caps_note {
            text.push_str(&format!("; {note}"));
        }
    }
    if unmatched > 0 {
        let named: Vec<String> = clauses
            .iter()
            .map(|(clause, count)| format!("{clause} fails on {count}"))
            .collect();
        let separator = if matching > 0 { ";" } else { ":" };
        text.push_str(&format!(
            "{separator} {unmatched} do not: unmatched constraints: {}",
            named.join(", ")
        ));
    }
    text
}

/// The busy providers of `book`, named apart from the rest (`None` when none
/// refused us for capacity): "3 matching provider(s) busy: provider-1,
/// provider-2, provider-3 (last refusal: no free resources: ...)".
pub fn busy_note(book: &ProviderBook) -> Option<String> {
    let names = book.waiting_names();
    let last = book
        .waiting
        .values()
        .max_by_key(|busy| busy.retry_at)?
        .reason
        .clone();
    Some(format!(
        "{} matching provider(s) busy with other requestors: {} (last refusal: {last}); they free when their agreements end: try again, or wait longer (`busy_timeout_secs` under [job], or `--timeout`)",
        names.len(),
        names.join(", ")
    ))
}

/// A reason for terminating an agreement, as yapapi sends it.
pub fn success_reason() -> Reason {
    let mut reason = Reason::new("work finished");
    reason
        .extra
        .insert("golem.requestor.code".into(), "Success".into());
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_refusals_are_told_apart_from_final_ones() {
        let ours = Reason::new("no free resources: 1 of 1 agreements are running");
        assert!(is_capacity_refusal(Some(&ours)));
        let mut original = Reason::new("No capacity available. Reached Agreements limit: 1");
        original
            .extra
            .insert("golem.proposal.rejection.is-final".into(), false.into());
        assert!(is_capacity_refusal(Some(&original)));
        let policy = Reason::new("expiration too short");
        assert!(!is_capacity_refusal(Some(&policy)));
        assert!(!is_capacity_refusal(None));
    }

    #[test]
    fn busy_backoff_doubles_up_to_its_cap_and_spreads() {
        assert_eq!(busy_backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(busy_backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(busy_backoff(30, 0.0), MAX_BUSY_BACKOFF);
        assert_eq!(busy_backoff(1, 1.0), Duration::from_millis(625));
    }

    #[test]
    fn a_provider_takes_up_to_the_agreements_per_provider_until_it_is_full_with_us() {
        let now = Instant::now();
        let mut book = ProviderBook::default();
        book.take_slot("0x1");
        assert!(!book.may_ask("0x1", now, 1), "one agreement per provider");
        assert!(book.may_ask("0x1", now, 2), "room for a second");
        book.take_slot("0x1");
        assert!(!book.may_ask("0x1", now, 2));
        // The second was refused for capacity: full with our one, not busy with others.
        book.release_slot("0x1");
        book.refused(
            "0x1",
            "provider-1",
            "no free resources: 1 of 1 agreements are running",
        );
        assert!(!book.may_ask("0x1", now, 2));
        assert!(
            book.waiting.is_empty(),
            "not waited for: {:?}",
            book.waiting
        );
        assert!(busy_note(&book).is_none());
        // Its agreement ended: it may take one again, never two.
        book.release_slot("0x1");
        assert_eq!(book.ours("0x1"), 0);
        assert!(book.may_ask("0x1", now, 2));
        book.take_slot("0x1");
        assert!(!book.may_ask("0x1", now, 2));
        // A refusal from a provider holding none of ours: busy with others.
        book.refused(
            "0x2",
            "provider-2",
            "no free resources: 1 of 1 agreements are running",
        );
        assert!(book.waiting.contains_key("0x2"));
    }

    #[test]
    fn a_busy_provider_is_asked_again_only_after_its_backoff() {
        let mut book = ProviderBook::default();
        book.refused_for_capacity("0x1", "provider-1", "no free resources: full");
        assert!(!book.may_ask("0x1", Instant::now(), 1));
        assert!(book.may_ask("0x1", Instant::now() + MAX_BUSY_BACKOFF * 2, 1));
        assert!(book.may_ask("0x2", Instant::now(), 1));
        let note = busy_note(&book).unwrap();
        assert!(
            note.starts_with("1 matching provider(s) busy with other requestors: provider-1"),
            "{note}"
        );
        assert!(busy_note(&ProviderBook::default()).is_none());
    }
}
