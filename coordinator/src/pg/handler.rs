//! Simple and extended query handlers: parse, hand statements to the engine, encode results.

use super::encode::{decode_param, encode_row, fields, param_wire_type};
use super::errors::to_pgwire;
use crate::engine::{Completion, Described, Engine, QueryResult};
use crate::error::CoordError;
use crate::planner::Target;
use crate::session::{Interrupt, Session};
use async_trait::async_trait;
use futures::stream;
use futures::{Sink, SinkExt};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, Type, METADATA_DATABASE, METADATA_USER};
use pgwire::error::PgWireError;
use pgwire::error::{ErrorInfo, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::PgWireBackendMessage;
use sqlparser::ast::Statement;
use std::fmt::Debug;
use std::sync::Arc;
use tessera_shared::{PgType, Value};

/// A parsed statement kept by the extended protocol.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The statement (None for an empty query).
    pub stmt: Option<Statement>,
    /// Parameter and result types.
    pub described: Described,
}

/// Sessions that a CancelRequest may reach: backend pid -> (secret key, the session's interrupt).
type CancelKeys = dashmap::DashMap<i32, (SecretKey, Arc<Interrupt>)>;

/// A connection's session, rolled back if the client disconnects inside a transaction.
pub struct Slot {
    session: tokio::sync::Mutex<Session>,
    engine: Arc<Engine>,
    /// This session's entry in the cancel registry, removed with the session.
    cancel: Option<(i32, Arc<CancelKeys>)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((pid, keys)) = &self.cancel {
            keys.remove(pid);
        }
        let Some(txn) = self.session.get_mut().txn.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let engine = self.engine.clone();
        let targets: Vec<Target> = txn.touched.into_iter().collect();
        self.engine.tasks.spawn(async move {
            if let Err(e) = engine.txn.finish_all(&targets, txn.id, false).await {
                tracing::warn!(error = %e, "rollback of a disconnected session failed; shards roll back on idle timeout");
            }
        });
    }
}

/// The query handler shared by all connections.
pub struct QueryHandler {
    engine: Arc<Engine>,
    parser: Arc<TesseraParser>,
    cancel_keys: Arc<CancelKeys>,
}

impl QueryHandler {
    /// A handler over `engine`.
    pub fn new(engine: Arc<Engine>) -> QueryHandler {
        QueryHandler {
            parser: Arc::new(TesseraParser {
                engine: engine.clone(),
            }),
            engine,
            cancel_keys: Default::default(),
        }
    }

    fn slot<C: ClientInfo>(&self, client: &C) -> Arc<Slot> {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_else(|| "postgres".into());
        let db = client
            .metadata()
            .get(METADATA_DATABASE)
            .cloned()
            .unwrap_or_else(|| user.clone());
        let engine = self.engine.clone();
        let (pid, secret) = client.pid_and_secret_key();
        let keys = self.cancel_keys.clone();
        client.session_extensions().get_or_insert_with(|| {
            let session = Session::new(&user, &db);
            keys.insert(pid, (secret, session.interrupt.clone()));
            Slot {
                session: tokio::sync::Mutex::new(session),
                engine,
                cancel: Some((pid, keys)),
            }
        })
    }
}

fn response(r: QueryResult, format: &Format) -> PgWireResult<Response> {
    if r.returns_rows {
        let schema = Arc::new(fields(&r.columns, format));
        let mut enc = DataRowEncoder::new(schema.clone());
        let mut rows = Vec::with_capacity(r.rows.len());
        for row in &r.rows {
            encode_row(&mut enc, row, &r.columns, &schema)?;
            rows.push(Ok(enc.take_row()));
        }
        let mut resp = QueryResponse::new(schema, stream::iter(rows));
        if let Completion::Command { name, .. } = &r.completion {
            resp.set_command_tag(name);
        }
        return Ok(Response::Query(resp));
    }
    Ok(match r.completion {
        Completion::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Completion::End(t) => Response::TransactionEnd(Tag::new(t)),
        Completion::Select => Response::Execution(Tag::new("SELECT").with_rows(r.rows.len())),
        Completion::CopyIn(columns) => {
            Response::CopyIn(CopyResponse::new(0, columns, stream::empty()))
        }
        Completion::CopyOut(lines) => {
            let columns = r.columns.len();
            let data: Vec<PgWireResult<CopyData>> = lines
                .into_iter()
                .map(|l| Ok(CopyData::new(bytes::Bytes::from(l))))
                .collect();
            Response::CopyOut(CopyResponse::new(0, columns, stream::iter(data)))
        }
        Completion::Command { name, rows } => {
            let tag = match name.strip_suffix(" 0") {
                Some(base) => Tag::new(base).with_oid(0),
                None => Tag::new(&name),
            };
            Response::Execution(match rows {
                Some(n) => tag.with_rows(n as usize),
                None => tag,
            })
        }
    })
}

