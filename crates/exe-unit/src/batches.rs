//! Results and runtime events of the batches this exe unit ran, kept in memory
//! so the activity service can also ask directly (poll with a timeout, or
//! stream events from the batch's start). The oldest finished batches are
//! forgotten past [`MAX_BATCHES`]; the activity service keeps its own copy
//! from the reports.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::Stream;
use golem_model::activity::{ExeScriptCommandResult, RuntimeEvent};
use golem_model::GolemError;
use tokio::sync::watch;

pub const MAX_BATCHES: usize = 256;

#[derive(Debug, Default)]
pub struct BatchRecord {
    pub results: Vec<ExeScriptCommandResult>,
    pub events: Vec<RuntimeEvent>,
    pub finished: bool,
}

pub struct Batch {
    record: Mutex<BatchRecord>,
    /// Bumped on every change so waiters wake up.
    changed: watch::Sender<u64>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            record: Mutex::new(BatchRecord::default()),
            changed: watch::channel(0).0,
        }
    }

    pub fn record(&self) -> MutexGuard<'_, BatchRecord> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|version| *version += 1);
    }

    pub fn push_event(&self, event: RuntimeEvent) {
        self.record().events.push(event);
        self.notify();
    }

    pub fn push_result(&self, result: ExeScriptCommandResult) {
        {
            let mut record = self.record();
            record.finished |= result.is_batch_finished;
            record.results.push(result);
        }
        self.notify();
    }

    pub fn is_finished(&self) -> bool {
        self.record().finished
    }

    /// Results so far (up to `command_index` if given), waiting up to `timeout`
    /// for that index or, without one, for the end of the batch.
    pub async fn results(
        &self,
        command_index: Option<u32>,
        timeout: Duration,
    ) -> Vec<ExeScriptCommandResult> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.changed.subscribe();
        loop {
            changes.borrow_and_update();
            {
                let record = self.record();
                let done = match command_index {
                    Some(index) => record.finished || record.results.len() > index as usize,
                    None => record.finished,
                };
                if done || tokio::time::Instant::now() >= deadline {
                    return record
                        .results
                        .iter()
                        .filter(|result| command_index.is_none_or(|index| result.index <= index))
                        .cloned()
                        .collect();
                }
            }
            // The sender lives in `self`, so `changed` only ends by a change or the deadline.
            let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
        }
    }

    /// Every event from the batch's start, then live ones, until it finishes.
    pub fn events(self: Arc<Self>) -> impl Stream<Item = RuntimeEvent> + Send + 'static {
        let changes = self.changed.subscribe();
        futures::stream::unfold(
            (self, changes, 0usize),
            |(batch, mut changes, position)| async move {
                loop {
                    changes.borrow_and_update();
                    {
                        let record = batch.record();
                        if let Some(event) = record.events.get(position) {
                            let event = event.clone();
                            drop(record);
                            return Some((event, (batch, changes, position + 1)));
                        }
                        if record.finished {
                            return None;
                        }
                    }
                    changes.changed().await.ok()?;
                }
            },
        )
    }
}

/// All batches of the activity by id.
#[derive(Default)]
pub struct BatchStore {
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    batches: HashMap<String, Arc<Batch>>,
    order: VecDeque<String>,
}

impl BatchStore {
    fn inner(&self) -> MutexGuard<'_, StoreInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Register a new batch; Conflict if the id was used before.
    pub fn create(&self, batch_id: &str) -> Result<Arc<Batch>, GolemError> {
        let mut inner = self.inner();
        if inner.batches.contains_key(batch_id) {
            return Err(GolemError::conflict(format!(
                "batch {batch_id} already exists"
            )));
        }
        while inner.order.len() >= MAX_BATCHES {
            let oldest_finished = inner.order.iter().position(|id| {
                inner
                    .batches
                    .get(id)
                    .is_none_or(|batch| batch.is_finished())
            });
            let Some(position) = oldest_finished else {
                break;
            };
            if let Some(id) = inner.order.remove(position) {
                inner.batches.remove(&id);
            }
        }
        let batch = Arc::new(Batch::new());
        inner.batches.insert(batch_id.to_string(), batch.clone());
        inner.order.push_back(batch_id.to_string());
        Ok(batch)
    }

    pub fn get(&self, batch_id: &str) -> Result<Arc<Batch>, GolemError> {
        self.inner()
            .batches
            .get(batch_id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("batch {batch_id} not found")))
    }
}
