//! The `serve` configuration: a TOML file, `LANYARD_…` environment
//! variables and flags, merged key by key (flag > environment > file >
//! default).
//!
//! Every serve flag has a key of the same name (`max-connections`); the
//! admin listener is `[admin] listen`. An environment variable is
//! `LANYARD_` and the key in upper case, `_` for `-` and `__` between a
//! section and its key (`LANYARD_MAX_CONNECTIONS`, `LANYARD_ADMIN__LISTEN`).
//! The file is checked on its own first, so an unknown key or a bad value
//! is reported with its line; a bad environment value names its variable.
//!
//! ```
//! use lanyard_server::config::{ServeConfig, ServeSettings};
//! let file = "max-connections = 5000\n[admin]\nlisten = \"127.0.0.1:9090\"\n";
//! let env = [("LANYARD_MAX_CONNECTIONS".to_string(), "7000".to_string())];
//! let cfg = ServeConfig::resolve(
//!     Some(("lanyard.toml".as_ref(), file)),
//!     env,
//!     ServeSettings::default(),
//! )?;
//! assert_eq!(cfg.max_connections, 7000);
//! assert_eq!(cfg.admin.listen, Some("127.0.0.1:9090".parse()?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::driver::StoreLocation;
use crate::AdmissionConfig;

/// The prefix of the configuration's environment variables.
pub const ENV_PREFIX: &str = "LANYARD_";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration written as humans do (`8s`, `2m`, `500ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}); write e.g. 8s, 2m or 500ms"
            ))
        })
    }
}

/// One layer of the configuration: what a file, the environment or the
/// flags set. Unset keys fall through to the next layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeSettings {
    /// Data directory, created on first start [default: ./lanyard-data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:4433].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where documents live: `sled`, the embedded database in the data
    /// directory, or a PostgreSQL URL (`postgres://user:password@host:5432/db`)
    /// that several nodes share [default: sled].
    #[arg(long)]
    pub store: Option<String>,
    /// Most open connections; devices over it are told when to come back
    /// [default: 25000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Most new handshakes per second; devices over it wait their turn (see
    /// --max-handshake-wait), then are refused [default: 2000].
    #[arg(long)]
    pub handshakes_per_sec: Option<f64>,
    /// Longest a handshake over the rate waits its turn, first come first
    /// served, before devices are refused (0s: refuse at once) [default: 8s].
    #[arg(long)]
    pub max_handshake_wait: Option<HumanDuration>,
    /// Most handshakes in progress at once (each costs memory until it
    /// completes); more wait their turn [default: 1024].
    #[arg(long)]
    pub max_handshaking: Option<usize>,
    /// Turn new devices away while resident memory is above this many MiB
    /// [default: 1536].
    #[arg(long)]
    pub max_memory_mib: Option<u64>,
    /// Base of the retry-after hint given to devices turned away (jittered
    /// ±50%) [default: 5s].
    #[arg(long)]
    pub retry_after: Option<HumanDuration>,
    /// Keep a JSON file of the server's counters (connections, bytes,
    /// admission, memory, CPU), rewritten every half second and on exit.
    #[arg(long)]
    pub stats_file: Option<PathBuf>,
    /// Log lines as text or JSON [default: text]; RUST_LOG picks what is
    /// logged.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The admin HTTP listener (health, metrics, admin API).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "AdminSettings::is_empty")]
    pub admin: AdminSettings,
}

/// The `[admin]` section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdminSettings {
    /// TCP address of the admin HTTP listener; off when unset.
    pub listen: Option<SocketAddr>,
}

impl AdminSettings {
    fn is_empty(&self) -> bool {
        self.listen.is_none()
    }
}

impl ServeSettings {
    /// Each key set here, else the one set in `lower`.
    fn or(self, lower: ServeSettings) -> ServeSettings {
        ServeSettings {
            data: self.data.or(lower.data),
            listen: self.listen.or(lower.listen),
            store: self.store.or(lower.store),
            max_connections: self.max_connections.or(lower.max_connections),
            handshakes_per_sec: self.handshakes_per_sec.or(lower.handshakes_per_sec),
            max_handshake_wait: self.max_handshake_wait.or(lower.max_handshake_wait),
            max_handshaking: self.max_handshaking.or(lower.max_handshaking),
            max_memory_mib: self.max_memory_mib.or(lower.max_memory_mib),
            retry_after: self.retry_after.or(lower.retry_after),
            stats_file: self.stats_file.or(lower.stats_file),
            log_format: self.log_format.or(lower.log_format),
            admin: AdminSettings {
                listen: self.admin.listen.or(lower.admin.listen),
            },
        }
    }
}

/// Why the configuration cannot be used. Nothing has started when this is
/// returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a bad value (the
    /// message gives the line and the key).
    #[error("configuration file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value no layer can correct alone (e.g. a rate of zero).
    #[error("{key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The effective `serve` configuration, every key resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServeConfig {
    /// Data directory.
    pub data: PathBuf,
    /// UDP address of the QUIC endpoint.
    pub listen: SocketAddr,
    /// Where documents live.
    #[serde(serialize_with = "redacted")]
    pub store: StoreLocation,
    /// Most open connections.
    pub max_connections: usize,
    /// Most new handshakes per second.
    pub handshakes_per_sec: f64,
    /// Longest wait of a handshake over the rate.
    pub max_handshake_wait: HumanDuration,
    /// Most handshakes in progress at once.
    pub max_handshaking: usize,
    /// Memory above which new devices are turned away, in MiB.
    pub max_memory_mib: u64,
    /// Base of the retry-after hint.
    pub retry_after: HumanDuration,
    /// The JSON counters file, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_file: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// The admin listener.
    pub admin: AdminSettings,
}

