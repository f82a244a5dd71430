//! Progress events of a session, for progress bars, `--json` lines and tests.
//! Every event is one serde-tagged JSON object (`{"event": "task_finished", ...}`).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::leftovers::Journal;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    SessionStarted {
        allocation_id: String,
        platform: String,
        budget: String,
    },
    DemandPublished {
        subnet: String,
        runtime: String,
    },
    OfferReceived {
        provider_id: String,
        provider_name: String,
        expected_cost: f64,
    },
    OfferSkipped {
        provider_id: String,
        provider_name: String,
        reason: String,
    },
    AgreementSigned {
        agreement_id: String,
        provider_id: String,
        provider_name: String,
    },
    NegotiationFailed {
        provider_id: String,
        message: String,
    },
    /// The matching providers that refused us for capacity and are waited
    /// for (sent each time the list changes; empty once none is).
    ProvidersBusy {
        provider_names: Vec<String>,
    },
    ActivityCreated {
        activity_id: String,
        provider_name: String,
    },
    TaskStarted {
        task_id: String,
        provider_name: String,
        attempt: u32,
    },
    TaskFinished {
        task_id: String,
        provider_name: String,
        seconds: f64,
    },
    /// The captured output of a finished task.
    TaskOutput {
        task_id: String,
        stdout: String,
        stderr: String,
    },
    TaskFailed {
        task_id: String,
        provider_name: String,
        message: String,
        will_retry: bool,
    },
    ProviderFailed {
        provider_id: String,
        provider_name: String,
        message: String,
    },
    DebitNoteAccepted {
        agreement_id: String,
        provider_name: String,
        amount: String,
    },
    InvoiceAccepted {
        agreement_id: String,
        provider_name: String,
        amount: String,
    },
    PaymentRefused {
        agreement_id: String,
        provider_name: String,
        message: String,
    },
    BudgetExhausted {
        message: String,
    },
    AgreementTerminated {
        agreement_id: String,
        provider_name: String,
    },
    /// A service runs and its ports are forwarded (`local -> vm-ip:port`).
    ServiceReady {
        provider_name: String,
        forwards: Vec<String>,
    },
    /// The service's command exited well (it may have daemonized): forwarding goes on.
    ServiceCommandEnded {
        provider_name: String,
    },
    JobFinished {
        tasks_done: usize,
        tasks_failed: usize,
        seconds: f64,
    },
}

/// Where a session sends its events; a no-op when nobody listens.
#[derive(Clone, Default)]
pub struct EventSink {
    sender: Option<mpsc::UnboundedSender<Event>>,
    /// Notes the agreements signed, for the clean-up after a crash.
    journal: Option<Arc<Journal>>,
}

impl EventSink {
    /// A sink and the receiver of its events.
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let sink = EventSink {
            sender: Some(sender),
            journal: None,
        };
        (sink, receiver)
    }

    /// The same sink, noting signed agreements in `journal` as well.
    pub fn with_journal(self, journal: Option<Arc<Journal>>) -> EventSink {
        EventSink { journal, ..self }
    }

    pub fn emit(&self, event: Event) {
        tracing::debug!(?event, "session event");
        if let (Some(journal), Event::AgreementSigned { agreement_id, .. }) =
            (&self.journal, &event)
        {
            // Logged there; the next agreement's write holds this one too.
            let _ = journal.agreement(agreement_id);
        }
        if let Some(sender) = &self.sender {
            let _ = sender.send(event);
        }
    }
}
