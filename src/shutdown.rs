//! Shutdown signals: SIGINT and SIGTERM; and dying with the parent process when supervised by `tessera local`.

/// Environment variable `tessera local` sets on its children.
pub const SUPERVISED_ENV: &str = "TESSERA_SUPERVISED";

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only the process's death stops it.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Under `tessera local`: ask the kernel to send SIGTERM when the parent dies, so a
/// killed supervisor never leaves orphans.
pub fn die_with_parent() {
    if std::env::var_os(SUPERVISED_ENV).is_none() {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(error = %e, "cannot set parent-death signal");
    }
    if nix::unistd::getppid() == nix::unistd::Pid::from_raw(1) {
        std::process::exit(0);
    }
}
