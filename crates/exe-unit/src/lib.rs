//! Exe-unit core: the process side of an exe unit. It owns the bus connection
//! to the daemon, the activity state machine, the ExeScript interpreter,
//! output capture, transfers, task-package download and usage counters; a
//! kind of exe unit (WASM, VM) only implements the [`Runtime`] trait and calls
//! [`cli::main`] from its `main.rs`. It must never talk to other nodes or
//! to the REST API: everything goes through the daemon's bus socket (a
//! runtime given the bus by [`Runtime::attach_bus`], like the VM unit's VPN,
//! reaches other nodes only as `/net/<node>/public/...` through it).
//!
//! # Spawn contract
//!
//! The provider agent (or a test) starts one exe-unit process per activity:
//!
//! ```text
//! <exe-unit> run --activity-id <ID> --agreement <FILE> --work-dir <DIR>
//!                --cache-dir <DIR> --bus-socket <PATH>
//!                [--max-run-time <SECONDS>] [--cache-max-packages <N>]
//!                [--allow-private-transfers]
//!                [--log-level <FILTER>] [--log-format text|json]
//! <exe-unit> offer-template
//! ```
//!
//! - `--agreement`: the agreement JSON as the market API returns it; the exe
//!   unit reads `agreementId`, `offer.providerId` (its own node id),
//!   `demand.requestorId` (`file://` packages only when it equals the
//!   provider's id) and
//!   flat (or nested) `offer.properties` / `demand.properties`:
//!   `golem.srv.comp.task_package` (`hash:sha3:<hex>:<url>`),
//!   `golem.inf.mem.gib` (memory limit), `golem.inf.storage.gib` (caps a
//!   package download and the bytes transfers write into the volumes, else
//!   10 GiB), `golem.srv.comp.expiration` (caps
//!   the run time), `golem.com.usage.vector` (order of usage counters).
//! - `--work-dir`: the activity's own directory; volumes are created under it
//!   and `container:` transfers never leave them. `--cache-dir` is shared by
//!   activities (packages are cached by hash). Both are created if missing.
//! - `--bus-socket`: the daemon's `<data-dir>/bus.sock`. The exe unit
//!   connects (Hello), binds `/local/exeunit/<ID>`, reports `Initialized` to
//!   `/local/activity` and from then on state changes, runtime events,
//!   command results and usage (every second); see
//!   [`golem_model::activity`] for the messages.
//! - `--max-run-time`: the provider's limit for one `run` (default 1800 s).
//! - `--allow-private-transfers`: transfers and package downloads may reach
//!   loopback, private, link-local and other non-public addresses (see
//!   [`outbound`]); without it they reach public addresses only.
//! - `--cache-max-packages`: how many packages a runtime that caches what it
//!   made of them keeps (default `GOLEM_CACHE_MAX_PACKAGES`, else 10); the
//!   VM unit evicts its least recently used images beyond it.
//! - It exits 0 after `Shutdown`, a `terminate` command, SIGTERM/SIGINT, or
//!   when the daemon closes the bus connection (reporting Terminated with the
//!   reason first when it still can); it also receives SIGTERM when its parent
//!   dies (`PR_SET_PDEATHSIG`). Exit code 2: bad arguments or agreement file;
//!   1: cannot reach the bus or bind the address. Logs go to stderr.
//! - `offer-template` prints the offer properties the exe unit contributes as
//!   one JSON object: the runtime's `golem.runtime.name`,
//!   `golem.runtime.version`, `golem.runtime.capabilities`, plus the core's
//!   `golem.activity.caps.transfer.protocol`.
#![forbid(unsafe_code)]

pub mod activity;
pub mod agreement;
pub mod batches;
pub mod capture;
pub mod cli;
pub mod confined;
pub mod outbound;
pub mod package;
pub mod runtime;
pub mod service;
pub mod state;
pub mod transfer;

pub use activity::{Activity, ActivityConfig, Report};
pub use agreement::Agreement;
pub use runtime::{
    DeployRequest, Deployment, OutputChunk, OutputSender, RunRequest, Runtime, RuntimeError,
    Volume, VolumeAccess,
};
pub use service::run;
