//! Finding providers: the negotiator subscribes the demand, scores the offers
//! that arrive (cheapest expected cost first, skipping providers that failed
//! before or cost more than the caps), negotiates with several providers in
//! parallel (each counter and agreement in its own task, so one slow provider
//! never blocks the others) and hands signed agreements to the executor. Also
//! the market scan behind `golem-requestor offers` and the diagnosis of a demand
//! no offer matches.

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

/// Which providers are busy with us or failed us in this session.
#[derive(Debug, Default)]
pub struct ProviderBook {
    pub busy: HashSet<String>,
    pub failed: HashSet<String>,
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
    /// A counter or agreement attempt with this provider ended.
    Done { provider_id: String, ok: bool },
}

impl Negotiation {
    /// Run until the task is aborted; re-subscribes when it needs offers it has
    /// already used.
    pub async fn run(self) {
        let mut subscription: Option<(String, Instant)> = None;
        let mut candidates: HashMap<String, Candidate> = HashMap::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel::<Outcome>();
        loop {
            while let Ok(Outcome::Done { provider_id, ok }) = outcome_rx.try_recv() {
                in_flight.remove(&provider_id);
                if !ok {
                    lock(&self.book).busy.remove(&provider_id);
                }
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
            // Counter the cheapest usable offers.
            while need > 0 {
                let best = {
                    let book = lock(&self.book);
                    candidates
                        .values()
                        .filter(|c| !book.busy.contains(&c.provider_id))
                        .filter(|c| !book.failed.contains(&c.provider_id))
                        .min_by(|a, b| a.score.total_cmp(&b.score))
                        .cloned()
                };
                let Some(best) = best else { break };
                candidates.remove(&best.provider_id);
                lock(&self.book).busy.insert(best.provider_id.clone());
                in_flight.insert(best.provider_id.clone());
                need -= 1;
                let client = self.client.clone();
                let demand = self.demand.clone();
                let demand_id = demand_id.clone();
                let outcome = outcome_tx.clone();
                let events = self.events.clone();
                tokio::spawn(async move {
                    if let Err(error) = client
                        .counter_proposal(Side::Demands, &demand_id, &best.proposal_id, &demand)
                        .await
                    {
                        events.emit(Event::NegotiationFailed {
                            provider_id: best.provider_id.clone(),
                            message: error.to_string(),
                        });
                        let _ = outcome.send(Outcome::Done {
                            provider_id: best.provider_id,
                            ok: false,
                        });
                    }
                });
            }
            // Used up every offer we had: ask the market again for fresh ones.
            if need > 0 && in_flight.is_empty() && since.elapsed() > Duration::from_secs(3) {
                let _ = self.client.unsubscribe(Side::Demands, &demand_id).await;
                subscription = None;
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
                                    provider_name: name,
                                    expected_cost: score,
                                });
                                candidates.insert(
                                    provider_id.clone(),
                                    Candidate {
                                        proposal_id: proposal.proposal_id,
                                        provider_id,
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
                    MarketEvent::ProposalRejectedEvent { reason, .. } => {
                        tracing::debug!(?reason, "a provider rejected our proposal");
                    }
                    MarketEvent::AgreementEvent { .. } => {}
                }
            }
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
    let mut text = format!("{} offer(s) in subnet {subnet:?}", offers.len());
    if clauses.is_empty() {
        text.push_str(" meet our constraints");
        if provider_side > 0 {
            text.push_str(&format!(", but {provider_side} refuse our demand"));
        }
        if let Some(note) = caps_note {
            text.push_str(&format!("; {note}"));
        }
    } else {
        let named: Vec<String> = clauses
            .iter()
            .map(|(clause, count)| format!("{clause} fails on {count}"))
            .collect();
        text.push_str(&format!("; unmatched constraints: {}", named.join(", ")));
    }
    text
}

/// A reason for terminating an agreement, as yapapi sends it.
pub fn success_reason() -> Reason {
    let mut reason = Reason::new("work finished");
    reason
        .extra
        .insert("golem.requestor.code".into(), "Success".into());
    reason
}
