//! Lists downloaded over HTTP(S): fetched in the background at start and
//! every `refresh`, with conditional requests, kept on disk so a restart
//! without network still has them, and capped in size. The download's own
//! name lookups go straight to the upstreams, never through sinkd's blocking.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use tracing::{info, warn};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{Loaded, RemoteList};
use crate::reload::Reloader;
use crate::upstream::Upstreams;

/// A list larger than this is refused (and the last good copy kept).
pub const MAX_LIST_BYTES: usize = 64 << 20;
/// A download that takes longer than this is abandoned until the next refresh.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where downloaded lists are kept: `[blocking] remote_dir`, else systemd's
/// `$STATE_DIRECTORY/lists`, else `remote-lists/` beside the config.
pub fn remote_dir(loaded: &Loaded) -> PathBuf {
    if let Some(dir) = &loaded.config.blocking.remote_dir {
        return loaded.resolve(dir);
    }
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated: the first is ours.
        Some(dirs) => PathBuf::from(dirs.to_string_lossy().split(':').next().unwrap_or_default())
            .join("lists"),
        None => loaded.resolve("remote-lists"),
    }
}

/// The file a URL's list is kept in: readable host prefix, hashed URL.
pub fn local_path(dir: &Path, url: &str) -> PathBuf {
    let host: String = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':', '?'])
        .next()
        .unwrap_or("list")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    dir.join(format!("{host}-{:016x}.txt", xxh3_64(url.as_bytes())))
}

fn meta_path(list: &Path) -> PathBuf {
    list.with_extension("meta")
}

/// The downloaded lists that exist on disk, with whether each is an allow list.
pub fn cached_lists(loaded: &Loaded) -> Vec<(PathBuf, bool)> {
    let dir = remote_dir(loaded);
    loaded
        .config
        .blocking
        .remote
        .iter()
        .map(|r| (local_path(&dir, &r.url.0), r.allow))
        .filter(|(path, _)| path.is_file())
        .collect()
}

/// Validators of the copy on disk, sent back so the server can say "not modified".
#[derive(Default, Debug, PartialEq)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validators {
    fn read(list: &Path) -> Validators {
        let Ok(text) = std::fs::read_to_string(meta_path(list)) else {
            return Validators::default();
        };
        let mut v = Validators::default();
        for line in text.lines() {
            if let Some(etag) = line.strip_prefix("etag: ") {
                v.etag = Some(etag.to_string());
            } else if let Some(date) = line.strip_prefix("last-modified: ") {
                v.last_modified = Some(date.to_string());
            }
        }
        v
    }

    fn text(&self) -> String {
        let mut text = String::new();
        if let Some(etag) = &self.etag {
            text.push_str(&format!("etag: {etag}\n"));
        }
        if let Some(date) = &self.last_modified {
            text.push_str(&format!("last-modified: {date}\n"));
        }
        text
    }
}

/// Resolves the download's host names through the upstreams directly.
struct UpstreamResolver(Arc<Upstreams>);

impl reqwest::dns::Resolve for UpstreamResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let upstreams = self.0.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let ips = upstreams.lookup_ips(&name).await?;
            let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Starts one background task per remote list.
pub fn spawn(
    loaded: &Loaded,
    upstreams: Arc<Upstreams>,
    tls: rustls::ClientConfig,
    reloader: Reloader,
) {
    let remotes = loaded.config.blocking.remote.clone();
    if remotes.is_empty() {
        return;
    }
    let dir = remote_dir(loaded);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        warn!(dir = %dir.display(), error = %e, "cannot create the directory for downloaded lists");
    }
    let client = match reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .dns_resolver(Arc::new(UpstreamResolver(upstreams)))
        .no_proxy()
        .timeout(DOWNLOAD_TIMEOUT)
        .user_agent(concat!("sinkd/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "cannot set up list downloads");
            return;
        }
    };
    for remote in remotes {
        let (client, dir, reloader) = (client.clone(), dir.clone(), reloader.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(remote.refresh.0);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match refresh(&client, &remote, &dir).await {
                    Ok(true) => reloader.reload_because(format!("{} downloaded", remote.url.0)),
                    Ok(false) => {}
                    Err(e) => warn!(url = %remote.url.0, "{e}; keeping the last good copy"),
                }
            }
        });
    }
}

/// Downloads `remote` if it changed. `Ok(true)` when a new copy was stored.
async fn refresh(
    client: &reqwest::Client,
    remote: &RemoteList,
    dir: &Path,
) -> Result<bool, String> {
    let path = local_path(dir, &remote.url.0);
    let known = Validators::read(&path);
    let mut request = client.get(&remote.url.0);
    if path.is_file() {
        if let Some(etag) = &known.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(date) = &known.last_modified {
            request = request.header(IF_MODIFIED_SINCE, date);
        }
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("download failed: {e}"))?;
    if response.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(false);
    }
    if !response.status().is_success() {
        return Err(format!("download failed: HTTP {}", response.status()));
    }
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_LIST_BYTES)
    {
        return Err(format!("larger than the {} MiB cap", MAX_LIST_BYTES >> 20));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let fresh = Validators {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
    };
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("download failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_LIST_BYTES {
            return Err(format!("larger than the {} MiB cap", MAX_LIST_BYTES >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    if std::fs::read(&path).is_ok_and(|old| old == body) {
        write_atomically(&meta_path(&path), fresh.text().as_bytes())?;
        return Ok(false);
    }
    write_atomically(&path, &body)?;
    write_atomically(&meta_path(&path), fresh.text().as_bytes())?;
    info!(url = %remote.url.0, bytes = body.len(), file = %path.display(), "list downloaded");
    Ok(true)
}

/// Writes a file so that readers see the old or the new content, never half.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let temp = path.with_extension("partial");
    std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| format!("cannot store {}: {e}", path.display()))
}
