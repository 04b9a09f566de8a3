//! The mio driver: listener, slab of connections, timers, backpressure and
//! graceful shutdown around the sans-IO [`crate::proto`] core.

mod addresses;
mod budget;
mod config;
mod context;
mod dispatch;
mod event_loop;
mod gather;
mod peer_progress;
mod read;
mod recorder;
mod shutdown;
mod socket;
mod sources;
mod stats;
mod timers;
pub mod tls;
mod upgrade;
mod write;

pub use config::ServerConfig;
pub use context::Context;
pub use event_loop::Server;
pub use recorder::{Recorder, Sent};
pub use shutdown::{Notifier, ShutdownHandle};
pub use sources::{SourceId, Watch};
pub use stats::{ServerStats, write_labelled};
pub use tls::{TlsConfig, TlsSetupError, load_tls_config, tls_config_from_der};
