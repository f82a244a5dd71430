//! `golem-daemon` binary: parse the command line, layer the configuration, set
//! up logging and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use golem_daemon::cli::{self, Cli, Command};

fn main() -> ExitCode {
    // Everything the daemon creates (data dir, sled files, socket) is for its
    // user only; `store::make_private` also fixes what exists already.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(ref flags) => cli::load_config(&cli.global, Some(flags)).and_then(|config| {
            cli::init_tracing(config.log_format);
            cli::run_until_signal(config)
        }),
        command => cli::execute(&cli.global, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
