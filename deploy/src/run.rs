//! `myelin run`: the composition root. Loads the configuration, opens the
//! database and the bus, starts the selected components, serves HTTP, and
//! shuts everything down on SIGINT/SIGTERM or when a component dies.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use myelin_bus::{Backend, Bus, EmbeddedBackend, Shutdown};
use myelin_config::{BusKind, Config, Global};
use myelin_storage::Db;
use myelin_types::SystemClock;
use myelin_types::clock::SharedClock;
use myelin_types::signing::ServerSigningKey;
use tokio::sync::mpsc;

use crate::cli::RunArgs;
use crate::generate::prepare_default_files;
use crate::http;

/// After shutdown is requested, tasks get this long before the process exits
/// anyway (long-polling `/sync` requests could otherwise hold it open).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One background task's end, reported to the supervisor loop.
struct Ended {
    name: &'static str,
    outcome: Result<(), String>,
}

/// Forwards the end of every background task to one channel, so the process
/// can notice a dead component (and exit for its supervisor to restart it)
/// and later wait for all tasks during shutdown.
struct Tasks {
    sender: mpsc::UnboundedSender<Ended>,
    receiver: mpsc::UnboundedReceiver<Ended>,
    running: usize,
}

impl Tasks {
    fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self { sender, receiver, running: 0 }
    }

    fn watch<T: TaskOutcome>(&mut self, name: &'static str, task: tokio::task::JoinHandle<T>) {
        self.running += 1;
        let sender = self.sender.clone();
        tokio::spawn(async move {
            let outcome = match task.await {
                Ok(value) => value.into_outcome(),
                Err(join) => Err(format!("task panicked or was cancelled: {join}")),
            };
            let _ = sender.send(Ended { name, outcome });
        });
    }
}

/// Tasks return `()` (listeners) or `Result<(), BusError>` (consumers).
trait TaskOutcome: Send + 'static {
    fn into_outcome(self) -> Result<(), String>;
}

impl TaskOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display + Send + 'static> TaskOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // MYELIN_* overrides apply with and without a file.
    let config = Config::load(args.config.as_deref()).map_err(|errors| {
        let source = args.config.as_ref().map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
        anyhow::anyhow!("invalid configuration ({source}):\n  {}", errors.0.join("\n  "))
    })?;
    myelin_observe::init_logging(&config.global.log_filter)?;
    let components = args.components;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), server_name = %config.global.server_name, %components, "starting");

    std::fs::create_dir_all(&config.global.data_dir)
        .with_context(|| format!("creating data directory {}", config.global.data_dir.display()))?;
    if args.config.is_none() {
        for path in prepare_default_files(&config)? {
            tracing::info!(path = %path.display(), "generated");
        }
    }
    let config = Arc::new(config);
    let clock: SharedClock = Arc::new(SystemClock);

    let db = Db::connect(&config.global.database_url).await.context("connecting to the database")?;
    let bus = Bus::new(open_bus(&config.global, &db).await?, clock.clone());
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = Tasks::new();

    // Started in dependency order: the room server answers what the client
    // API asks; the sync API, the pusher and the application service
    // sender read what both produce.
    let mut routers = Vec::new();
    let mut own_limits = Vec::new();
    if components.roomserver {
        let started = myelin_roomserver::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone())
            .await
            .context("starting the room server")?;
        started.tasks.into_iter().for_each(|t| tasks.watch("roomserver", t));
    }
    if components.clientapi {
        let started = myelin_clientapi::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone())
            .await
            .context("starting the client API")?;
        routers.push(started.router);
        own_limits.push(started.media_router);
        started.tasks.into_iter().for_each(|t| tasks.watch("clientapi", t));
    }
    if components.syncapi {
        let started = myelin_syncapi::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone())
            .await
            .context("starting the sync API")?;
        routers.push(started.router);
        started.tasks.into_iter().for_each(|t| tasks.watch("syncapi", t));
    }
    if components.federationapi {
        let key_path = &config.global.signing_key_path;
        let key = ServerSigningKey::load(key_path).with_context(|| format!("loading {}", key_path.display()))?;
        let started = myelin_federationapi::start(
            config.clone(),
            db.clone(),
            bus.clone(),
            Arc::new(key),
            clock.clone(),
            shutdown.clone(),
        )
        .await
        .context("starting the federation API")?;
        println!("federation API listening on https://{}", started.local_addr);
        started.tasks.into_iter().for_each(|t| tasks.watch("federationapi", t));
    }
    if components.pusher {
        let started = myelin_pusher::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone())
            .await
            .context("starting the pusher")?;
        routers.push(started.router);
        started.tasks.into_iter().for_each(|t| tasks.watch("pusher", t));
    }
    if components.appservice {
        let started = myelin_appservice::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone())
            .await
            .context("starting the application service sender")?;
        started.tasks.into_iter().for_each(|t| tasks.watch("appservice", t));
    }

    // Always served, even without client components, so every process of a
    // split deployment exposes /metrics and /health.
    let (addr, listener) =
        http::serve(config.client_api.listen, http::client_router(routers, own_limits), shutdown.clone())
            .await
            .context("starting the client listener")?;
    println!("client API listening on http://{addr}");
    tracing::info!(%addr, "listening on http://{addr}");
    tasks.watch("client listener", listener);

    let failure = supervise(&mut tasks, shutdown_signal()).await;
    trigger.trigger();
    drain(&mut tasks).await;
    db.close().await;
    match failure {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(ended) => bail!("{} stopped: {}", ended.name, ended.outcome.err().unwrap_or_else(|| "ended".to_owned())),
    }
}

