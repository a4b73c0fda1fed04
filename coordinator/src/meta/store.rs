//! [`RaftCatalog`]: the catalog store of a coordinator that is a member of the metadata Raft
//! group. Reads are the local state machine's copy (no network on the planning path);
//! changes are Raft writes, forwarded to the leader when this member is not it.
//!
//! A change is acknowledged once it is committed *and* every member that answers has
//! applied it (each is asked, for up to [`APPLY_WAIT`]), so a client that changed the schema
//! through one coordinator and then asks another sees the change there too. A member that
//! starts (or restarts) serves nothing until it has caught up with the leader.

use super::log::LogStore;
use super::network::MemberStatus;
use super::network::{self, Network};
use super::state::{Published, StateMachine};
use super::{MetaRaft, MetaRequest, MetaResponse};
use crate::catalog::store::CatalogStore;
use crate::catalog::{Catalog, CatalogCommand};
use crate::error::CoordError;
use openraft::errors::ForwardReason;
use openraft::{BasicNode, Config};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a change waits for the other members to apply it before it is acknowledged
/// anyway (a member that is down catches up when it returns, before serving).
pub const APPLY_WAIT: Duration = Duration::from_secs(2);

/// How long a change keeps trying to find a leader (elections take under a second).
pub const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Where this member stands in the metadata group.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This member's id (1, 2, …).
    pub id: u64,
    /// Listen address of the metadata RPC (`host:port`).
    pub listen: String,
    /// Every member's id and metadata RPC address, this one included.
    pub members: BTreeMap<u64, String>,
    /// Directory of the Raft log and snapshots.
    pub dir: PathBuf,
}

/// The catalog store backed by the metadata Raft group.
pub struct RaftCatalog {
    id: u64,
    raft: MetaRaft,
    published: Published,
    members: BTreeMap<u64, String>,
    /// Stops the metadata RPC server.
    stop_server: tokio::sync::watch::Sender<bool>,
}

fn io_err<E: std::fmt::Display>(e: E) -> CoordError {
    CoordError::Io(e.to_string())
}

