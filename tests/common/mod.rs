//! Test harness: starts a real `tessera local` cluster (separate processes, free ports) in a temp dir.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running local cluster; stopped (SIGTERM, then wait) on drop.
pub struct Cluster {
    pub child: Child,
    /// The first coordinator's Postgres port.
    pub port: u16,
    /// Every coordinator's Postgres port.
    pub ports: Vec<u16>,
    pub dir: PathBuf,
    /// Node name -> pid, from the start-up banner.
    pub pids: Vec<(String, u32)>,
    _tmp: Option<tempfile::TempDir>,
}

/// Passed among a cluster's arguments: start `tessera local` with its own default topology
/// (three coordinators, three copies) instead of the tests' one coordinator and one copy.
pub const DEFAULT_TOPOLOGY: &str = "<default topology>";

pub fn tessera() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

impl Cluster {
    /// Starts `nodes` storage nodes with `shards` default shards, in a fresh temp dir.
    pub fn start(nodes: usize, shards: u32) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut c = Cluster::start_in(&dir, nodes, shards);
        c._tmp = Some(tmp);
        c
    }

    /// Starts a cluster whose storage nodes live inside the coordinator process.
    pub fn start_embedded(nodes: usize, shards: u32) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut c = Cluster::launch(&dir, nodes, shards, true);
        c._tmp = Some(tmp);
        c
    }

    /// Starts (or restarts) a cluster on an existing data dir.
    pub fn start_in(dir: &Path, nodes: usize, shards: u32) -> Cluster {
        Cluster::launch(dir, nodes, shards, false)
    }

    /// Starts `nodes` storage nodes and `coordinators` coordinators sharing one catalog.
    pub fn start_coordinators(nodes: usize, shards: u32, coordinators: usize) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut c = Cluster::launch_with(&dir, nodes, shards, false, coordinators);
        c._tmp = Some(tmp);
        c
    }

    /// Starts (or restarts) `coordinators` coordinators and `nodes` storage nodes in `dir`.
    pub fn start_coordinators_in(
        dir: &Path,
        nodes: usize,
        shards: u32,
        coordinators: usize,
    ) -> Cluster {
        Cluster::launch_with(dir, nodes, shards, false, coordinators)
    }

    fn launch(dir: &Path, nodes: usize, shards: u32, embedded: bool) -> Cluster {
        Cluster::launch_with(dir, nodes, shards, embedded, 1)
    }

    fn launch_with(
        dir: &Path,
        nodes: usize,
        shards: u32,
        embedded: bool,
        coordinators: usize,
    ) -> Cluster {
        let c = coordinators.to_string();
        Cluster::launch_args(dir, nodes, shards, embedded, &["--coordinators", &c], &[])
    }

    /// Starts `tessera local` in `dir` with extra flags and environment.
    pub fn start_args(
        dir: &Path,
        nodes: usize,
        shards: u32,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        Cluster::launch_args(dir, nodes, shards, false, args, env)
    }

    /// Like [`Cluster::start_args`], with every process's standard error appended to `log`
    /// (to look for panics afterwards).
    pub fn start_logged(
        dir: &Path,
        nodes: usize,
        shards: u32,
        args: &[&str],
        log: &Path,
    ) -> Cluster {
        let file = std::fs::File::create(log).expect("log file");
        Cluster::launch_to(dir, nodes, shards, false, args, &[], Stdio::from(file))
    }

    fn launch_args(
        dir: &Path,
        nodes: usize,
        shards: u32,
        embedded: bool,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        Cluster::launch_to(dir, nodes, shards, embedded, args, env, Stdio::inherit())
    }

    fn launch_to(
        dir: &Path,
        nodes: usize,
        shards: u32,
        embedded: bool,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Cluster {
        let mut cmd = Command::new(tessera());
        cmd.args(["local", "--data-dir"]).arg(dir);
        let own_topology = args.contains(&DEFAULT_TOPOLOGY);
        let args: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| *a != DEFAULT_TOPOLOGY)
            .collect();
        cmd.args(&args);
        // Tests name the topology they need: one coordinator and one copy unless they say.
        for (flag, default) in [("--coordinators", "1"), ("--replicas", "1")] {
            if !own_topology && !args.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        cmd.envs(env.iter().copied());
        cmd.args([
            "--port",
            "0",
            "--nodes",
            &nodes.to_string(),
            "--shards",
            &shards.to_string(),
        ]);
        if embedded {
            cmd.arg("--embedded");
        }
        let mut child = cmd
            .env("TESSERA_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn tessera local");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut pids = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ports: Vec<u16> = loop {
            assert!(Instant::now() < deadline, "cluster did not start in 60 s");
            let mut line = String::new();
            if reader.read_line(&mut line).expect("read") == 0 {
                panic!("tessera local exited before it was ready");
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [name, _addr, "pid", pid] = words.as_slice() {
                pids.push((name.to_string(), pid.parse().expect("pid")));
            }
            if let Some(rest) = line.strip_prefix("TESSERA_READY local ") {
                break rest
                    .trim()
                    .split(',')
                    .map(|a| {
                        a.rsplit(':')
                            .next()
                            .expect("port")
                            .parse()
                            .expect("port number")
                    })
                    .collect();
            }
        };
        std::thread::spawn(move || for _ in reader.lines() {});
        Cluster {
            child,
            port: ports[0],
            ports,
            dir: dir.to_path_buf(),
            pids,
            _tmp: None,
        }
    }

    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.client_at(0).await
    }

    /// A client of the `i`-th coordinator.
    pub async fn client_at(&self, i: usize) -> tokio_postgres::Client {
        let conn_str = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.ports[i]
        );
        let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub fn pid_of(&self, name: &str) -> u32 {
        self.pids
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(mut self) -> PathBuf {
        self.terminate();
        self.dir.clone()
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// kill -9 a process.
pub fn kill9(pid: u32) {
    let status = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A running process's command line (`/proc/<pid>/cmdline`), to start it again after a kill.
pub fn command_line(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .expect("cmdline")
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Starts `argv` again (with `--listen` set to `listen` when given) and waits for its ready
/// line; returns the process and the address it printed.
pub fn restart(argv: &[String], listen: Option<&str>) -> (Child, String) {
    let mut args: Vec<String> = argv[1..].to_vec();
    if let (Some(addr), Some(i)) = (listen, args.iter().position(|a| a == "--listen")) {
        args[i + 1] = addr.to_string();
    }
    let mut child = Command::new(&argv[0])
        .args(&args)
        .env("TESSERA_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("restart");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("TESSERA_READY") => {
                std::thread::spawn(move || for _ in lines {});
                let addr = line
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or_default()
                    .to_string();
                return (child, addr);
            }
            Some(Ok(_)) => {}
            _ => {
                let _ = child.wait();
                panic!("{} exited before it was ready", argv[0]);
            }
        }
    }
}

/// Waits until `f` returns true, up to `secs`.
pub async fn wait_until<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}

/// A single role process (`tessera storage` or `tessera coordinator`), killed on drop.
pub struct Role {
    pub child: Child,
    pub addr: String,
}

impl Role {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Role {
        let mut cmd = Command::new(tessera());
        cmd.args(args)
            .env("TESSERA_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn role");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).expect("read") == 0 {
                panic!("role {args:?} exited before it was ready");
            }
            if line.starts_with("TESSERA_READY") {
                break;
            }
        }
        let addr = line.split_whitespace().nth(2).expect("addr").to_string();
        std::thread::spawn(move || for _ in reader.lines() {});
        Role { child, addr }
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway PostgreSQL server from the machine's PostgreSQL package (initdb in a temp
/// dir, trust authentication, a free port), for comparing Tessera's output with the real
/// thing. Stopped on drop.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Postgres {
    /// Starts one, or `None` when the machine has no PostgreSQL server binaries.
    pub fn start() -> Option<Postgres> {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        bins.sort_by_key(|b| {
            b.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        let bin = bins.pop()?;
        let tmp = tempfile::tempdir().expect("tempdir");
        // initdb refuses to run as root: the server runs as the package's `postgres` user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let data = tmp.path().join("pg");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let run = |args: &[&str]| {
            let root = running_as_root();
            let mut cmd = if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]);
                c
            } else {
                Command::new(args[0])
            };
            let rest = if root { args } else { &args[1..] };
            let out = cmd.args(rest).output().expect("run PostgreSQL tool");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let initdb = bin.join("initdb");
        let pg_ctl = bin.join("pg_ctl");
        let (initdb, pg_ctl) = (initdb.to_str().unwrap(), pg_ctl.to_str().unwrap());
        let data_s = data.to_str().unwrap();
        run(&[initdb, "-D", data_s, "-A", "trust", "-U", "postgres"]);
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            tmp.path().display()
        );
        let log = tmp.path().join("pg.log");
        run(&[
            pg_ctl,
            "-D",
            data_s,
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ]);
        Some(Postgres {
            port,
            bin,
            data,
            _tmp: tmp,
        })
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let _ = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A small deterministic generator (xorshift64*): a seeded test run is a function of its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed in environment variable `var` (to replay a run), else one from the clock; odd.
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1
}

/// The count in environment variable `var`, else `default`.
pub fn count_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Whether `SHOW tessera.replica_check` shows `shards` shards of `copies` agreeing copies each.
pub async fn copies_agree(c: &tokio_postgres::Client, shards: usize, copies: usize) -> bool {
    let Ok(check) = c.query("SHOW tessera.replica_check", &[]).await else {
        return false;
    };
    let mut per_shard: std::collections::HashMap<i64, usize> = Default::default();
    for r in &check {
        *per_shard.entry(r.get(0)).or_default() += 1;
    }
    per_shard.len() == shards
        && per_shard.values().all(|n| *n == copies)
        && check.iter().all(|r| r.get::<_, bool>(4))
}

/// The first column of `sql`'s rows, as bigints.
pub async fn bigints(c: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    c.query(sql, &[])
        .await
        .expect("read")
        .iter()
        .map(|r| r.get(0))
        .collect()
}
