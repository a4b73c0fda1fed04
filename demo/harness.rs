//! What the benchmarks share: a `tessera local` of this checkout's release build on free ports
//! in a temp dir, and latency percentiles.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `tessera local`, stopped (SIGTERM) on drop.
pub struct Local {
    child: Child,
    /// Kept open: the cluster prints on its way down, and a closed pipe would fail that.
    _stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    /// The (first) coordinator's Postgres port.
    pub port: u16,
    /// Process ids by node name, from the start-up banner (for benchmarks that kill one).
    #[allow(dead_code)]
    pub pids: Vec<(String, u32)>,
    _dir: tempfile::TempDir,
}

/// Starts `tessera local --port 0` with `args`, and waits until it is ready.
pub fn start_local(args: &[&str]) -> Local {
    let exe = std::env::current_exe().expect("exe");
    let tessera = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("tessera"))
        .expect("target dir");
    assert!(
        tessera.exists(),
        "build the binary first: cargo build --release ({} missing)",
        tessera.display()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(&tessera)
        .args(["local", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        // The benchmarks measure one coordinator and single-copy tables unless they say
        // otherwise (the replication benchmark names its copies per table).
        .args(
            [("--coordinators", "1"), ("--replicas", "1")]
                .iter()
                .filter(|(flag, _)| !args.contains(flag))
                .flat_map(|(flag, v)| [*flag, *v]),
        )
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tessera local");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut pids = Vec::new();
    let port = loop {
        let line = lines.next().expect("tessera local exited").expect("read");
        if let [name, _addr, "pid", pid] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
            pids.push((name.to_string(), pid.parse().unwrap_or(0)));
        }
        if let Some(rest) = line.strip_prefix("TESSERA_READY local ") {
            break rest
                .split(',')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.trim().parse().ok())
                .expect("port");
        }
    };
    Local {
        child,
        _stdout: lines,
        port,
        pids,
        _dir: dir,
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The `p` quantile (0..=1) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
