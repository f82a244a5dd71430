//! Exe-unit core: the process side of an exe unit (bus connection, state machine,
//! ExeScript interpreter, transfers, usage counters) and the `Runtime` trait that
//! the WASM and VM exe units implement. Lands with the activity issue.
#![forbid(unsafe_code)]
