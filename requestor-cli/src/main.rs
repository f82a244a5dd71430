//! golem-requestor, the requestor CLI over the high-level requestor API; lands with the requestor issue.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("{}: not yet implemented (see the project's open issues)", env!("CARGO_PKG_NAME"));
    std::process::exit(2);
}
