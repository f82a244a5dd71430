//! The node's periodic DHT walk, paced. A walk refreshes the Kademlia routing
//! table: a lookup of the node itself, then of a random key in every bucket
//! farther than its closest neighbour's, then the node's provider record is
//! stored again on its closest peers. Each lookup connects to ~20 peers that
//! carry no call, and the peer target lets those go after
//! `NetConfig::peer_uncalled_grace`. kad's own bootstrap starts the lookups
//! back to back, so a walking node of a 100-node lab held ~75–90 connections
//! at once (and ~6 MiB more heap); here they start [`WALK_STEP`] apart and
//! a walk holds about one lookup's connections at a time; walks follow each
//! other at [`jittered`] times. Pure planning: on its maintenance tick the node
//! asks [`DhtWalk::walk_due`] and [`DhtWalk::step_due`] and runs the step.

use std::collections::VecDeque;
use std::time::Duration;

use libp2p::kad::KBucketKey;
use libp2p::PeerId;
use rand::Rng;
use tokio::time::Instant;

/// Time between the steps of one walk: longer than a lookup on slow links
/// (a few round trips) plus the uncalled grace and the peer target's check.
pub const WALK_STEP: Duration = Duration::from_secs(5);

/// Random keys tried to land in a bucket (kad tries 16): bucket 255 holds
/// half of all keys, bucket 250 one in 64, so 256 tries find one there 98 %
/// of the time. A miss only refreshes a neighbouring bucket instead.
const KEY_TRIES: usize = 256;

/// One step of a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkStep {
    /// Look up the peers closest to this key.
    Lookup(PeerId),
    /// Store the node's provider record on its closest peers again.
    Provide,
}

/// When the node walks next, and the steps of the walk under way, if any.
#[derive(Debug)]
pub struct DhtWalk {
    /// The mean time between walks (`NetConfig::kad_bootstrap_interval`).
    period: Duration,
    next_walk_at: Instant,
    steps: VecDeque<WalkStep>,
    next_step_at: Option<Instant>,
}

impl DhtWalk {
    /// No walk under way; the first is due a [`jittered`] `period` after
    /// `now` (kad's own bootstrap walks when the node joins).
    pub fn new(period: Duration, now: Instant) -> Self {
        Self {
            period,
            next_walk_at: now + jittered(period),
            steps: VecDeque::new(),
            next_step_at: None,
        }
    }

    /// Whether a new walk is due now; if so, the one after is planned a
    /// [`jittered`] period later (the caller then [`start`](Self::start)s
    /// it, or skips it when the node is not in the DHT yet).
    pub fn walk_due(&mut self, now: Instant) -> bool {
        if now < self.next_walk_at {
            return false;
        }
        self.next_walk_at = now + jittered(self.period);
        true
    }

    /// Plan a walk of `local` whose closest neighbour sits in bucket
    /// `closest_bucket` (none: an empty table, only the self lookup),
    /// replacing any walk still under way; its first step is due now.
    pub fn start(&mut self, local: PeerId, closest_bucket: Option<u32>, now: Instant) {
        let local_key = KBucketKey::from(local);
        self.steps = std::iter::once(WalkStep::Lookup(local))
            .chain(
                closest_bucket
                    .into_iter()
                    .flat_map(|closest| (closest + 1)..=255)
                    .map(|bucket| WalkStep::Lookup(key_in_bucket(&local_key, bucket))),
            )
            .chain(std::iter::once(WalkStep::Provide))
            .collect();
        self.next_step_at = Some(now);
    }

    /// The step to run now, if one is due (the next one is then due
    /// [`WALK_STEP`] later).
    pub fn step_due(&mut self, now: Instant) -> Option<WalkStep> {
        if self.next_step_at.is_none_or(|at| now < at) {
            return None;
        }
        let step = self.steps.pop_front();
        self.next_step_at = (!self.steps.is_empty()).then_some(now + WALK_STEP);
        step
    }

    /// Steps not run yet.
    pub fn remaining(&self) -> usize {
        self.steps.len()
    }
}

