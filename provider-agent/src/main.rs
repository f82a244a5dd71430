//! golem-provider, the provider agent. Sells this machine's resources; lands with the provider issue.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("{}: not yet implemented (see the project's open issues)", env!("CARGO_PKG_NAME"));
    std::process::exit(2);
}
