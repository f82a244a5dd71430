//! WASM exe unit (wasmtime + WASI preview 1). Runs one activity's WASI modules; lands with the activity issue.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("{}: not yet implemented (see the project's open issues)", env!("CARGO_PKG_NAME"));
    std::process::exit(2);
}
