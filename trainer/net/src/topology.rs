//! Who trains which stage of a pipeline, and who audits it: [`PeerTable`], the static form
//! of what chain assignment provides (the pallets' stage records hold the same: per stage a
//! peer id and addresses, and the auditors drawn for it). The trainer builds one from chain
//! state; `weft-trainer pipeline` reads one from a TOML file.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::path::Path;
use weft_p2p::{Address, PeerId};
use weft_primitives::step::{Replica, RunId};

/// Where one stage's trainer is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePeer {
    /// Its identity.
    pub peer_id: PeerId,
    /// Its addresses.
    pub addrs: Vec<Address>,
}

impl StagePeer {
    /// The peer a trainer record declares on chain (`Staking::train`): `peer_id` the binary
    /// libp2p peer id (or its base58 text), each address a multiaddr as UTF-8 text (or
    /// binary). `None` if either does not parse.
    pub fn from_declared(peer_id: &[u8], addrs: &[Vec<u8>]) -> Option<StagePeer> {
        let peer_id = PeerId::from_bytes(peer_id)
            .ok()
            .or_else(|| std::str::from_utf8(peer_id).ok()?.parse().ok())?;
        let addrs = addrs
            .iter()
            .map(|a| {
                Address::try_from(a.clone())
                    .ok()
                    .or_else(|| std::str::from_utf8(a).ok()?.parse().ok())
            })
            .collect::<Option<Vec<_>>>()?;
        Some(StagePeer { peer_id, addrs })
    }
}

/// Who trains which stage, and who audits it: the static form of what chain assignment
/// will provide (the pallets' stage records hold the same: per stage a peer id and
/// addresses, and the auditors drawn for it).
///
/// TOML form:
///
/// ```toml
/// run = 0                      # optional; must match --run when present
/// [[stage]]
/// stage = 0
/// peer_id = "12D3KooW…"
/// addrs = ["/ip4/127.0.0.1/tcp/40100"]
/// [[auditor]]                  # optional, any number
/// stage = 0
/// peer_id = "12D3KooW…"
/// [[replica]]                  # optional: the other replicas of this trainer's stage
/// replica = 1
/// peer_id = "12D3KooW…"
/// addrs = ["/ip4/127.0.0.1/tcp/40102"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTable {
    /// The run, if the table names one.
    pub run: Option<RunId>,
    /// Stage `i`'s trainer at index `i`.
    pub stages: Vec<StagePeer>,
    /// `(stage, auditor)` pairs.
    pub auditors: Vec<(usize, PeerId)>,
    /// The other replicas of this table's own stage, for replicas that average: `(replica,
    /// its trainer)`, ascending.
    pub replicas: Vec<(Replica, StagePeer)>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<RunId>,
    stage: Vec<StageEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    auditor: Vec<AuditorEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replica: Vec<ReplicaEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaEntry {
    replica: Replica,
    peer_id: String,
    addrs: Vec<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StageEntry {
    stage: usize,
    peer_id: String,
    addrs: Vec<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditorEntry {
    stage: usize,
    peer_id: String,
}

fn parse_peer(s: &str) -> Result<PeerId> {
    s.parse()
        .map_err(|e| Error::Peers(format!("bad peer id {s:?}: {e}")))
}

fn parse_peer_entry(peer_id: &str, addrs: &[String]) -> Result<StagePeer> {
    let addrs = addrs
        .iter()
        .map(|a| {
            a.parse::<Address>()
                .map_err(|err| Error::Peers(format!("bad address {a:?}: {err}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StagePeer {
        peer_id: parse_peer(peer_id)?,
        addrs,
    })
}

impl PeerTable {
    /// Parses the TOML form.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: TableFile =
            toml::from_str(text).map_err(|e| Error::Peers(format!("invalid TOML: {e}")))?;
        let n = file.stage.len();
        let mut stages: Vec<Option<StagePeer>> = vec![None; n];
        for e in file.stage {
            if e.stage >= n {
                return Err(Error::Peers(format!(
                    "stage {} listed, but only {n} stages",
                    e.stage
                )));
            }
            if stages[e.stage].is_some() {
                return Err(Error::Peers(format!("stage {} listed twice", e.stage)));
            }
            stages[e.stage] = Some(parse_peer_entry(&e.peer_id, &e.addrs)?);
        }
        let stages = stages
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Peers("stages must be numbered 0..S without gaps".into()))?;
        let auditors = file
            .auditor
            .iter()
            .map(|a| Ok((a.stage, parse_peer(&a.peer_id)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut replicas = file
            .replica
            .iter()
            .map(|r| Ok((r.replica, parse_peer_entry(&r.peer_id, &r.addrs)?)))
            .collect::<Result<Vec<_>>>()?;
        replicas.sort_by_key(|(r, _)| *r);
        if replicas.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::Peers("a replica listed twice".into()));
        }
        Ok(PeerTable {
            run: file.run,
            stages,
            auditors,
            replicas,
        })
    }

    /// Reads the TOML form from a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text)
    }

    /// The TOML form.
    pub fn to_toml(&self) -> Result<String> {
        let file = TableFile {
            run: self.run,
            stage: self
                .stages
                .iter()
                .enumerate()
                .map(|(i, p)| StageEntry {
                    stage: i,
                    peer_id: p.peer_id.to_string(),
                    addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
            auditor: self
                .auditors
                .iter()
                .map(|(s, p)| AuditorEntry {
                    stage: *s,
                    peer_id: p.to_string(),
                })
                .collect(),
            replica: self
                .replicas
                .iter()
                .map(|(r, p)| ReplicaEntry {
                    replica: *r,
                    peer_id: p.peer_id.to_string(),
                    addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
        };
        toml::to_string(&file).map_err(|e| Error::Peers(e.to_string()))
    }

    /// The auditors of `stage`.
    pub fn auditors_of(&self, stage: usize) -> HashSet<PeerId> {
        self.auditors
            .iter()
            .filter(|(s, _)| *s == stage)
            .map(|(_, p)| *p)
            .collect()
    }
}
