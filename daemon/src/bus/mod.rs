//! The daemon's side of the bus: binds each service's endpoint on the node's
//! [`Router`] and serves that router on `<data-dir>/bus.sock` (mode 0600) for
//! exe units and CLIs. It owns no service logic.

use std::path::{Path, PathBuf};

use golem_bus::{server, Router};
use golem_model::identity::IDENTITY_SERVICE;
use golem_model::NodeId;
use tokio_util::sync::CancellationToken;

use crate::identity::IdentityService;

pub struct BusServer {
    pub socket_path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl BusServer {
    pub async fn stop(self) {
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Bind the identity endpoint on `router`.
pub fn bind_services(
    router: &Router,
    identity: &IdentityService,
) -> Result<(), golem_model::GolemError> {
    router.bind(IDENTITY_SERVICE, identity.endpoint())
}

/// Serve `router` on the socket at `socket_path` until `shutdown`.
pub fn start(
    socket_path: &Path,
    router: Router,
    node_id: NodeId,
    shutdown: CancellationToken,
) -> std::io::Result<BusServer> {
    let listener = server::bind_socket(socket_path)?;
    let task = tokio::spawn(server::serve(listener, router, Some(node_id), shutdown));
    Ok(BusServer {
        socket_path: socket_path.to_path_buf(),
        task,
    })
}
