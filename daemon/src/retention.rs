//! What a node keeps of finished work, so that memory and the database hold
//! live work plus bounded windows of history instead of every agreement ever
//! made: the `[retention]` section of the daemon config file
//! (`GOLEM_RETENTION_*`, `--retention-*`) and the checked [`RetentionPolicy`]
//! the market, activity and payment services apply in their sweeps.
//!
//! Three windows, from short to long:
//! - memory: final agreements, finished activities, settled documents,
//!   released allocations and payments leave memory past `memory-secs` or
//!   beyond the newest `memory-count` of each kind (they are still answered by
//!   id from the database);
//! - events: market agreement events, payment events and the provider
//!   events the agent reads, in memory and in the
//!   database, past `events-secs` or beyond `events-count`;
//! - history: finished records leave the database `history-secs` after they
//!   finished, or sooner when more than `history-count` of them left memory
//!   (the oldest go first), so a busy node's database stops growing within
//!   minutes instead of a week. What accounting needs is never pruned: a document that is not
//!   settled (or rejected, or cancelled) stays, and so does the agreement it
//!   bills; what pruned documents and payments added to `payment status` is
//!   kept as totals.

use std::time::Duration;

/// The `[retention]` section (kebab-case keys, every one optional).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionSettings {
    /// Finished items of each kind kept in memory (the newest).
    pub memory_count: u64,
    /// How long a finished item stays in memory.
    pub memory_secs: u64,
    /// Market agreement events, payment events and provider events kept (the newest).
    pub events_count: u64,
    /// How long an event is kept; clients read events within seconds.
    pub events_secs: u64,
    /// How long a finished record stays in the database after it finished.
    pub history_secs: u64,
    /// Finished records each service keeps in the database after they left
    /// memory (the newest; market: final agreements; payment: settled
    /// agreements' documents, released allocations and payments together).
    pub history_count: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            memory_count: 1_000,
            memory_secs: 600,
            events_count: 2_000,
            events_secs: 3_600,
            history_secs: 7 * 24 * 3_600,
            history_count: 1_000,
        }
    }
}

/// The checked windows the services run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub memory_count: usize,
    pub memory_age: Duration,
    pub events_count: usize,
    pub events_age: Duration,
    pub history_age: Duration,
    pub history_count: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionSettings::default()
            .to_policy()
            .unwrap_or_else(|_| unreachable!("the default retention settings are valid"))
    }
}

/// Size a map that holds the memory window (`memory_count` finished
/// records plus live work) for that window from the start.
///
/// A hash map whose records come and go grows its table when it runs out of
/// free slots while it holds more than half of them: a map of ~1,000
/// records doubles from 2,048 to 4,096 slots once enough insert/remove pairs
/// have used up its slots, which can be half an hour into a busy run (a soak's
/// heap profile: the market's agreements 2.3 MB, the payment's invoices
/// 1.1 MB and charges 0.4 MB, all at minutes 33-35). Reserved here, the
/// table has its final size at start, so nothing steps up later; its pages
/// are touched only as records arrive. The room is capped at
/// [`MAX_PRESIZED`] entries for large settings.
pub fn presize_window<K: Eq + std::hash::Hash, V>(
    map: &mut std::collections::HashMap<K, V>,
    memory_count: usize,
) {
    let room = memory_count.saturating_mul(2).min(MAX_PRESIZED);
    map.reserve(room.saturating_sub(map.len()));
}

/// Most entries [`presize_window`] reserves for one map.
pub const MAX_PRESIZED: usize = 1 << 14;

/// A `[retention]` setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention setting {name} = {value} is invalid: {message}")]
pub struct RetentionSettingsError {
    pub name: &'static str,
    pub value: u64,
    pub message: &'static str,
}

/// Ten years: longer windows are surely a typo (and overflow date arithmetic).
const LONGEST_SECS: u64 = 10 * 366 * 24 * 3_600;

impl RetentionSettings {
    /// Checks the values (windows at most ten years, the history window not
    /// shorter than the memory window, at least one event kept) and converts them.
    pub fn to_policy(&self) -> Result<RetentionPolicy, RetentionSettingsError> {
        let secs = |name: &'static str, value: u64| {
            if value > LONGEST_SECS {
                return Err(RetentionSettingsError {
                    name,
                    value,
                    message: "it must be at most ten years (315,360,000 s)",
                });
            }
            Ok(Duration::from_secs(value))
        };
        if self.events_count == 0 {
            return Err(RetentionSettingsError {
                name: "events-count",
                value: 0,
                message: "keep at least one event (clients follow events with a cursor)",
            });
        }
        if self.history_secs < self.memory_secs {
            return Err(RetentionSettingsError {
                name: "history-secs",
                value: self.history_secs,
                message:
                    "it must not be below memory-secs: raise history-secs or lower memory-secs",
            });
        }
        let count = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        Ok(RetentionPolicy {
            memory_count: count(self.memory_count),
            memory_age: secs("memory-secs", self.memory_secs)?,
            events_count: count(self.events_count),
            events_age: secs("events-secs", self.events_secs)?,
            history_age: secs("history-secs", self.history_secs)?,
            history_count: count(self.history_count),
        })
    }
}

