//! Link profiles: one table of `venue-profiles.toml` per [`Profile`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// The repository's copy of `shared/venue-profiles.toml`, embedded at compile
/// time so the proxy works without any file around it.
pub const BUILTIN_PROFILES_TOML: &str = include_str!("../../data/venue-profiles.toml");

/// Where the repository's copy of the profiles lives (resolved at compile time).
pub const REPO_PROFILES_PATH: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/data/venue-profiles.toml");

/// The largest value any field may take (keeps every time in range).
pub const MAX_VALUE: f64 = 1e9;

/// The impairments of one link, every field of a `venue-profiles.toml` table.
///
/// Each field applies to each direction of each client's link separately,
/// except outages and rebinds, which hit the whole link (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Long-run packet loss probability, each direction, in `[0, 1)`.
    pub loss: f64,
    /// Mean length of a loss burst in packets (Gilbert–Elliott), at least 1.
    pub loss_burst: f64,
    /// Base round-trip time added by the link, in milliseconds (half each way).
    pub rtt_ms: f64,
    /// Extra random delay per packet and direction, uniform in `0..jitter_ms`
    /// milliseconds; packets may overtake each other (reordering).
    pub jitter_ms: f64,
    /// Per-client bottleneck rate, each direction, in kbit/s (1000 bit/s) of
    /// UDP payload; 0 means no rate limit (and no queue).
    pub rate_kbit: f64,
    /// Bottleneck queue depth in milliseconds at `rate_kbit` before tail drop.
    pub queue_ms: f64,
    /// Mean time between outages of a link, in seconds (exponential), 0 = none.
    pub outage_every_s: f64,
    /// `[min, max]` outage length in seconds (uniform).
    pub outage_s: [f64; 2],
    /// Mean time between NAT rebinds of a link, in seconds (exponential), 0 = none.
    pub rebind_every_s: f64,
}

impl Profile {
    /// A perfect link: no loss, no delay, no rate limit, no outages, no rebinds.
    /// Handy as a base for tests: `Profile { loss: 0.1, ..Profile::clean() }`.
    pub fn clean() -> Self {
        Profile {
            loss: 0.0,
            loss_burst: 1.0,
            rtt_ms: 0.0,
            jitter_ms: 0.0,
            rate_kbit: 0.0,
            queue_ms: 0.0,
            outage_every_s: 0.0,
            outage_s: [0.0, 0.0],
            rebind_every_s: 0.0,
        }
    }

    /// Checks that every field is finite, in `[0, MAX_VALUE]` and in its
    /// own range, naming the bad field.
    pub fn validate(&self) -> anyhow::Result<()> {
        let fields = [
            ("loss", self.loss),
            ("loss_burst", self.loss_burst),
            ("rtt_ms", self.rtt_ms),
            ("jitter_ms", self.jitter_ms),
            ("rate_kbit", self.rate_kbit),
            ("queue_ms", self.queue_ms),
            ("outage_every_s", self.outage_every_s),
            ("outage_s[0] (min)", self.outage_s[0]),
            ("outage_s[1] (max)", self.outage_s[1]),
            ("rebind_every_s", self.rebind_every_s),
        ];
        for (name, value) in fields {
            if !value.is_finite() || value < 0.0 {
                bail!("{name} must be a finite number >= 0, got {value}");
            }
            if value > MAX_VALUE {
                bail!("{name} must be at most {MAX_VALUE:e}, got {value}");
            }
        }
        if self.loss >= 1.0 {
            bail!("loss must be in [0, 1), got {}", self.loss);
        }
        if self.loss_burst < 1.0 {
            bail!(
                "loss_burst must be >= 1 (a mean burst length in packets), got {}",
                self.loss_burst
            );
        }
        // Bursts of mean length b separated by at least one good packet
        // cannot lose more than b / (b + 1) of the packets.
        let max_loss = self.loss_burst / (self.loss_burst + 1.0);
        if self.loss > max_loss {
            bail!(
                "loss {} is unreachable with loss_burst {}: at most {max_loss:.4} (raise loss_burst)",
                self.loss,
                self.loss_burst
            );
        }
        if self.outage_s[0] > self.outage_s[1] {
            bail!(
                "outage_s must be [min, max] with min <= max, got [{}, {}]",
                self.outage_s[0],
                self.outage_s[1]
            );
        }
        Ok(())
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss={} loss_burst={} rtt_ms={} jitter_ms={} rate_kbit={} queue_ms={} \
             outage_every_s={} outage_s=[{}, {}] rebind_every_s={}",
            self.loss,
            self.loss_burst,
            self.rtt_ms,
            self.jitter_ms,
            self.rate_kbit,
            self.queue_ms,
            self.outage_every_s,
            self.outage_s[0],
            self.outage_s[1],
            self.rebind_every_s
        )
    }
}

/// A set of named profiles, as in `venue-profiles.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Profiles {
    profiles: BTreeMap<String, Profile>,
}

impl Profiles {
    /// Parses a `venue-profiles.toml` document and validates every profile.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let profiles: BTreeMap<String, Profile> =
            toml::from_str(text).context("parsing the link profiles")?;
        for (name, profile) in &profiles {
            profile
                .validate()
                .with_context(|| format!("profile [{name}]"))?;
        }
        Ok(Profiles { profiles })
    }

    /// Reads and parses a profiles file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading profiles from {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The embedded copy of the repository's profiles ([`BUILTIN_PROFILES_TOML`]).
    pub fn builtin() -> anyhow::Result<Self> {
        Self::parse(BUILTIN_PROFILES_TOML)
    }

    /// The profile called `name`; the error lists the known names.
    pub fn get(&self, name: &str) -> anyhow::Result<&Profile> {
        match self.profiles.get(name) {
            Some(profile) => Ok(profile),
            None => bail!(
                "unknown profile {name:?}; known profiles: {}",
                self.names().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The profile names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }
}
