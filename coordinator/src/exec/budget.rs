//! What bounds one statement's work at the coordinator: its deadline, its cancel flag, and its
//! memory, charged against the statement's own budget (`tessera.statement_memory`) and against
//! one budget the whole coordinator shares (`[limits] shared_memory_bytes`), so a few runaway
//! joins cannot add up to more than the process may hold.

use crate::error::CoordError;
use crate::session::{Interrupt, Session};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tessera_shared::Value;

/// Memory held at once by every statement of this coordinator (rows pulled from shards, merged
/// results, scratch-database output).
#[derive(Debug)]
pub struct SharedMemory {
    limit: usize,
    used: AtomicUsize,
    /// Page cache of each scratch database, beyond which it spills to a temporary file.
    pub scratch_cache_bytes: usize,
}

impl SharedMemory {
    /// A budget of `limit` bytes; scratch databases cache `scratch_cache_bytes` of pages each.
    pub fn new(limit: usize, scratch_cache_bytes: usize) -> Arc<SharedMemory> {
        Arc::new(SharedMemory {
            limit,
            used: AtomicUsize::new(0),
            scratch_cache_bytes,
        })
    }

    /// Bytes charged now, by every statement.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One statement's limits, handed to every part of its execution (also to blocking threads).
#[derive(Debug)]
pub struct Budget {
    interrupt: Arc<Interrupt>,
    deadline: Option<Instant>,
    limit: usize,
    charged: AtomicUsize,
    shared: Arc<SharedMemory>,
}

impl Budget {
    /// The limits of `session`'s running statement.
    pub fn for_session(session: &Session, shared: &Arc<SharedMemory>) -> Arc<Budget> {
        let limit = session
            .settings
            .get("tessera.statement_memory")
            .and_then(|v| parse_memory(v))
            .unwrap_or(usize::MAX);
        Arc::new(Budget {
            interrupt: session.interrupt.clone(),
            deadline: session.deadline.map(|d| d.into_std()),
            limit,
            charged: AtomicUsize::new(0),
            shared: shared.clone(),
        })
    }

    /// Why the statement must stop now, if it must: a cancel request or its deadline.
    pub fn stopped(&self) -> Option<CoordError> {
        if self.interrupt.is_requested() {
            return Some(CoordError::Canceled("user request"));
        }
        match self.deadline {
            Some(d) if Instant::now() >= d => Some(CoordError::Canceled("statement timeout")),
            _ => None,
        }
    }

    /// Asks the statement to stop, as a CancelRequest would.
    #[cfg(test)]
    pub fn cancel_for_test(&self) {
        self.interrupt.request();
    }

    /// Charges `bytes` more to the statement and the coordinator; `53200` past either budget
    /// (the charge is then not kept).
    pub fn charge(&self, bytes: usize) -> Result<(), CoordError> {
        let mine = self.charged.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let all = self.shared.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if mine > self.limit {
            self.uncharge(bytes);
            return Err(CoordError::OutOfMemory(format!(
                "the statement needs more than tessera.statement_memory ({}) at the coordinator",
                show_memory(self.limit)
            )));
        }
        if all > self.shared.limit {
            self.uncharge(bytes);
            return Err(CoordError::OutOfMemory(format!(
                "statements on this coordinator hold more than its shared budget ({})",
                show_memory(self.shared.limit)
            )));
        }
        Ok(())
    }

    /// Page cache of the statement's scratch database, in bytes.
    pub fn scratch_cache_bytes(&self) -> usize {
        self.shared.scratch_cache_bytes
    }

    /// Charges a batch of rows.
    pub fn charge_rows(&self, rows: &[Vec<Value>]) -> Result<(), CoordError> {
        self.charge(rows.iter().map(|r| row_bytes(r)).sum())
    }

    fn uncharge(&self, bytes: usize) {
        self.charged.fetch_sub(bytes, Ordering::Relaxed);
        self.shared.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        let mine = *self.charged.get_mut();
        self.shared.used.fetch_sub(mine, Ordering::Relaxed);
    }
}

/// What a row costs in memory, roughly: its values and their text or bytes.
pub fn row_bytes(row: &[Value]) -> usize {
    std::mem::size_of::<Vec<Value>>()
        + row
            .iter()
            .map(|v| {
                std::mem::size_of::<Value>()
                    + match v {
                        Value::Text(s) => s.len(),
                        Value::Blob(b) => b.len(),
                        _ => 0,
                    }
            })
            .sum::<usize>()
}

/// A memory setting as PostgreSQL reads one: a number of kilobytes, or with a unit (`B`, `kB`,
/// `MB`, `GB`, `TB`). `None` for anything else (or for sizes of no bytes).
pub fn parse_memory(v: &str) -> Option<usize> {
    let v = v.trim().trim_matches('\'').trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "kB" => 1 << 10,
        "B" => 1,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    let bytes = n.checked_mul(scale)?;
    (bytes > 0).then(|| usize::try_from(bytes).unwrap_or(usize::MAX))
}

fn show_memory(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}kB", b >> 10),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_as_postgres_reads_them() {
        assert_eq!(parse_memory("512MB"), Some(512 << 20));
        assert_eq!(parse_memory("'1GB'"), Some(1 << 30));
        assert_eq!(parse_memory("64"), Some(64 << 10));
        assert_eq!(parse_memory("64 kB"), Some(64 << 10));
        assert_eq!(
            parse_memory("1mb"),
            None,
            "units are case-sensitive in PostgreSQL"
        );
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("0"), None);
        assert_eq!(show_memory(512 << 20), "512MB");
    }

    #[test]
    fn statement_and_shared_budgets() {
        let shared = SharedMemory::new(1000, 1 << 20);
        let mut s = Session::new("u", "d");
        s.settings
            .insert("tessera.statement_memory".into(), "1kB".into());
        let a = Budget::for_session(&s, &shared);
        a.charge(600).expect("within both");
        let b = Budget::for_session(&s, &shared);
        assert_eq!(b.charge(600).expect_err("shared").sqlstate(), "53200");
        assert_eq!(a.charge(600).expect_err("own").sqlstate(), "53200");
        assert_eq!(shared.used(), 600);
        drop(a);
        assert_eq!(shared.used(), 0);
        b.charge(600).expect("room again");
    }
}
