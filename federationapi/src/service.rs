//! Lifecycle of the federation listener: load the TLS identity, bind, serve
//! until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use myelin_bus::Shutdown;
use myelin_config::Config;
use myelin_types::clock::SharedClock;
use myelin_types::signing::ServerSigningKey;
use tokio::task::JoinHandle;

use crate::routing::{FederationState, router};

/// In-flight requests get this long to finish once shutdown is requested.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("cannot load TLS certificate {certificate} / key {key}: {source}")]
    Tls { certificate: PathBuf, key: PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running federation listener.
#[derive(Debug)]
pub struct Started {
    /// The bound address; differs from the configured one when its port is 0.
    pub local_addr: SocketAddr,
    /// Ends when the listener has stopped (after shutdown and the grace period).
    pub tasks: Vec<JoinHandle<()>>,
}

/// Install aws-lc-rs as the process's rustls provider. The workspace builds
/// rustls without a default provider, so this must happen before any TLS
/// config is built; a second call (or one from another crate) is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Serve the federation API over HTTPS on `config.federation_api.listen`
/// with the PEM certificate chain and key named in the config.
///
/// - `signing_key` signs the key response (and, later, requests and events);
/// - `clock` dates the key response's `valid_until_ts` (invariant 12);
/// - `shutdown` stops the listener gracefully.
///
/// Returns once the socket is bound, so a port of 0 is resolved in
/// [`Started::local_addr`] and bind errors surface here, not in a task.
pub async fn start(
    config: Arc<Config>,
    signing_key: Arc<ServerSigningKey>,
    clock: SharedClock,
    mut shutdown: Shutdown,
) -> Result<Started, FederationError> {
    install_crypto_provider();
    let settings = &config.federation_api;
    let tls = RustlsConfig::from_pem_file(&settings.tls_certificate_path, &settings.tls_private_key_path)
        .await
        .map_err(|source| FederationError::Tls {
            certificate: settings.tls_certificate_path.clone(),
            key: settings.tls_private_key_path.clone(),
            source,
        })?;

    let addr = settings.listen;
    let bind = |source| FederationError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;

    let state = FederationState { server_name: config.global.server_name.clone(), signing_key, clock };
    let app = router(state);
    let handle = Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls).handle(handle.clone());

    let serve = tokio::spawn(async move {
        let stopper = tokio::spawn(async move {
            shutdown.wait().await;
            handle.graceful_shutdown(Some(GRACE));
        });
        if let Err(e) = server.serve(app.into_make_service()).await {
            tracing::error!(error = %e, "federation listener failed");
        }
        stopper.abort();
        tracing::info!("federation listener stopped");
    });
    tracing::info!(%local_addr, "federation API listening on https://{local_addr}");
    Ok(Started { local_addr, tasks: vec![serve] })
}
