//! `golem-daemon` binary: parse the command line, layer the configuration, set
//! up logging and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use golem_daemon::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(ref run_args) => {
            cli::load_config(&cli.global, Some(run_args)).and_then(|config| {
                cli::init_tracing(config.log_format);
                cli::run_until_signal(config)
            })
        }
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
