//! A local Tendermint testnet of real `weft-node` processes on loopback (`--chain local`):
//! the genesis validators //Alice, //Bob, //Charlie and //Dave, node 0 the bootnode of the
//! others, each with its own base path, node key, ports and log.

use crate::{bin, pick_free_port, wait_for, Node};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use weft_primitives::{Hash, Header};
use weft_rpc_api::ChainApiClient;

/// The genesis validators of `chain-spec/local.json`, in node order.
pub const LOCAL_VALIDATORS: [&str; 4] = ["//Alice", "//Bob", "//Charlie", "//Dave"];

/// A running testnet.
pub struct Testnet {
    /// The nodes, validators first.
    pub nodes: Vec<Node>,
    /// Each node's peer-to-peer port.
    pub p2p_ports: Vec<u16>,
    /// Each node's libp2p peer id.
    pub peer_ids: Vec<String>,
    /// Each node's role arguments (`--validator --key …`, or none).
    roles: Vec<Vec<String>>,
    dir: PathBuf,
}

/// Writes a node key with `weft-node key generate-node-key` and returns its peer id.
pub fn generate_node_key(file: &Path) -> Result<String> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = Command::new(bin("weft-node"))
        .args(["key", "generate-node-key", "--file"])
        .arg(file)
        .output()
        .context("running weft-node key generate-node-key")?;
    if !out.status.success() {
        bail!(
            "generate-node-key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Testnet {
    /// Starts the four genesis validators under `dir` and waits until each answers RPC.
    pub async fn start(dir: &Path) -> Result<Testnet> {
        Self::start_with(dir, &["weft-node"; 4]).await
    }

    /// Starts the four genesis validators, node `i` running `binaries[i]` (`weft-node` or
    /// the test-only `weft-equivocator`).
    pub async fn start_with(dir: &Path, binaries: &[&'static str; 4]) -> Result<Testnet> {
        let mut net = Testnet {
            nodes: Vec::new(),
            p2p_ports: Vec::new(),
            peer_ids: Vec::new(),
            roles: Vec::new(),
            dir: dir.to_path_buf(),
        };
        for (suri, binary) in LOCAL_VALIDATORS.iter().zip(binaries) {
            let role = vec!["--validator".into(), "--key".into(), suri.to_string()];
            net.add_node_with(binary, role)?;
        }
        for node in &mut net.nodes {
            node.wait_ready().await?;
        }
        Ok(net)
    }

    /// `/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>` of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{}",
            self.p2p_ports[i], self.peer_ids[i]
        )
    }

    fn args_of(&self, i: usize) -> Vec<String> {
        let mut args = self.roles[i].clone();
        // Every node is on 127.0.0.1: the per-IP connection limit must fit them all.
        args.extend([
            "--block-time".into(),
            "500ms".into(),
            "--max-peers-per-ip".into(),
            "64".into(),
        ]);
        if i > 0 {
            args.extend(["--bootnodes".into(), self.addr(0)]);
        }
        args
    }

    /// Starts one more `weft-node` with `role` arguments (none: a full node); returns its
    /// index.
    pub fn add_node(&mut self, role: Vec<String>) -> Result<usize> {
        self.add_node_with("weft-node", role)
    }

    fn add_node_with(&mut self, binary: &'static str, role: Vec<String>) -> Result<usize> {
        let i = self.nodes.len();
        let base = self.dir.join(format!("node{i}"));
        let peer = generate_node_key(&base.join("node-key"))?;
        self.p2p_ports.push(pick_free_port());
        self.peer_ids.push(peer);
        self.roles.push(role);
        let args = self.args_of(i);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = Node::spawn_local(binary, &base, self.p2p_ports[i], &refs)?;
        self.nodes.push(node);
        Ok(i)
    }

    /// Restarts node `i` (after `kill9`) on its base path, ports and key.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        let args = self.args_of(i);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes[i].respawn(&refs)?;
        self.nodes[i].wait_ready().await
    }

    /// Node `i`'s finalized header and hash.
    pub async fn finalized(&self, i: usize) -> Result<(Header, Hash)> {
        let client = self.nodes[i].client().await?;
        let hash = client.finalized_head().await?;
        let header = client
            .header(Some(hash))
            .await?
            .context("the finalized header is missing")?;
        Ok((header, hash))
    }

    /// Waits until node `i` has finalized block `n`; returns its finalized height.
    pub async fn wait_finalized(&self, i: usize, n: u64, timeout: Duration) -> Result<u64> {
        let what = format!("node {i} to finalize #{n}");
        let result = wait_for(timeout, &what, || async {
            match self.finalized(i).await {
                Ok((h, _)) if h.number >= n => Some(h.number),
                _ => None,
            }
        })
        .await;
        result.with_context(|| format!("node {i} log:\n{}", self.nodes[i].log_tail()))
    }
}
