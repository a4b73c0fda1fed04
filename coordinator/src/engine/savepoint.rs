//! Savepoints: `SAVEPOINT`, `ROLLBACK TO SAVEPOINT`, `RELEASE SAVEPOINT` across shards.
//!
//! Each shard's open transaction is a SQLite transaction, which has savepoints of its own. A
//! savepoint is set on every shard the transaction has touched so far and remembered with
//! that set. Rolling back to it rolls those shards back to it, and rolls back entirely the
//! shards first touched after it (everything they did came later); it also clears a failed
//! transaction, as in PostgreSQL.

use crate::engine::Engine;
use crate::error::CoordError;
use crate::planner::Target;
use crate::session::{OpenTxn, Session};
use crate::sql::names::quote;
use tessera_shared::proto;

fn in_block<'a>(session: &'a mut Session, what: &str) -> Result<&'a mut OpenTxn, CoordError> {
    session.txn.as_mut().ok_or_else(|| CoordError::Storage {
        sqlstate: "25P01".into(),
        message: format!("{what} can only be used in transaction blocks"),
    })
}

fn position(txn: &OpenTxn, name: &str) -> Result<usize, CoordError> {
    txn.savepoints
        .iter()
        .rposition(|(n, _)| n == name)
        .ok_or_else(|| CoordError::Storage {
            sqlstate: "3B001".into(),
            message: format!("savepoint \"{name}\" does not exist"),
        })
}

impl Engine {
    /// Sends the copies the row changes waiting for them ([`crate::txn::copies`]): a
    /// savepoint set, released or rolled back to on a copy covers what it has by then.
    async fn send_waiting(&self, session: &mut Session, what: &str) -> Result<(), CoordError> {
        let txn = in_block(session, what)?;
        let Some(waiting) = txn.waiting.as_mut().filter(|w| !w.is_empty()) else {
            return Ok(());
        };
        let (id, waiting) = (txn.id, waiting.take_all());
        let sent = self
            .txn
            .send_changes(&self.catalog.snapshot(), id, waiting, false)
            .await;
        match sent.into_iter().find_map(|(_, r)| r.err()) {
            None => Ok(()),
            Some(e) => {
                in_block(session, what)?.failed = true;
                Err(e)
            }
        }
    }

    /// Runs `sql` on each target inside transaction `txn_id`.
    async fn on_shards(
        &self,
        targets: impl IntoIterator<Item = Target>,
        txn_id: u64,
        sql: String,
    ) -> Result<(), CoordError> {
        let catalog = self.catalog.snapshot();
        for t in targets {
            let node = catalog.node(t.node)?;
            let st = proto::Statement {
                sql: sql.clone(),
                params: vec![],
                returns_rows: false,
                lock: None,
            };
            self.cluster
                .execute(node, t.shard, txn_id, vec![st])
                .await?;
        }
        Ok(())
    }

    /// `SAVEPOINT name`.
    pub(crate) async fn savepoint(
        &self,
        session: &mut Session,
        name: &str,
    ) -> Result<(), CoordError> {
        let txn = in_block(session, "SAVEPOINT")?;
        if txn.failed {
            return Err(CoordError::TxnAborted);
        }
        self.send_waiting(session, "SAVEPOINT").await?;
        let txn = in_block(session, "SAVEPOINT")?;
        let (id, touched) = (txn.id, txn.touched.clone());
        let result = self
            .on_shards(
                touched.iter().copied(),
                id,
                format!("SAVEPOINT {}", quote(name)),
            )
            .await;
        let txn = in_block(session, "SAVEPOINT")?;
        match result {
            Ok(()) => {
                txn.savepoints.push((name.to_string(), touched));
                Ok(())
            }
            Err(e) => {
                txn.failed = true;
                Err(e)
            }
        }
    }

    /// `ROLLBACK TO [SAVEPOINT] name`.
    pub(crate) async fn rollback_to_savepoint(
        &self,
        session: &mut Session,
        name: &str,
    ) -> Result<(), CoordError> {
        position(in_block(session, "ROLLBACK TO SAVEPOINT")?, name)?;
        // Sent even to a failed transaction: rolled back to, it goes on with them.
        self.send_waiting(session, "ROLLBACK TO SAVEPOINT").await?;
        let txn = in_block(session, "ROLLBACK TO SAVEPOINT")?;
        let at = position(txn, name)?;
        let (id, saved) = (txn.id, txn.savepoints[at].1.clone());
        let later: Vec<Target> = txn.touched.difference(&saved).copied().collect();
        let back = self
            .on_shards(
                saved.iter().copied(),
                id,
                format!("ROLLBACK TO {}", quote(name)),
            )
            .await;
        let undone = self.txn.finish_all(&later, id, false).await;
        let txn = in_block(session, "ROLLBACK TO SAVEPOINT")?;
        back.and(undone).inspect_err(|_| txn.failed = true)?;
        txn.touched = saved;
        txn.savepoints.truncate(at + 1);
        txn.failed = false;
        Ok(())
    }

    /// `RELEASE [SAVEPOINT] name`.
    pub(crate) async fn release_savepoint(
        &self,
        session: &mut Session,
        name: &str,
    ) -> Result<(), CoordError> {
        let txn = in_block(session, "RELEASE SAVEPOINT")?;
        if txn.failed {
            return Err(CoordError::TxnAborted);
        }
        let at = position(txn, name)?;
        let (id, saved) = (txn.id, txn.savepoints[at].1.clone());
        let result = self
            .on_shards(
                saved.iter().copied(),
                id,
                format!("RELEASE {}", quote(name)),
            )
            .await;
        let txn = in_block(session, "RELEASE SAVEPOINT")?;
        result.inspect_err(|_| txn.failed = true)?;
        txn.savepoints.truncate(at);
        Ok(())
    }
}
