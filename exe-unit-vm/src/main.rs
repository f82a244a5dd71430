//! VM exe unit (Docker through bollard). Runs one activity's container; lands with the VM issue.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("{}: not yet implemented (see the project's open issues)", env!("CARGO_PKG_NAME"));
    std::process::exit(2);
}
