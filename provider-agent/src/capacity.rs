//! How many agreements fit on this provider at once. Each agreement claims the
//! CPU threads and memory its demand asks for: the lower bounds its constraints
//! put on `golem.inf.cpu.threads` and `golem.inf.mem.gib` (at least one thread;
//! no memory when it names none). A new agreement is taken while its claim and
//! the claims of the live ones fit the provider's threads and memory, so two
//! 1-thread WASM jobs run side by side on 2 threads. `max-agreements`, when
//! set, caps the count on top. A refusal starts with [`NO_FREE_RESOURCES`] and
//! is marked not final ([`not_final`]): the requestor may ask again once an
//! agreement ends. This module decides only; it keeps no state.

use golem_model::constraints::{ComparisonOperator, Constraint};
use golem_model::market::Reason;
use serde::{Deserialize, Serialize};

use crate::config::ProviderConfig;
use crate::offer::props;

/// The start of every capacity refusal; requestors read it as "ask again later".
pub const NO_FREE_RESOURCES: &str = "no free resources";

/// The original's flag on a rejection that may be retried (`false`) or not.
pub const REJECTION_IS_FINAL: &str = "golem.proposal.rejection.is-final";

/// What one agreement takes of the provider while it is live.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub threads: f64,
    pub mem_gib: f64,
}

impl Default for Claim {
    /// An agreement recorded before claims were kept: one thread.
    fn default() -> Claim {
        Claim {
            threads: 1.0,
            mem_gib: 0.0,
        }
    }
}

impl Claim {
    /// The claim of a demand with these constraints. Only bounds every
    /// matching offer must meet count (clauses of the top-level `&`), so an
    /// `|` alternative never inflates the claim.
    pub fn of_demand(constraints: &str) -> Claim {
        let parsed = golem_model::constraints::parse(constraints).unwrap_or_default();
        Claim {
            threads: lower_bound(&parsed, props::CPU_THREADS).max(1.0),
            mem_gib: lower_bound(&parsed, props::MEM_GIB).max(0.0),
        }
    }
}

/// The largest lower bound the required clauses put on `key` (0 when none).
fn lower_bound(constraint: &Constraint, key: &str) -> f64 {
    match constraint {
        Constraint::And(children) => children
            .iter()
            .map(|child| lower_bound(child, key))
            .fold(0.0, f64::max),
        Constraint::Compare(comparison) if comparison.attribute().name() == key => {
            match comparison.operator() {
                ComparisonOperator::Equal
                | ComparisonOperator::GreaterOrEqual
                | ComparisonOperator::Greater => comparison.value().as_number().unwrap_or(0.0),
                _ => 0.0,
            }
        }
        _ => 0.0,
    }
}

/// What the provider has to share among agreements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub threads: f64,
    pub mem_gib: f64,
    /// `max-agreements`: a cap on the count, when the provider set one.
    pub max_agreements: Option<u32>,
}

impl Capacity {
    pub fn of(config: &ProviderConfig) -> Capacity {
        Capacity {
            threads: f64::from(config.threads),
            mem_gib: config.mem_gib,
            max_agreements: config.max_agreements,
        }
    }

    /// Whether `new` fits beside the `live` claims; the refusal says what is taken.
    /// A provider with nothing running takes any claim: the market matched it.
    pub fn admit(&self, live: &[Claim], new: Claim) -> Result<(), String> {
        let running = live.len();
        if let Some(max) = self.max_agreements {
            if running >= max as usize {
                return Err(format!(
                    "{NO_FREE_RESOURCES}: {running} of {max} agreements are running; try again later"
                ));
            }
        }
        if running == 0 {
            return Ok(());
        }
        let threads: f64 = live.iter().map(|claim| claim.threads).sum();
        let mem_gib: f64 = live.iter().map(|claim| claim.mem_gib).sum();
        // A small tolerance, so that 0.1 + 0.2 GiB fits in 0.3 GiB.
        let epsilon = 1e-9;
        if threads + new.threads > self.threads + epsilon {
            return Err(format!(
                "{NO_FREE_RESOURCES}: {running} running agreement(s) take {threads} of {} threads and this one asks {}; try again later",
                self.threads, new.threads
            ));
        }
        if mem_gib + new.mem_gib > self.mem_gib + epsilon {
            return Err(format!(
                "{NO_FREE_RESOURCES}: {running} running agreement(s) take {mem_gib} of {} GiB of memory and this one asks {}; try again later",
                self.mem_gib, new.mem_gib
            ));
        }
        Ok(())
    }
}

/// A rejection `reason` worded `message`, marked not final when it is a
/// capacity refusal (the original's requestors may then ask again).
pub fn rejection(message: String) -> Reason {
    let retryable = message.starts_with(NO_FREE_RESOURCES);
    let mut reason = Reason::new(message);
    if retryable {
        reason.extra.insert(REJECTION_IS_FINAL.into(), false.into());
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(threads: f64, mem_gib: f64) -> Capacity {
        Capacity {
            threads,
            mem_gib,
            max_agreements: None,
        }
    }

    #[test]
    fn two_one_thread_jobs_fit_on_two_threads_and_a_third_does_not() {
        let wasm = Claim::of_demand("(&(golem.runtime.name=wasmtime)(golem.node.debug.subnet=x))");
        assert_eq!(wasm, Claim::default());
        let provider = capacity(2.0, 4.0);
        assert_eq!(provider.admit(&[], wasm), Ok(()));
        assert_eq!(provider.admit(&[wasm], wasm), Ok(()));
        let full = provider.admit(&[wasm, wasm], wasm).unwrap_err();
        assert!(full.starts_with(NO_FREE_RESOURCES), "{full}");
        assert!(full.contains("2 of 2 threads"), "{full}");
    }

    #[test]
    fn claims_follow_the_demands_bounds() {
        let big = Claim::of_demand(
            "(&(golem.inf.cpu.threads>=2)(golem.inf.mem.gib>=3)(golem.runtime.name=vm))",
        );
        assert_eq!(
            big,
            Claim {
                threads: 2.0,
                mem_gib: 3.0
            }
        );
        // Bounds inside an alternative are not required: they claim nothing.
        let either = Claim::of_demand("(|(golem.inf.cpu.threads>=8)(golem.runtime.name=vm))");
        assert_eq!(either, Claim::default());
        let provider = capacity(4.0, 4.0);
        // Threads would fit (2 + 2 of 4), memory would not (3 + 3 of 4 GiB).
        let error = provider.admit(&[big], big).unwrap_err();
        assert!(error.contains("GiB of memory"), "{error}");
        // A lone big job is taken even when it claims more than the machine has.
        assert_eq!(capacity(1.0, 1.0).admit(&[], big), Ok(()));
    }

    #[test]
    fn max_agreements_caps_the_count_when_set() {
        let one = Capacity {
            max_agreements: Some(1),
            ..capacity(8.0, 8.0)
        };
        let error = one
            .admit(&[Claim::default()], Claim::default())
            .unwrap_err();
        assert!(error.contains("1 of 1 agreements are running"), "{error}");
    }

    #[test]
    fn only_capacity_refusals_are_marked_not_final() {
        let busy = rejection(format!("{NO_FREE_RESOURCES}: 1 of 1 agreements"));
        assert_eq!(busy.extra.get(REJECTION_IS_FINAL), Some(&false.into()));
        let other = rejection("expiration too short".into());
        assert!(!other.extra.contains_key(REJECTION_IS_FINAL));
    }
}