/// `[retention]` values given on the command line (`golem-daemon run
/// --retention-...`); `None` leaves the file's or environment's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Serialize)]
#[command(next_help_heading = "Retention")]
#[serde(rename_all = "kebab-case")]
pub struct RetentionOverrides {
    /// Finished items of each kind kept in memory [env: GOLEM_RETENTION_MEMORY_COUNT] [default: 1000]
    #[arg(long = "retention-memory-count", value_name = "COUNT")]
    pub memory_count: Option<u64>,
    /// How long a finished item stays in memory [env: GOLEM_RETENTION_MEMORY_SECS] [default: 600]
    #[arg(long = "retention-memory-secs", value_name = "SECS")]
    pub memory_secs: Option<u64>,
    /// Market agreement events, payment events and provider events kept [env: GOLEM_RETENTION_EVENTS_COUNT] [default: 2000]
    #[arg(long = "retention-events-count", value_name = "COUNT")]
    pub events_count: Option<u64>,
    /// How long an event is kept [env: GOLEM_RETENTION_EVENTS_SECS] [default: 3600]
    #[arg(long = "retention-events-secs", value_name = "SECS")]
    pub events_secs: Option<u64>,
    /// How long a finished record (settled documents, final agreements, finished activities) stays in the database [env: GOLEM_RETENTION_HISTORY_SECS] [default: 604800]
    #[arg(long = "retention-history-secs", value_name = "SECS")]
    pub history_secs: Option<u64>,
    /// Finished records each service keeps in the database after they left memory, the newest (older ones leave before history-secs) [env: GOLEM_RETENTION_HISTORY_COUNT] [default: 1000]
    #[arg(long = "retention-history-count", value_name = "COUNT")]
    pub history_count: Option<u64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Largest capacity a map shows while ~1,050 records come and go
    /// (ids ever new, as agreements' are).
    fn peak_capacity_under_churn(map: &mut std::collections::HashMap<u64, [u8; 64]>) -> usize {
        let mut peak = map.capacity();
        for id in 0..50_000u64 {
            map.insert(id, [0; 64]);
            if id >= 1_050 {
                map.remove(&(id - 1_050));
            }
            peak = peak.max(map.capacity());
        }
        peak
    }

    #[test]
    fn a_presized_window_never_grows_its_table_and_an_unsized_one_does() {
        let mut unsized_map = std::collections::HashMap::new();
        for id in 0..1_050u64 {
            unsized_map.insert(id, [0; 64]);
        }
        let before = unsized_map.capacity();
        assert!(
            peak_capacity_under_churn(&mut unsized_map) > before,
            "the table grew late"
        );

        let mut presized = std::collections::HashMap::new();
        presize_window(&mut presized, 1_000);
        let reserved = presized.capacity();
        assert!(reserved >= 2_000, "{reserved}");
        assert_eq!(peak_capacity_under_churn(&mut presized), reserved);

        let mut huge = std::collections::HashMap::<u64, u8>::new();
        presize_window(&mut huge, usize::MAX);
        assert!(huge.capacity() < 2 * MAX_PRESIZED, "{}", huge.capacity());
    }

    #[test]
    fn defaults_are_valid_and_keep_an_hour_of_events_and_a_week_or_a_thousand_of_history() {
        let policy = RetentionPolicy::default();
        assert_eq!(policy.memory_count, 1_000);
        assert_eq!(policy.events_age, Duration::from_secs(3_600));
        assert_eq!(policy.history_age, Duration::from_secs(7 * 24 * 3_600));
        assert_eq!(policy.history_count, 1_000);
    }

    #[test]
    fn a_history_shorter_than_memory_is_refused_with_what_to_change() {
        let settings = RetentionSettings {
            memory_secs: 600,
            history_secs: 60,
            ..RetentionSettings::default()
        };
        let error = settings.to_policy().unwrap_err().to_string();
        assert!(
            error.contains("history-secs = 60") && error.contains("raise history-secs"),
            "{error}"
        );
    }

    #[test]
    fn no_events_and_windows_past_ten_years_are_refused() {
        let none = RetentionSettings {
            events_count: 0,
            ..RetentionSettings::default()
        };
        assert!(none
            .to_policy()
            .unwrap_err()
            .to_string()
            .contains("events-count"));
        let forever = RetentionSettings {
            history_secs: u64::MAX,
            ..RetentionSettings::default()
        };
        assert!(forever
            .to_policy()
            .unwrap_err()
            .to_string()
            .contains("ten years"));
    }
}
