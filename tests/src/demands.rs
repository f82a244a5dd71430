//! Demands as a requestor sends them to a provider agent: a task package
//! (the hello.wasm test module served over HTTP on loopback) and a demand
//! decorated by a fresh allocation on the dummy platform.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::path::{Path, PathBuf};

use golem_client::GolemClient;
use golem_model::market::DemandOfferBase;
use serde_json::json;
use sha3::Digest;

use crate::http::FileServer;

/// The payment platform of these demands.
pub const DUMMY_PLATFORM: &str = "dummy-local-tglm";

/// Serve `exe-unit-wasm/tests/modules/hello.wat`, compiled, from `dir`;
/// returns the server (keep it) and the `hash:sha3:<hex>:<url>` package.
pub async fn serve_hello_wasm(dir: &Path) -> (FileServer, String) {
    std::fs::create_dir_all(dir).unwrap();
    let hello = wat::parse_file(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../exe-unit-wasm/tests/modules/hello.wat"),
    )
    .unwrap();
    std::fs::write(dir.join("hello.wasm"), &hello).unwrap();
    let server = FileServer::start(dir.to_path_buf()).await.unwrap();
    let package = format!(
        "hash:sha3:{}:{}",
        hex::encode(sha3::Sha3_224::digest(&hello)),
        server.url("hello.wasm")
    );
    (server, package)
}

/// A demand for `runtime` on `subnet` running `package`, valid 10 minutes,
/// paid from a new allocation of 100 on [`DUMMY_PLATFORM`].
pub async fn paid_demand(
    requestor: &GolemClient,
    subnet: &str,
    runtime: &str,
    package: &str,
) -> DemandOfferBase {
    let allocation = requestor
        .create_allocation(DUMMY_PLATFORM, "100")
        .await
        .unwrap();
    let decoration = requestor
        .demand_decorations(&[&allocation.allocation_id])
        .await
        .unwrap();
    let mut properties = json!({
        "golem.node.debug.subnet": subnet,
        "golem.srv.comp.task_package": package,
        "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 600_000,
        "golem.com.payment.chosen-platform": DUMMY_PLATFORM,
    });
    for property in &decoration.properties {
        properties[&property.key] = json!(property.value);
    }
    DemandOfferBase {
        properties,
        constraints: format!(
            "(&(golem.node.debug.subnet={subnet})(golem.runtime.name={runtime}){})",
            decoration.constraints.join("")
        ),
    }
}
