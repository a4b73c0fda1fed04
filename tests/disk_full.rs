//! A full disk: a multi-shard write that cannot be written everywhere commits nowhere
//! (`53100`), the node keeps serving reads, and writes resume once space returns. The cluster
//! runs on a small tmpfs the test mounts (it needs root; elsewhere it says so and passes).

mod common;

use common::{sqlstate, Cluster};
use std::process::Command;

/// A tmpfs of `mb` MiB at a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mb: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tmp");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn resize(&self, mb: u32) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_whole_statements_and_writes_resume_with_space() {
    let Some(disk) = Tmpfs::mount(40) else {
        eprintln!("cannot mount a tmpfs here (not root?): the disk-full test needs one");
        return;
    };
    let cluster = Cluster::start_in(disk.dir.path(), 3, 4);
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, batch int, pad text)")
        .await
        .expect("create");
    let pad = "x".repeat(2000);
    let mut acked = Vec::new();
    let mut failures = Vec::new();
    for batch in 0..20_000i64 {
        let rows: Vec<String> = (0..10)
            .map(|i| format!("({}, {batch}, '{pad}')", batch * 10 + i))
            .collect();
        match c
            .batch_execute(&format!("INSERT INTO t VALUES {}", rows.join(", ")))
            .await
        {
            Ok(()) => acked.push(batch),
            Err(e) => failures.push((batch, sqlstate(&e))),
        }
        if failures.len() >= 20 {
            break;
        }
    }
    assert!(
        failures.iter().any(|(_, s)| s == "53100"),
        "the disk filled: {failures:?} after {} batches",
        acked.len()
    );
    // Reads go on, and every statement is whole or absent.
    let counts: std::collections::HashMap<i32, i64> = c
        .query("SELECT batch, count(*) FROM t GROUP BY batch", &[])
        .await
        .expect("reads go on")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (batch, n) in &counts {
        assert_eq!(*n, 10, "batch {batch} is partly there");
    }
    for b in &acked {
        assert_eq!(
            counts.get(&(*b as i32)),
            Some(&10),
            "acknowledged batch {b}"
        );
    }
    for (b, _) in &failures {
        assert!(
            !counts.contains_key(&(*b as i32)),
            "failed batch {b} is there"
        );
    }
    // Space returns: writes resume on the same processes.
    disk.resize(400);
    let resumed = common::wait_until(60, || async {
        c.batch_execute(
            "INSERT INTO t VALUES (-1, -1, 'after'), (-2, -1, 'after'), (-3, -1, 'after')",
        )
        .await
        .is_ok()
    })
    .await;
    assert!(resumed, "writes resume once space returns");
    drop(c);
    drop(cluster);
}
