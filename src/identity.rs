//! A storage node's identity in its data directory (`node.json`): its name and the address it
//! served last, so a node restarted with the command line it ran with (`--listen
//! 127.0.0.1:0` included) comes back under the same name on the same port, where the
//! catalog's coordinators look for it.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of `node.json`; a newer one is refused, not guessed at.
const FORMAT: u32 = 1;

/// What a storage node remembers of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Node name.
    pub name: String,
    /// The address it was serving (`host:port`).
    pub addr: String,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    #[serde(flatten)]
    identity: Identity,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

impl Identity {
    /// The identity recorded in `data_dir`, if one is (an unreadable file is logged and ignored:
    /// the node then starts as its command line says).
    pub fn read(data_dir: &Path) -> Option<Identity> {
        let bytes = std::fs::read(path(data_dir)).ok()?;
        match serde_json::from_slice::<OnDisk>(&bytes) {
            Ok(d) if d.format == FORMAT => Some(d.identity),
            Ok(d) => {
                tracing::warn!(format = d.format, "node.json has a newer format; ignored");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "node.json is unreadable; ignored");
                None
            }
        }
    }

    /// Records this identity in `data_dir`, atomically.
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT,
            identity: self.clone(),
        })?;
        tessera_shared::fsutil::write_atomically(&path(data_dir), &bytes)
            .with_context(|| format!("writing {}", path(data_dir).display()))
    }
}

/// Binds `listen`; with port 0 and a recorded address on the same host, the recorded port
/// first (a node that comes back elsewhere would not be found), any free port if that one is
/// taken.
pub async fn bind(
    listen: &str,
    known: Option<&Identity>,
) -> anyhow::Result<tokio::net::TcpListener> {
    if let (Some((host, "0")), Some(id)) = (listen.rsplit_once(':'), known) {
        if id.addr.rsplit_once(':').map(|(h, _)| h) == Some(host) {
            match tokio::net::TcpListener::bind(&id.addr).await {
                Ok(l) => return Ok(l),
                Err(e) => tracing::warn!(
                    addr = %id.addr, error = %e,
                    "this node's previous address is taken; serving on a new port (coordinators must be told)"
                ),
            }
        }
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_comes_back_on_its_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Identity::read(dir.path()), None);
        let first = bind("127.0.0.1:0", None).await.expect("bind");
        let addr = first.local_addr().expect("addr").to_string();
        let id = Identity {
            name: "storage-7".into(),
            addr: addr.clone(),
        };
        id.write(dir.path()).expect("write");
        drop(first);
        let known = Identity::read(dir.path()).expect("read");
        assert_eq!(known, id);
        let again = bind("127.0.0.1:0", Some(&known)).await.expect("rebind");
        assert_eq!(again.local_addr().expect("addr").to_string(), addr);
        // Taken: a new port rather than no node.
        let other = bind("127.0.0.1:0", Some(&known)).await.expect("elsewhere");
        assert_ne!(other.local_addr().expect("addr").to_string(), addr);
    }
}
