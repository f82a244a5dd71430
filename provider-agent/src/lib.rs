//! golem-provider, the provider agent: sells this machine's resources on the
//! Golem network. It talks to its local golem-daemon only over the REST API with
//! an app-key, subscribes offers for the exe units that work here, negotiates by
//! a policy, spawns and supervises exe units for activities, and bills usage
//! with debit notes and invoices. [`cli::run`] is the whole program.
#![forbid(unsafe_code)]

pub mod agent;
pub mod billing;
pub mod capacity;
pub mod clean;
pub mod cli;
pub mod config;
pub mod config_command;
pub mod dashboard;
pub mod earnings;
pub mod exe_unit_command;
pub mod exe_units;
pub mod machine;
pub mod negotiation;
pub mod offer;
pub mod outbound;
pub mod presets;
pub mod state;
pub mod status;
