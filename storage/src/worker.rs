//! A dedicated OS thread owning one SQLite connection; async callers send it closures.

use crate::StorageError;
use rusqlite::Connection;
use std::sync::mpsc;
use std::time::Duration;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to a connection thread. Dropping every handle ends the thread.
#[derive(Clone)]
pub struct Worker {
    tx: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts a thread owning `conn`. If `idle` is set, the thread calls `on_idle` and
    /// exits after that long without work (used to roll back abandoned transactions).
    pub fn spawn(
        name: String,
        mut conn: Connection,
        idle: Option<Duration>,
        on_idle: impl FnOnce(&mut Connection) + Send + 'static,
    ) -> Result<Worker, StorageError> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(name).spawn(move || loop {
            let job = match idle {
                Some(d) => match rx.recv_timeout(d) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        on_idle(&mut conn);
                        return;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            job(&mut conn);
        })?;
        Ok(Worker { tx })
    }

    /// Runs `f` on the connection thread and waits for its result without blocking the executor.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = done.send(f(conn));
        });
        self.tx.send(job).map_err(|_| StorageError::WorkerGone)?;
        wait.await.map_err(|_| StorageError::WorkerGone)?
    }
}
