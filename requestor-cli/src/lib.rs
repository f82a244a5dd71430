//! The requestor side of the Golem network in Rust: the high-level API
//! ([`Session`]: budget, demand, negotiation with many providers, a task
//! executor with retries, payments) and the `golem-requestor` CLI over it
//! ([`cli::run`]). It talks to the local daemon only through its REST API.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod demand;
pub mod error;
pub mod events;
pub mod files;
pub mod job;
pub mod leftovers;
pub mod market;
pub mod package;
pub mod payments;
pub mod session;

pub use demand::{DemandSpec, PriceCaps, Runtime};
pub use error::RequestorError;
pub use events::{Event, EventSink};
pub use files::{FileTransfer, HttpFiles};
pub use session::{
    JobOptions, JobReport, PaymentSummary, Session, SessionConfig, Step, TaskOutcome, TaskSpec,
};

/// Parse the process arguments and run the CLI; the exit code.
pub async fn run() -> i32 {
    use clap::Parser;
    cli::run(cli::Cli::parse()).await
}