/// Wait for a stop signal or for any task to end. Every task runs until
/// shutdown, so one that ends early means its component is dead.
/// The log the configuration names: the embedded table in the server's own
/// database, or a Kafka cluster shared by every process of the homeserver.
async fn open_bus(global: &Global, db: &Db) -> anyhow::Result<Arc<dyn Backend>> {
    match global.bus {
        BusKind::Embedded => {
            let backend = EmbeddedBackend::open(db.clone(), global.bus_partitions).await.context("opening the bus")?;
            Ok(Arc::new(backend))
        }
        BusKind::Kafka => open_kafka(global),
    }
}

#[cfg(feature = "kafka")]
fn open_kafka(global: &Global) -> anyhow::Result<Arc<dyn Backend>> {
    let options = myelin_bus::KafkaOptions {
        partitions: global.bus_partitions,
        replication: global.kafka_replication,
        ..Default::default()
    };
    let backend = myelin_bus::KafkaBackend::connect(&global.kafka_brokers, options).context("connecting to Kafka")?;
    Ok(Arc::new(backend))
}

#[cfg(not(feature = "kafka"))]
fn open_kafka(_: &Global) -> anyhow::Result<Arc<dyn Backend>> {
    bail!("global.bus is kafka, but this binary was built without it: build with `--features kafka`")
}

async fn supervise(tasks: &mut Tasks, signal: impl Future<Output = ()>) -> Option<Ended> {
    tokio::select! {
        () = signal => {
            tracing::info!("shutdown requested");
            None
        }
        Some(ended) = tasks.receiver.recv() => {
            tasks.running -= 1;
            tracing::error!(task = ended.name, outcome = ?ended.outcome, "a component stopped unexpectedly; shutting down");
            Some(ended)
        }
    }
}

async fn drain(tasks: &mut Tasks) {
    let deadline = tokio::time::sleep(STOP_TIMEOUT);
    tokio::pin!(deadline);
    while tasks.running > 0 {
        tokio::select! {
            Some(ended) = tasks.receiver.recv() => {
                tasks.running -= 1;
                if let Err(e) = ended.outcome {
                    tracing::warn!(task = ended.name, error = %e, "stopped with an error");
                }
            }
            () = &mut deadline => {
                tracing::warn!(remaining = tasks.running, "tasks still running after {STOP_TIMEOUT:?}; exiting anyway");
                return;
            }
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM (what `docker stop` and systemd send).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_early_is_a_failure_and_drain_waits_for_the_rest() {
        let mut tasks = Tasks::new();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.watch(
            "listener",
            tokio::spawn(async move {
                let _ = stop_rx.await;
            }),
        );
        tasks.watch("consumer", tokio::spawn(async { Err::<(), _>("poisoned database") }));
        let failure = supervise(&mut tasks, std::future::pending()).await.expect("failure noticed");
        assert_eq!(failure.name, "consumer");
        assert_eq!(failure.outcome, Err("poisoned database".to_owned()));
        stop_tx.send(()).unwrap();
        drain(&mut tasks).await;
        assert_eq!(tasks.running, 0);
    }

    #[tokio::test]
    async fn a_signal_stops_supervision_without_failure() {
        let mut tasks = Tasks::new();
        tasks.watch("listener", tokio::spawn(std::future::pending::<()>()));
        assert!(supervise(&mut tasks, async {}).await.is_none());
    }
}
