//! Raft RPCs between coordinators over gRPC (`proto/meta.proto`): the client side openraft
//! calls, and the server side that hands messages to the local member. openraft's messages
//! travel as JSON: their Rust types define the format, the service only routes them.

use super::{MetaRaft, MetaRequest, MetaResponse, MetaTypes};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::{BasicNode, OptionalSend, ReadPolicy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Cursor;
use std::time::Duration;
use tessera_shared::meta_proto::meta_raft_client::MetaRaftClient;
use tessera_shared::meta_proto::meta_raft_server::{MetaRaft as MetaRaftService, MetaRaftServer};
use tessera_shared::meta_proto::RaftMessage;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

type C = MetaTypes;

/// A lazily connected gRPC client to the member at `addr`.
pub fn client(addr: &str) -> Result<MetaRaftClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    Ok(MetaRaftClient::new(endpoint.connect_lazy()))
}

fn encode<T: Serialize>(kind: &str, value: &T) -> Result<RaftMessage, String> {
    Ok(RaftMessage {
        kind: kind.to_string(),
        payload: serde_json::to_vec(value).map_err(|e| e.to_string())?,
    })
}

fn decode<T: DeserializeOwned>(m: &RaftMessage) -> Result<T, String> {
    serde_json::from_slice(&m.payload).map_err(|e| format!("bad {} message: {e}", m.kind))
}

/// Sends one message to `client` with a deadline; any failure is a string.
pub async fn call<T: Serialize, R: DeserializeOwned>(
    client: &mut MetaRaftClient<Channel>,
    rpc: &str,
    kind: &str,
    value: &T,
    timeout: Duration,
) -> Result<R, String> {
    let mut req = Request::new(encode(kind, value)?);
    req.set_timeout(timeout);
    let reply = match rpc {
        "raft" => client.raft(req).await,
        "write" => client.write(req).await,
        _ => client.status(req).await,
    }
    .map_err(|s| s.message().to_string())?;
    decode(reply.get_ref())
}

/// openraft's network factory: one client per peer, connected on first use.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<C> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Peer {
            target,
            client: client(&node.addr),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: u64,
    client: Result<MetaRaftClient<Channel>, String>,
}

impl Peer {
    async fn raft<T: Serialize, R: DeserializeOwned>(
        &mut self,
        kind: &str,
        value: &T,
        option: &RPCOption,
    ) -> Result<R, Unreachable<C>> {
        let target = self.target;
        let client = self
            .client
            .as_mut()
            .map_err(|e| Unreachable::from_string(format!("member {target}: {e}")))?;
        call(client, "raft", kind, value, option.hard_ttl())
            .await
            .map_err(|e| Unreachable::from_string(format!("member {target}: {e}")))
    }
}

/// A snapshot on the wire.
#[derive(Serialize, Deserialize)]
struct SnapshotMessage {
    vote: VoteOf<C>,
    meta: SnapshotMetaOf<C>,
    data: Vec<u8>,
}

impl RaftNetworkV2<C> for Peer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.raft("append", &rpc, &option)
            .await
            .map_err(RPCError::Unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.raft("vote", &rpc, &option)
            .await
            .map_err(RPCError::Unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.raft("pre_vote", &rpc, &option)
            .await
            .map_err(RPCError::Unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Self::SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let message = SnapshotMessage {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.raft("snapshot", &message, &option) => r.map_err(StreamingError::Unreachable),
        }
    }
}

/// The gRPC service in front of the local member.
pub struct Service {
    raft: MetaRaft,
}

/// The server for `raft`, to mount on the member's listener.
pub fn server(raft: MetaRaft) -> MetaRaftServer<Service> {
    MetaRaftServer::new(Service { raft })
}

fn internal<E: std::fmt::Display>(e: E) -> Status {
    Status::internal(e.to_string())
}

fn reply<T: Serialize>(kind: &str, value: &T) -> Result<Response<RaftMessage>, Status> {
    encode(kind, value)
        .map(Response::new)
        .map_err(Status::internal)
}

#[tonic::async_trait]
impl MetaRaftService for Service {
    async fn raft(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        match m.kind.as_str() {
            "append" => {
                let r = self
                    .raft
                    .append_entries(decode(&m).map_err(Status::invalid_argument)?)
                    .await
                    .map_err(internal)?;
                reply("append", &r)
            }
            "vote" => {
                let r = self
                    .raft
                    .vote(decode(&m).map_err(Status::invalid_argument)?)
                    .await
                    .map_err(internal)?;
                reply("vote", &r)
            }
            "pre_vote" => {
                let r = self
                    .raft
                    .pre_vote(decode(&m).map_err(Status::invalid_argument)?)
                    .await
                    .map_err(internal)?;
                reply("pre_vote", &r)
            }
            "snapshot" => {
                let s: SnapshotMessage = decode(&m).map_err(Status::invalid_argument)?;
                let snapshot = SnapshotOf::<C, Cursor<Vec<u8>>> {
                    meta: s.meta,
                    snapshot: Cursor::new(s.data),
                };
                let r = self
                    .raft
                    .install_full_snapshot(s.vote, snapshot)
                    .await
                    .map_err(internal)?;
                reply("snapshot", &r)
            }
            other => Err(Status::invalid_argument(format!(
                "unknown Raft message {other}"
            ))),
        }
    }

    /// A change forwarded by a member that is not the leader. Fails with `unavailable` when
    /// this member is not the leader either (the sender looks again and retries).
    async fn write(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        match m.kind.as_str() {
            "write" => {
                let request: MetaRequest = decode(&m).map_err(Status::invalid_argument)?;
                match self.raft.client_write(request).await {
                    Ok(r) => reply("write", &r.data),
                    Err(e) if e.forward_to_leader().is_some() => {
                        Err(Status::unavailable(e.to_string()))
                    }
                    Err(e) => Err(internal(e)),
                }
            }
            "barrier" => match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                Ok(read) => reply(
                    "barrier",
                    &MetaResponse {
                        index: read.index(),
                        ..MetaResponse::default()
                    },
                ),
                Err(e) if e.forward_to_leader().is_some() => {
                    Err(Status::unavailable(e.to_string()))
                }
                Err(e) => Err(internal(e)),
            },
            other => Err(Status::invalid_argument(format!("unknown write {other}"))),
        }
    }

    async fn status(&self, _req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = super::metrics(&self.raft);
        reply("status", &MemberStatus::from_metrics(&m))
    }
}

/// A member's Raft state as `tessera admin raft` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Member id.
    pub id: u64,
    /// `Leader`, `Follower`, `Candidate` or `Learner`.
    pub state: String,
    /// The leader this member knows of.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log: u64,
    /// Index of the last applied entry.
    pub applied: u64,
    /// On the leader: each member's last replicated index.
    pub replicated: std::collections::BTreeMap<u64, u64>,
}

impl MemberStatus {
    /// From openraft's metrics.
    pub fn from_metrics(m: &openraft::RaftMetrics<super::MetaTypes>) -> MemberStatus {
        MemberStatus {
            id: m.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_log: m.last_log_index.unwrap_or(0),
            applied: m.last_applied.map_or(0, |l| l.index()),
            replicated: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, l)| (*id, l.map_or(0, |l| l.index())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
