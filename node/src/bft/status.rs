//! What the network service tells the RPC: peers and whether the node is catching up.

use serde::Serialize;
use std::sync::{OnceLock, RwLock};
use weft_node_net::NetworkHandle;

/// One connected peer, as `system_peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerJson {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its finalized height, when it told us (sync status).
    pub best_number: Option<u64>,
}

/// Shared, updated by the service.
#[derive(Default)]
pub struct NetworkStatus {
    inner: RwLock<Snapshot>,
    handle: OnceLock<NetworkHandle>,
}

/// A consistent view.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Connected peers.
    pub peers: Vec<PeerJson>,
    /// Importing blocks from a peer rather than following consensus live.
    pub is_syncing: bool,
    /// This node's peer id.
    pub local_peer_id: String,
}

impl NetworkStatus {
    /// The current view.
    pub fn snapshot(&self) -> Snapshot {
        match self.inner.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The network, once it runs (never on `--dev`).
    pub fn handle(&self) -> Option<&NetworkHandle> {
        self.handle.get()
    }

    /// Records the running network.
    pub fn set_handle(&self, handle: NetworkHandle) {
        let _ = self.handle.set(handle);
    }

    /// Changes the view.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        match self.inner.write() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}