/// Serializes a store location without its password.
fn redacted<S: serde::Serializer>(store: &StoreLocation, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&store.to_string())
}

/// The keys an environment variable can set, as written in the file.
const ENV_KEYS: &[&str] = &[
    "data",
    "listen",
    "store",
    "max-connections",
    "handshakes-per-sec",
    "max-handshake-wait",
    "max-handshaking",
    "max-memory-mib",
    "retry-after",
    "stats-file",
    "log-format",
    "admin.listen",
];

impl ServeConfig {
    /// Reads `file` (if given) and the process environment, and merges them
    /// under `flags`.
    pub fn load(file: Option<&Path>, flags: ServeSettings) -> Result<ServeConfig, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let file = file.zip(text.as_deref());
        ServeConfig::resolve(file, std::env::vars(), flags)
    }

    /// Merges the layers: `flags` over the `LANYARD_…` variables in `env`
    /// over the file `(path, text)` over the defaults.
    pub fn resolve(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: ServeSettings,
    ) -> Result<ServeConfig, ConfigError> {
        let file = match file {
            Some((path, text)) => {
                toml::from_str::<ServeSettings>(text).map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_string(),
                })?
            }
            None => ServeSettings::default(),
        };
        let env = env_layer(env)?;
        flags.or(env).or(file).finish()
    }
}

/// The `LANYARD_…` variables that name a configuration key, read as one
/// layer; each is checked alone so an error names its variable.
fn env_layer(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ServeSettings, ConfigError> {
    let mut layer = ServeSettings::default();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let key = var[ENV_PREFIX.len()..]
            .to_ascii_lowercase()
            .replace("__", ".")
            .replace('_', "-");
        if !ENV_KEYS.contains(&key.as_str()) {
            continue;
        }
        let one = match key.split_once('.') {
            Some((section, k)) => format!("[{section}]\n{k} = {}\n", toml_value(&value)),
            None => format!("{key} = {}\n", toml_value(&value)),
        };
        let parsed = toml::from_str::<ServeSettings>(&one).map_err(|e| ConfigError::Env {
            var: var.clone(),
            message: e.message().to_string(),
        })?;
        layer = parsed.or(layer);
    }
    Ok(layer)
}

/// An environment value as a TOML value: a number or boolean as itself,
/// anything else as a string.
fn toml_value(raw: &str) -> String {
    let as_is = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&as_is) {
        Ok(t)
            if matches!(
                t.get("v"),
                Some(toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))
            ) =>
        {
            raw.to_string()
        }
        _ => toml::Value::String(raw.to_string()).to_string(),
    }
}

impl ServeSettings {
    /// Fills what no layer set with the defaults and checks the values.
    fn finish(self) -> Result<ServeConfig, ConfigError> {
        let admission = AdmissionConfig::default();
        let cfg = ServeConfig {
            data: self.data.unwrap_or_else(|| PathBuf::from("./lanyard-data")),
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 4433))),
            store: match self.store.as_deref() {
                None => StoreLocation::Sled,
                Some(s) => StoreLocation::parse(s).map_err(|message| ConfigError::Invalid {
                    key: "store",
                    message,
                })?,
            },
            max_connections: self.max_connections.unwrap_or(admission.max_connections),
            handshakes_per_sec: self
                .handshakes_per_sec
                .unwrap_or(admission.handshakes_per_sec),
            max_handshake_wait: self
                .max_handshake_wait
                .unwrap_or(HumanDuration(admission.max_wait)),
            max_handshaking: self.max_handshaking.unwrap_or(admission.max_handshaking),
            max_memory_mib: self
                .max_memory_mib
                .unwrap_or(admission.max_memory_bytes >> 20),
            retry_after: self
                .retry_after
                .unwrap_or(HumanDuration(admission.retry_after)),
            stats_file: self.stats_file,
            log_format: self.log_format.unwrap_or_default(),
            admin: self.admin,
        };
        if !(cfg.handshakes_per_sec.is_finite() && cfg.handshakes_per_sec > 0.0) {
            return Err(ConfigError::Invalid {
                key: "handshakes-per-sec",
                message: format!("must be above 0, not {}", cfg.handshakes_per_sec),
            });
        }
        if cfg.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "max-connections",
                message: "must be at least 1".into(),
            });
        }
        if cfg.max_handshaking == 0 {
            return Err(ConfigError::Invalid {
                key: "max-handshaking",
                message: "must be at least 1".into(),
            });
        }
        Ok(cfg)
    }
}

impl ServeConfig {
    /// The admission limits this configuration sets.
    pub fn admission(&self) -> AdmissionConfig {
        AdmissionConfig {
            max_connections: self.max_connections,
            handshakes_per_sec: self.handshakes_per_sec,
            max_memory_bytes: self.max_memory_mib << 20,
            retry_after: self.retry_after.0,
            max_wait: self.max_handshake_wait.0,
            max_handshaking: self.max_handshaking,
        }
    }

    /// The effective configuration as a TOML file. It holds no secret:
    /// keys and the admin token live in the data directory, never here.
    pub fn to_toml(&self) -> String {
        let mut out = toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
        if self.admin.listen.is_none() {
            out.push_str("# listen: unset, the admin listener is off\n");
        }
        out
    }
}
