//! # lanyard-server
//!
//! The Lanyard sync server: a quinn endpoint in front of the sans-IO
//! [`lanyard_protocol::ServerCore`], with sled storage, a self-signed
//! certificate and an Ed25519 token key created on first start.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use lanyard_server::{Server, ServerOptions};
//! let server = Server::start(ServerOptions::new("./lanyard-data", "127.0.0.1:4433".parse()?)).await?;
//! println!("listening on {} pin {}", server.local_addr()?, server.pin());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod admission;
pub mod backup;
pub mod config;
pub mod devices;
mod driver;
pub mod identity;
pub mod stats;

pub use admission::{AdmissionConfig, AdmissionStats};
pub use driver::{
    transport_config, Server, ServerOptions, StartError, StoreLocation, HELLO_TIMEOUT,
    OUTBOX_BYTES, STORE_MARKER,
};
pub use identity::{Identity, IdentityError, Invite};
pub use stats::{ProcessFigures, StatsError, StatsSnapshot, TrafficStats};

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed
/// when this returns, so a signal sent right after the startup lines is caught.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// A future that resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
