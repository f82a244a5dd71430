//! `exe-unit-vm`: see `golem_exe_unit` for the command line (the spawn contract).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use exe_unit_vm::VmRuntime;

fn main() -> ExitCode {
    golem_exe_unit::cli::main(VmRuntime::new)
}