impl RaftCatalog {
    /// Starts this member: opens its log and snapshot, serves the metadata RPC, initialises
    /// the group if this is its lowest-numbered member and nothing was ever written, then
    /// waits until a leader is known and this member has caught up with it.
    pub async fn start(cfg: MetaConfig) -> Result<RaftCatalog, CoordError> {
        let log = LogStore::open(&cfg.dir).map_err(io_err)?;
        let sm = StateMachine::open(&cfg.dir).map_err(io_err)?;
        let published = sm.published();
        let config = Config {
            cluster_name: "tessera-meta".into(),
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        }
        .validate()
        .map_err(io_err)?;
        let raft = MetaRaft::new(cfg.id, Arc::new(config), Network, log, sm)
            .await
            .map_err(io_err)?;
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| CoordError::Io(format!("metadata listen {}: {e}", cfg.listen)))?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let service = network::server(raft.clone());
        let (stop_server, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
            {
                tracing::error!(error = %e, "metadata RPC server stopped");
            }
        });
        let first = cfg.members.keys().next().copied();
        if first == Some(cfg.id) && !raft.is_initialized().await.map_err(io_err)? {
            let members: BTreeMap<u64, BasicNode> = cfg
                .members
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(members = cfg.members.len(), "metadata group initialised"),
                Err(e) => tracing::info!(error = %e, "metadata group already initialised"),
            }
        }
        let me = RaftCatalog {
            id: cfg.id,
            raft,
            published,
            members: cfg.members,
            stop_server,
        };
        me.catch_up().await?;
        Ok(me)
    }

    /// Stops this member: its Raft tasks and its RPC server.
    pub async fn shutdown(&self) {
        let _ = self.stop_server.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata member did not stop cleanly");
        }
    }

    /// This member's Raft handle.
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    /// Waits until the leader's read index is applied here.
    async fn catch_up(&self) -> Result<(), CoordError> {
        let deadline = Instant::now() + LEADER_WAIT * 3;
        loop {
            match self.leader_call("barrier", &()).await {
                Ok(r) => {
                    self.wait_applied(r.index, Duration::from_secs(10)).await?;
                    let m = super::metrics(&self.raft);
                    tracing::info!(
                        member = self.id,
                        leader = ?m.current_leader,
                        term = m.current_term,
                        applied = r.index,
                        "metadata member caught up"
                    );
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for the metadata group");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), CoordError> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "catalog change applied")
            .await
            .map(|_| ())
            .map_err(|e| CoordError::Io(format!("metadata group: {e}")))
    }

    /// Sends a `write` or `barrier` to the current leader (this member or another), retrying
    /// while no leader is known, for up to [`LEADER_WAIT`].
    async fn leader_call<T: Serialize>(
        &self,
        kind: &str,
        value: &T,
    ) -> Result<MetaResponse, CoordError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut last = String::from("no leader");
        while Instant::now() < deadline {
            let leader = super::metrics(&self.raft).current_leader;
            if let Some(addr) = leader.and_then(|l| self.members.get(&l)) {
                match network::client(addr) {
                    Ok(mut c) => {
                        match network::call::<T, MetaResponse>(
                            &mut c,
                            "write",
                            kind,
                            value,
                            Duration::from_secs(5),
                        )
                        .await
                        {
                            Ok(r) => return Ok(r),
                            Err(e) => last = e,
                        }
                    }
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(CoordError::Storage {
            sqlstate: "57P03".into(),
            message: format!("the metadata group has no reachable leader: {last}"),
        })
    }

    /// Proposes `req`: locally when this member leads, else through the leader.
    async fn write(&self, req: MetaRequest) -> Result<MetaResponse, CoordError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let resp = loop {
            match self.raft.client_write(req.clone()).await {
                Ok(r) => break r.data,
                Err(e) => match e.forward_to_leader() {
                    Some(f) if f.reason == ForwardReason::NotLeader && f.leader_id.is_some() => {
                        break self.leader_call("write", &req).await?;
                    }
                    Some(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => {
                        return Err(CoordError::Storage {
                            sqlstate: "57P03".into(),
                            message: format!("metadata change failed: {e}"),
                        })
                    }
                },
            }
        };
        self.wait_applied(resp.index, LEADER_WAIT).await?;
        self.wait_members_applied(resp.index).await;
        match &resp.error {
            Some((sqlstate, message)) => Err(CoordError::Storage {
                sqlstate: sqlstate.clone(),
                message: message.clone(),
            }),
            None => Ok(resp),
        }
    }

    /// Waits (up to [`APPLY_WAIT`]) until every other member that answers has applied `index`.
    async fn wait_members_applied(&self, index: u64) {
        let deadline = Instant::now() + APPLY_WAIT;
        for (id, addr) in &self.members {
            if *id == self.id {
                continue;
            }
            let Ok(mut c) = network::client(addr) else {
                continue;
            };
            while Instant::now() < deadline {
                match network::call::<(), MemberStatus>(
                    &mut c,
                    "status",
                    "status",
                    &(),
                    Duration::from_millis(500),
                )
                .await
                {
                    Ok(s) if s.applied >= index => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    // Down or unreachable: it catches up before it serves again.
                    Err(_) => break,
                }
            }
        }
    }

    /// Every member's status (`tessera admin raft`); members that do not answer are missing.
    pub async fn statuses(&self) -> Vec<Result<MemberStatus, String>> {
        let mut out = Vec::new();
        for (id, addr) in &self.members {
            if *id == self.id {
                out.push(Ok(MemberStatus::from_metrics(&super::metrics(&self.raft))));
                continue;
            }
            let r = match network::client(addr) {
                Ok(mut c) => network::call::<(), MemberStatus>(
                    &mut c,
                    "status",
                    "status",
                    &(),
                    Duration::from_secs(1),
                )
                .await
                .map_err(|e| format!("member {id} ({addr}): {e}")),
                Err(e) => Err(e),
            };
            out.push(r);
        }
        out
    }

    /// Every member's id and address.
    pub fn members(&self) -> Vec<(u64, String)> {
        self.members
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect()
    }

    /// Makes `catalog` the group's starting point if the group's catalog is empty.
    pub async fn seed(&self, catalog: Catalog) -> Result<(), CoordError> {
        self.write(MetaRequest::Seed(Box::new(catalog)))
            .await
            .map(|_| ())
    }
}

#[async_trait::async_trait]
impl CatalogStore for RaftCatalog {
    fn snapshot(&self) -> Arc<Catalog> {
        self.published.read().map(|c| c.clone()).unwrap_or_default()
    }

    async fn propose(&self, cmd: CatalogCommand) -> Result<Arc<Catalog>, CoordError> {
        self.write(MetaRequest::Command(Box::new(cmd))).await?;
        Ok(self.snapshot())
    }

    async fn reserve_ids(&self, n: u64) -> Result<u64, CoordError> {
        Ok(self.write(MetaRequest::ReserveIds(n)).await?.first_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, Table};
    use tessera_shared::PgType;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    fn table(name: &str) -> Table {
        let id = Column {
            not_null: true,
            ..Column::new("id", PgType::Int8)
        };
        Table {
            primary_key: vec!["id".into()],
            ..Table::new(name, vec![id])
        }
    }

    async fn start(
        id: u64,
        dirs: &[tempfile::TempDir],
        members: &BTreeMap<u64, String>,
    ) -> RaftCatalog {
        RaftCatalog::start(MetaConfig {
            id,
            listen: members[&id].clone(),
            members: members.clone(),
            dir: dirs[id as usize - 1].path().to_path_buf(),
        })
        .await
        .expect("member starts")
    }

    /// Three members in one process over real gRPC: changes through any member reach all,
    /// a snapshot compacts the log, and a member restarted from its files (snapshot plus the
    /// log after it) has the same catalog and catches up with what it missed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_agree_snapshot_and_recover_from_disk() {
        let dirs: Vec<tempfile::TempDir> =
            (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
        let members: BTreeMap<u64, String> = (1..=3)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let (a, b, c) = tokio::join!(
            start(1, &dirs, &members),
            start(2, &dirs, &members),
            start(3, &dirs, &members)
        );
        let group = a.reserve_ids(1).await.expect("ids");
        for i in 0..30u64 {
            let via = [&a, &b, &c][i as usize % 3];
            let mut t = table(&format!("t{i}"));
            t.group = group;
            let new_group = (i == 0).then(|| crate::catalog::Group {
                id: group,
                kind: crate::catalog::GroupKind::Hash,
                replicas: 1,
                shards: vec![],
            });
            via.propose(CatalogCommand::CreateTable {
                table: t,
                new_group,
            })
            .await
            .expect("create");
        }
        // A refused command is refused through every member, the same way.
        let e = c
            .propose(CatalogCommand::DropTable {
                name: "nope".into(),
                cascade: false,
            })
            .await
            .expect_err("unknown table");
        assert_eq!(e.sqlstate(), "42P01");
        for m in [&a, &b, &c] {
            assert_eq!(m.snapshot().tables.len(), 30);
            assert_eq!(*m.snapshot(), *a.snapshot());
        }
        // Snapshot and purge on member 3, then stop it and change more.
        c.raft().trigger().snapshot().await.expect("snapshot");
        c.raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot.is_some(), "snapshot built")
            .await
            .expect("snapshot built");
        assert!(dirs[2].path().join("snapshot.json").exists());
        c.shutdown().await;
        drop(c);
        a.propose(CatalogCommand::DropTable {
            name: "t5".into(),
            cascade: false,
        })
        .await
        .expect("drop while member 3 is down");
        let c = start(3, &dirs, &members).await;
        assert_eq!(
            *c.snapshot(),
            *a.snapshot(),
            "member 3 recovered and caught up"
        );
        assert!(!c.snapshot().tables.contains_key("t5"));
        for m in [&a, &b, &c] {
            m.shutdown().await;
        }
    }
}
