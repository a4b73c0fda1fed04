//! A dedicated OS thread owning one SQLite connection; async callers send it closures.

use crate::error::StorageError;
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Runs after every job, before the job's caller gets its result (publishes data versions).
pub type AfterJob = Arc<dyn Fn() + Send + Sync>;

/// Handle to a connection thread. Dropping every handle ends the thread.
#[derive(Clone)]
pub struct Worker {
    tx: mpsc::Sender<Job>,
    after_job: Option<AfterJob>,
    /// Set by [`Worker::close`]: later jobs fail with [`StorageError::WorkerGone`].
    closed: Arc<AtomicBool>,
}

impl Worker {
    /// Starts a thread owning `conn`. If `idle` is set (milliseconds, read anew after every
    /// job so it can change), the thread calls `on_idle` and exits after that long without
    /// work (used to roll back abandoned transactions). `after_job` runs after each job,
    /// before the job's caller gets its result.
    pub fn spawn(
        name: String,
        mut conn: Connection,
        idle: Option<Arc<std::sync::atomic::AtomicU64>>,
        on_idle: impl FnOnce(&mut Connection) + Send + 'static,
        after_job: Option<AfterJob>,
    ) -> Result<Worker, StorageError> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name)
            .stack_size(tessera_shared::SQL_THREAD_STACK_BYTES)
            .spawn(move || {
                crate::patch_apply::keep_columns_on_this_thread();
                let mut last_job = std::time::Instant::now();
                loop {
                    let job = match &idle {
                        Some(ms) => {
                            let limit = Duration::from_millis(ms.load(Ordering::SeqCst));
                            let left = limit.saturating_sub(last_job.elapsed());
                            match rx.recv_timeout(left) {
                                Ok(job) => job,
                                // The limit may have grown meanwhile (a prepared transaction).
                                Err(mpsc::RecvTimeoutError::Timeout)
                                    if last_job.elapsed()
                                        < Duration::from_millis(ms.load(Ordering::SeqCst)) =>
                                {
                                    continue
                                }
                                Err(mpsc::RecvTimeoutError::Timeout) => {
                                    on_idle(&mut conn);
                                    return;
                                }
                                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                            }
                        }
                        None => match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        },
                    };
                    job(&mut conn);
                    last_job = std::time::Instant::now();
                }
            })?;
        Ok(Worker {
            tx,
            after_job,
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Closes the connection (rolling back any open transaction) and returns once it is
    /// closed, while other handles may still exist. A database's files may only be deleted
    /// after this: SQLite deletes a WAL and its index *by name* when the last connection
    /// closes, so a connection closing late would delete the files of a new database created
    /// at the same path.
    pub async fn close(&self) {
        let closed = self.closed.clone();
        let done = self
            .run(move |conn| {
                closed.store(true, Ordering::SeqCst);
                let old = std::mem::replace(conn, Connection::open_in_memory()?);
                if let Err((_, e)) = old.close() {
                    tracing::warn!(error = %e, "closing a connection failed");
                }
                Ok(())
            })
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "connection already gone");
        }
    }

    /// Runs `f` on the connection thread and waits for its result without blocking the executor.
    ///
    /// If the caller stops waiting (its future is dropped: statement timeout, cancel, a client
    /// gone), a job not started yet is skipped and a running one is interrupted by SQLite's
    /// progress handler, so the connection is free again at once.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let after_job = self.after_job.clone();
        let closed = self.closed.clone();
        let job: Job = Box::new(move |conn| {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            if closed.load(Ordering::SeqCst) {
                let _ = done.send(Err(StorageError::WorkerGone));
                return;
            }
            let watch = flag.clone();
            let _ = conn.progress_handler(1000, Some(move || watch.load(Ordering::Relaxed)));
            let result = f(conn);
            let _ = conn.progress_handler(0, None::<fn() -> bool>);
            if let Some(after) = &after_job {
                after();
            }
            let _ = done.send(result);
        });
        self.tx.send(job).map_err(|_| StorageError::WorkerGone)?;
        let guard = CancelOnDrop(Some(cancelled));
        let result = wait.await;
        guard.disarm();
        result.map_err(|_| StorageError::WorkerGone)?
    }
}

/// Sets the job's cancel flag when the waiting future is dropped before the job finished.
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_caller_interrupts_its_statement() {
        let w = Worker::spawn(
            "t".into(),
            Connection::open_in_memory().expect("open"),
            None,
            |_| {},
            None,
        )
        .expect("spawn");
        let slow = w.run(|c| {
            Ok(c.query_row(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000) SELECT count(*) FROM n",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(100), slow)
                .await
                .is_err(),
            "the query should still be running"
        );
        // The connection is free again quickly: the next job runs.
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            w.run(|c| Ok(c.query_row("SELECT 42", [], |r| r.get::<_, i64>(0))?)),
        );
        assert_eq!(next.await.expect("worker still busy").expect("query"), 42);
    }
}
