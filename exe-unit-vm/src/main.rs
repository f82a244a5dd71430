//! `exe-unit-vm`: see `golem_exe_unit` for the command line (the spawn
//! contract); its own settings come from the environment ([`VmConfig`]).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use exe_unit_vm::config::VmConfig;
use exe_unit_vm::VmRuntime;

fn main() -> ExitCode {
    let config = match VmConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("exe-unit-vm: {error}");
            return ExitCode::from(2);
        }
    };
    golem_exe_unit::cli::main(move |activity| VmRuntime::with_config(activity, config))
}
