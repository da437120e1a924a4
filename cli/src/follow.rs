//! `lanyard import URL [--follow [--every 2m]]`: fetch a published schedule
//! over HTTP(S), and with `--follow` keep fetching it with conditional GETs
//! (ETag / Last-Modified), importing and syncing each new version.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lanyard_client_core::Client;

use crate::schedule::{import_and_report, import_bytes, ImportOptions};

/// The largest schedule fetched (FOSDEM's is 3 MB).
const MAX_SCHEDULE_BYTES: u64 = 64 << 20;

/// Whether `file` is an `http://` or `https://` URL.
pub fn is_url(file: &Path) -> bool {
    file.to_str()
        .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// What the last good fetch said, for the next conditional GET.
#[derive(Debug, Default)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
    /// SHA-256 of the last body imported (a server without validators, or
    /// one that changes them without changing the file, costs no import).
    digest: Option<Vec<u8>>,
}

enum Fetched {
    NotModified,
    Body(Vec<u8>),
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("lanyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn fetch(agent: &ureq::Agent, url: &str, v: &mut Validators) -> anyhow::Result<Fetched> {
    let mut req = agent.get(url);
    if let Some(e) = &v.etag {
        req = req.header("If-None-Match", e);
    }
    if let Some(m) = &v.last_modified {
        req = req.header("If-Modified-Since", m);
    }
    let mut resp = req.call().map_err(|e| match e {
        ureq::Error::Timeout(_) => {
            anyhow::anyhow!("cannot fetch {url}: no complete answer in time (--fetch-timeout)")
        }
        other => anyhow::Error::new(other).context(format!("cannot fetch {url}")),
    })?;
    let status = resp.status().as_u16();
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    if status != 200 {
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        let first = body.lines().next().unwrap_or("").trim();
        bail!(
            "{url} answered HTTP {status}{}",
            if first.is_empty() {
                String::new()
            } else {
                format!(": {first}")
            }
        );
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    };
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_SCHEDULE_BYTES)
        .read_to_vec()
        .with_context(|| format!("cannot read the schedule from {url}"))?;
    v.etag = etag;
    v.last_modified = last_modified;
    Ok(Fetched::Body(body))
}

/// The name a fetched schedule is read under: the URL's last path segment
/// (its extension tells the format).
fn name_of(url: &str) -> PathBuf {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    PathBuf::from(
        path.rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("schedule"),
    )
}

/// `lanyard import URL` once.
pub fn import_url(
    client: &Client,
    url: &str,
    options: &ImportOptions,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut v = Validators::default();
    let Fetched::Body(bytes) = fetch(&agent(timeout), url, &mut v)? else {
        bail!("{url} answered 304 Not Modified to a request that asked for no validator");
    };
    import_and_report(client, &name_of(url), &bytes, options, started)
}

/// `lanyard import URL --follow --every D`: runs until interrupted. Each
/// applied version prints one line; a failed fetch, a server error or a
/// malformed version prints one line on stderr and the agenda keeps the
/// last good version.
pub fn follow(
    client: &Client,
    url: &str,
    every: Duration,
    options: &ImportOptions,
    fetch_timeout: Duration,
    sync_timeout: Duration,
) -> anyhow::Result<()> {
    if options.dry_run {
        bail!("--follow applies each new version: it cannot be a --dry-run");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let agent = agent(fetch_timeout);
    let name = name_of(url);
    let mut v = Validators::default();
    let mut version = 0u64;
    eprintln!(
        "following {url} every {}",
        humantime::format_duration(every)
    );
    loop {
        let polled = Instant::now();
        match fetch(&agent, url, &mut v) {
            Ok(Fetched::NotModified) => {}
            Ok(Fetched::Body(bytes)) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, &bytes)
                    .as_ref()
                    .to_vec();
                if v.digest.as_ref() != Some(&digest) {
                    match import_bytes(client, &name, &bytes, options) {
                        Ok((_, summary)) => {
                            v.digest = Some(digest);
                            version += 1;
                            let c = &summary.counts;
                            let synced = match runtime.block_on(client.sync(sync_timeout)) {
                                Ok(_) => "synced".to_string(),
                                Err(e) => format!(
                                    "not synced yet ({e}); kept on this device for the next sync"
                                ),
                            };
                            outln!(
                                "version {version}: {} sessions; {} added, {} changed, {} cancelled, {} unchanged; {} in {} change(s); {synced}",
                                summary.sessions,
                                c.added,
                                c.changed,
                                c.removed,
                                c.unchanged,
                                crate::show::count(c.change_bytes, "byte"),
                                c.changes
                            );
                        }
                        Err(e) => {
                            // Not remembered: the same bad file is reported
                            // again only when it changes.
                            v.digest = Some(digest);
                            eprintln!(
                                "{url}: the new version was not applied: {}; the agenda keeps version {version}",
                                crate::one_line(&format!("{e:#}"))
                            );
                        }
                    }
                }
            }
            Err(e) => eprintln!(
                "{}; the agenda keeps version {version}",
                crate::one_line(&format!("{e:#}"))
            ),
        }
        std::thread::sleep(every.saturating_sub(polled.elapsed()));
    }
}
