//! golem-requestor: a thin binary over [`golem_requestor::run`].
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() {
    let code = golem_requestor::run().await;
    std::process::exit(code);
}
