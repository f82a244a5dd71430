//! golem-provider: the provider agent's binary; everything is in the library.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(golem_provider::cli::run());
}