fn error_info(e: CoordError) -> Box<ErrorInfo> {
    match to_pgwire(e) {
        pgwire::error::PgWireError::UserError(info) => info,
        other => Box::new(ErrorInfo::new(
            "ERROR".into(),
            "XX000".into(),
            other.to_string(),
        )),
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmts = self.engine.parse(query).map_err(to_pgwire)?;
        let slot = self.slot(client);
        let mut session = slot.session.lock().await;
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            let result = self.engine.execute(&mut session, stmt, &[]).await;
            send_notices(client, &mut session).await?;
            match result {
                Ok(r) => out.push(response(r, &Format::UnifiedText)?),
                Err(e) => {
                    // Postgres stops a multi-statement query at its first error.
                    out.push(Response::Error(error_info(e)));
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Sends the session's pending NOTICE messages ahead of the statement's response.
async fn send_notices<C>(client: &mut C, session: &mut Session) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for message in session.notices.drain(..) {
        let notice = ErrorInfo::new("NOTICE".into(), "00000".into(), message);
        client
            .send(PgWireBackendMessage::NoticeResponse(notice.into()))
            .await?;
    }
    Ok(())
}

/// Parses and describes statements for the extended protocol.
pub struct TesseraParser {
    engine: Arc<Engine>,
}

#[async_trait]
impl QueryParser for TesseraParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut stmts = self.engine.parse(sql).map_err(to_pgwire)?;
        if stmts.len() > 1 {
            return Err(to_pgwire(CoordError::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            )));
        }
        let Some(stmt) = stmts.pop() else {
            return Ok(None);
        };
        let described = self.engine.describe(&stmt).map_err(to_pgwire)?;
        Ok(Some(Prepared {
            stmt: Some(stmt),
            described,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .described
            .params
            .iter()
            .map(|t| param_wire_type(*t))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(fields(
            &stmt.described.columns,
            format.unwrap_or(&Format::UnifiedText),
        ))
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = TesseraParser;

    fn query_parser(&self) -> Arc<TesseraParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let Some(stmt) = &prepared.stmt else {
            return Ok(Response::EmptyQuery);
        };
        let mut params = Vec::with_capacity(portal.parameters.len());
        for (i, raw) in portal.parameters.iter().enumerate() {
            // The client's declared type wins; otherwise the one we described.
            let declared = portal
                .statement
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .and_then(|t| PgType::from_oid(t.oid()));
            let ty = declared
                .or_else(|| prepared.described.params.get(i).copied())
                .unwrap_or(PgType::Text);
            let v: Value = decode_param(raw.as_deref(), portal.parameter_format.is_binary(i), ty)
                .map_err(to_pgwire)?;
            params.push(v);
        }
        let slot = self.slot(client);
        let mut session = slot.session.lock().await;
        let r = self.engine.execute(&mut session, stmt, &params).await;
        send_notices(client, &mut session).await?;
        response(r.map_err(to_pgwire)?, &portal.result_column_format)
    }
}

#[async_trait]
impl CopyHandler for QueryHandler {
    async fn on_copy_data<C>(&self, client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = self.slot(client);
        let mut session = slot.session.lock().await;
        self.engine.copy_data(&mut session, &data.data).await;
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = self.slot(client);
        let n = {
            let mut session = slot.session.lock().await;
            self.engine
                .copy_done(&mut session)
                .await
                .map_err(to_pgwire)?
        };
        let tag = Tag::new("COPY").with_rows(n as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = self.slot(client);
        let mut session = slot.session.lock().await;
        to_pgwire(self.engine.copy_fail(&mut session, &fail.message).await)
    }
}

/// A secret key as the bytes on the wire (protocol 3.0 sends an i32, 3.2 a byte string).
fn secret_bytes(k: &SecretKey) -> Vec<u8> {
    match k {
        SecretKey::I32(i) => i.to_be_bytes().to_vec(),
        SecretKey::Bytes(b) => b.to_vec(),
    }
}

#[async_trait]
impl CancelHandler for QueryHandler {
    /// A CancelRequest stops the statement its session is running, on every shard it reached.
    async fn on_cancel_request(&self, req: CancelRequest) {
        let interrupt = self
            .cancel_keys
            .get(&req.pid)
            .filter(|e| secret_bytes(&e.0) == secret_bytes(&req.secret_key))
            .map(|e| e.1.clone());
        if let Some(i) = interrupt {
            i.request();
        }
    }
}
