//! The onejourney service around the pure core.
//!
//! # Layout
//!
//! - [`config`]: layered settings (defaults -> file -> env -> flags).
//! - [`kafka`]: client configuration, topic set-up, the consumer's edge
//!   (rebalances and end offsets as events for the poll loop), broker quirks.
//! - [`pipeline`]: poll -> ingest -> (core: stitch, journey, decide) -> emit
//!   -> ack, and the checkpoint.
//! - [`durable`]: the snapshot file and the outputs read back after a crash.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, profile lookup.
//! - [`http::ui`]: the Customer 360 page, embedded.
//! - [`metrics`], [`health`]: what ops watch.
//! - [`allocator`]: the allocator setting the launchers make, reported.
//! - [`cli`]: the flags and signal handling the `onejourney`,
//!   `onejourney-demo` and `onejourney-bench` binaries share.
//!
//! [`Engine::start`] wires these together; one `CancellationToken` stops them.

pub mod allocator;
pub mod cli;
pub mod clock;
pub mod config;
pub mod durable;
pub mod health;
pub mod http;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod stall;
pub mod tls;
pub mod version;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use onejourney_core::State;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::error;

use config::Settings;
use health::Health;
use metrics::Metrics;

/// A running engine.
pub struct Engine {
    pub http_addr: SocketAddr,
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub cancel: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Engine {
    /// Binds the HTTP port and starts the pipeline. A stage that fails cancels
    /// the others.
    pub async fn start(settings: Settings, cancel: CancellationToken) -> anyhow::Result<Engine> {
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new(&settings.decide)?);
        let health = Arc::new(Health::new(settings.http.liveness_timeout));
        let namespaces = settings.namespaces()?;
        if namespaces.identity_key().is_development() {
            tracing::warn!(
                "NO IDENTITY KEY CONFIGURED: One IDs and suppression entries are derived under the public development \
                 key, so anyone can recompute them from identifiers. Set identity.key (ONEJOURNEY__IDENTITY__KEY) or \
                 identity.key_file in production"
            );
        }
        let state = Arc::new(State::new(namespaces));
        let mut tasks = JoinSet::new();
        let members = Members::of(&settings)?;

        let (http_addr, server) = http::serve(
            settings.http.addr,
            http::HttpState {
                metrics: metrics.clone(),
                health: health.clone(),
                state: state.clone(),
                bearer_token: Arc::from(settings.http.bearer_token.as_str()),
                erase_tokens: settings
                    .http
                    .erase_tokens
                    .iter()
                    .map(|(name, token)| (Arc::from(name.as_str()), token.clone()))
                    .collect(),
                lookups: Arc::new(tokio::sync::Semaphore::new(settings.http.max_concurrent_requests)),
                control: Some(http::ControlSink {
                    producer: kafka::producer(&settings).context("creating the identity-control producer")?,
                    topic: Arc::from(settings.topics.identity_control.as_str()),
                }),
                timers: http::ui::TimerDelays::of(&settings.decide),
                decide: Arc::new(settings.decide.clone()),
                owners: members.as_ref().map(|m| m.owners.clone()),
            },
            settings.http.limits(),
            cancel.clone(),
        )
        .await
        .with_context(|| format!("binding the HTTP port {}", settings.http.addr))?;
        tasks.spawn(async move {
            server
                .await
                .context("the HTTP server panicked")?
                .context("the HTTP server failed")
        });

        let membership = match members {
            Some(m) => Some(m.spawn(&settings, http_addr, &mut tasks, &cancel)?),
            None => None,
        };
        let pipeline = pipeline::run(
            settings.clone(),
            state.clone(),
            metrics.clone(),
            health.clone(),
            cancel.clone(),
            membership,
        );
        let c = cancel.clone();
        tasks.spawn(async move {
            let r = pipeline.await;
            if let Err(e) = &r {
                error!(error = %format!("{e:#}"), "pipeline failed; stopping");
            }
            c.cancel();
            r
        });
        Ok(Engine {
            http_addr,
            state,
            metrics,
            health,
            cancel,
            tasks,
        })
    }

    /// Waits until every task has ended; the first error wins.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(r) = self.tasks.join_next().await {
            let r = r.context("an engine task panicked").and_then(|r| r);
            if let Err(e) = r {
                self.cancel.cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Cancels and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.wait().await
    }
}

/// With `scaleout.route_journeys`: this process's entry in the member
/// directory (`kafka::members`) and the HTTP side that forwards lookups.
struct Members {
    owners: http::forward::Owners,
    /// The pipeline tells the owned partitions here after each assignment.
    owned: tokio::sync::watch::Sender<Vec<u32>>,
}

impl Members {
    fn of(settings: &Settings) -> anyhow::Result<Option<Members>> {
        if !settings.scaleout.route_journeys {
            return Ok(None);
        }
        // The static member id when there is one (stable over restarts),
        // else a random id per start.
        let me = if settings.kafka.group_instance_id.is_empty() {
            format!("{:016x}", pipeline::evidence::random_per_start())
        } else {
            settings.kafka.group_instance_id.clone()
        };
        let directory = Arc::new(http::forward::Directory::default());
        let (owned, rx) = tokio::sync::watch::channel(Vec::new());
        let owners = http::forward::Owners::new(settings.state.partitions, Arc::from(me.as_str()), directory, rx)?;
        Ok(Some(Members { owners, owned }))
    }

    /// Starts following the members topic and announcing this process's
    /// partitions (at `bound`, or `http.advertised_addr`); returns where
    /// the pipeline tells them.
    fn spawn(
        self,
        settings: &Arc<Settings>,
        bound: SocketAddr,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<pipeline::handoff::Membership> {
        let rx = self.owned.subscribe();
        let http = if settings.http.advertised_addr.is_empty() {
            bound.to_string()
        } else {
            settings.http.advertised_addr.clone()
        };
        let producer = kafka::producer(settings).context("creating the members producer")?;
        let (s, directory, c) = (settings.clone(), self.owners.directory.clone(), cancel.clone());
        tasks.spawn(async move { kafka::members::follow(&s, directory, c).await });
        let (topic, me, c) = (
            settings.topics.members.clone(),
            self.owners.me.to_string(),
            cancel.clone(),
        );
        tasks.spawn(kafka::members::announce(producer, topic, me, http, rx, c));
        Ok(pipeline::handoff::Membership::new(
            self.owned,
            self.owners.directory.clone(),
            self.owners.me.clone(),
        ))
    }
}