/// `period` stretched or shrunk by up to a quarter at random: the time to
/// the next walk, so that nodes started together (a lab, a data centre after
/// an upgrade) do not walk together. A walk connects to most of a small
/// network, and a hundred of them at once left every node with ~90
/// connections.
pub fn jittered(period: Duration) -> Duration {
    period.mul_f64(rand::thread_rng().gen_range(0.75..=1.25))
}

/// A random key at distance 2^bucket .. 2^(bucket+1) from `local`, or as
/// near to that as [`KEY_TRIES`] random keys get.
pub fn key_in_bucket(local: &KBucketKey<PeerId>, bucket: u32) -> PeerId {
    let mut key = PeerId::random();
    for _ in 1..KEY_TRIES {
        if KBucketKey::from(key).distance(local).ilog2() == Some(bucket) {
            break;
        }
        key = PeerId::random();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(600);

    #[test]
    fn walks_fall_due_a_jittered_period_apart_and_each_plans_the_next() {
        let start = Instant::now();
        let mut walk = DhtWalk::new(PERIOD, start);
        assert!(!walk.walk_due(start), "kad's bootstrap walks at the join");
        assert!(!walk.walk_due(start + PERIOD.mul_f64(0.74)));
        let first = start + PERIOD.mul_f64(1.25);
        assert!(walk.walk_due(first));
        assert!(!walk.walk_due(first), "one walk per period, not per tick");
        assert!(!walk.walk_due(first + PERIOD.mul_f64(0.74)));
        assert!(walk.walk_due(first + PERIOD.mul_f64(1.25)));
    }

    fn bucket_of(local: PeerId, key: PeerId) -> Option<u32> {
        KBucketKey::from(key)
            .distance(&KBucketKey::from(local))
            .ilog2()
    }

    #[test]
    fn a_walk_looks_up_itself_then_each_farther_bucket_then_provides_one_step_at_a_time() {
        let local = PeerId::random();
        let start = Instant::now();
        let mut walk = DhtWalk::new(PERIOD, start);
        assert_eq!(walk.step_due(start), None, "no walk planned");
        walk.start(local, Some(250), start);
        assert_eq!(walk.remaining(), 1 + 5 + 1);

        assert_eq!(walk.step_due(start), Some(WalkStep::Lookup(local)));
        assert_eq!(walk.step_due(start), None, "the next step waits");
        let mut at = start;
        let mut buckets = Vec::new();
        while walk.remaining() > 1 {
            assert_eq!(walk.step_due(at + WALK_STEP / 2), None);
            at += WALK_STEP;
            match walk.step_due(at) {
                Some(WalkStep::Lookup(key)) => buckets.push(bucket_of(local, key)),
                other => panic!("expected a bucket lookup, got {other:?}"),
            }
        }
        // Buckets 251..=255; a bucket of 1 in 32 keys or more is hit
        // nearly always in 256 tries.
        assert_eq!(
            buckets,
            [251, 252, 253, 254, 255].map(Some).to_vec(),
            "one lookup per bucket farther than the closest neighbour's"
        );
        at += WALK_STEP;
        assert_eq!(walk.step_due(at), Some(WalkStep::Provide));
        assert_eq!(walk.step_due(at + WALK_STEP * 10), None, "the walk is over");
    }

    #[test]
    fn an_empty_table_walks_only_to_itself_and_a_new_walk_replaces_an_unfinished_one() {
        let local = PeerId::random();
        let now = Instant::now();
        let mut walk = DhtWalk::new(PERIOD, now);
        walk.start(local, Some(200), now);
        walk.start(local, None, now);
        assert_eq!(walk.step_due(now), Some(WalkStep::Lookup(local)));
        assert_eq!(walk.step_due(now + WALK_STEP), Some(WalkStep::Provide));
        assert_eq!(walk.remaining(), 0);
    }

    #[test]
    fn dht_walks_are_spread_over_a_quarter_either_side_of_the_period() {
        let period = Duration::from_secs(300);
        let walks: Vec<Duration> = (0..200).map(|_| jittered(period)).collect();
        assert!(walks
            .iter()
            .all(|walk| (period.mul_f64(0.75)..=period.mul_f64(1.25)).contains(walk)));
        // Spread, not one value: some early and some late.
        assert!(walks.iter().any(|walk| *walk < Duration::from_secs(270)));
        assert!(walks.iter().any(|walk| *walk > Duration::from_secs(330)));
    }
}
