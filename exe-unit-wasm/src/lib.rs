//! The WASM exe unit (runtime name `wasmtime`): runs WASI preview 1 modules of
//! a Golem WASM package on wasmtime, one process per activity. It implements
//! only the [`golem_exe_unit::Runtime`] trait; the bus, state machine,
//! ExeScript, capture, transfers and package download are the core's.
//! It must not give modules anything beyond WASI preview 1 and the package's
//! mount points: no network, no other host directories.
#![forbid(unsafe_code)]

pub mod output;
pub mod package;
pub mod runtime;

pub use runtime::{WasmRuntime, RUNTIME_NAME};
