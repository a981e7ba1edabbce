//! The command-line flags every onejourney binary shares.
//!
//! In: `--config`, `--http-addr`, `--group-id`, `--state-dir` (and the
//! brokers, where a command takes them). Out: the [`Settings`] they select,
//! layered over the built-in defaults; and [`cancel_on_signal`], the one way
//! a binary turns SIGINT or SIGTERM into a cancelled token. Used by
//! `onejourney`, `onejourney-demo` and `onejourney-bench`, so the three read
//! their settings the same way.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Overrides, Settings};

#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// Config file (TOML) layered over the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// HTTP address for /metrics, /healthz, /readyz and the lookup API.
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Consumer group id.
    #[arg(long)]
    pub group_id: Option<String>,
    /// Where local state lives.
    #[arg(long)]
    pub state_dir: Option<String>,
}

impl Common {
    /// The settings: defaults, then the file, then the environment, then these flags.
    pub fn settings(&self, brokers: Option<String>) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            brokers,
            http_addr: self.http_addr.clone(),
            group_id: self.group_id.clone(),
            state_dir: self.state_dir.clone(),
        };
        Ok(Settings::load(self.config.as_deref(), None, &overrides)?)
    }
}

/// Cancels on SIGINT or SIGTERM.
pub async fn cancel_on_signal(cancel: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    info!("signal received; draining, flushing and committing");
    cancel.cancel();
}
