//! Picking up edits without a restart: `notify` watches the directories of
//! every list and of the config file; a burst of changes (an editor's
//! write-rename-delete dance) is debounced into one reload. SIGHUP reloads
//! too. Reloads run on their own thread, never on a query's path.
//!
//! Only changes count, never reads: a reload reads the config and the lists,
//! and counting those reads would start the next reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, info, warn};

use crate::blocking;
use crate::config::Loaded;
use crate::pipeline::Pipeline;

/// Quiet time after the last change before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A steady stream of changes still reloads this often.
const MAX_DELAY: Duration = Duration::from_millis(600);

enum Trigger {
    Files(Vec<PathBuf>),
    Signal,
    Because(String),
}

/// A handle to ask for a reload.
#[derive(Clone)]
pub struct Reloader(mpsc::Sender<Trigger>);

impl Reloader {
    /// SIGHUP.
    pub fn reload_now(&self) {
        let _ = self.0.send(Trigger::Signal);
    }

    /// A reload for a reason of sinkd's own, e.g. a list was downloaded.
    pub fn reload_because(&self, why: String) {
        let _ = self.0.send(Trigger::Because(why));
    }
}

/// Starts the reload thread for `pipeline`, watching what `loaded` names.
pub fn spawn(loaded: Loaded, pipeline: Arc<Pipeline>) -> Reloader {
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) if is_change(&event.kind) => {
                let _ = events.send(Trigger::Files(event.paths));
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "watching lists"),
        });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "cannot watch files; edits are picked up on SIGHUP only");
            None
        }
    };
    let mut watched = Vec::new();
    if let Some(w) = watcher.as_mut() {
        watch(w, &loaded, &mut watched);
    }
    std::thread::Builder::new()
        .name("sinkd-reload".into())
        .spawn(move || run(loaded, pipeline, rx, watcher, watched))
        .expect("spawn the reload thread");
    Reloader(tx)
}

/// Writes, creations, removals and renames; not opens, reads, or closes
/// after reading.
fn is_change(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // A file written in place and closed.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

fn watch(watcher: &mut RecommendedWatcher, loaded: &Loaded, watched: &mut Vec<PathBuf>) {
    for dir in blocking::watch_dirs(loaded) {
        if watched.contains(&dir) {
            continue;
        }
        let target = match dir.as_os_str().is_empty() {
            true => PathBuf::from("."),
            false => dir.clone(),
        };
        match watcher.watch(&target, RecursiveMode::NonRecursive) {
            Ok(()) => {
                debug!(dir = %target.display(), "watching");
                watched.push(dir);
            }
            Err(e) => {
                warn!(dir = %target.display(), error = %e, "cannot watch; edits there need SIGHUP")
            }
        }
    }
}

fn run(
    mut loaded: Loaded,
    pipeline: Arc<Pipeline>,
    triggers: mpsc::Receiver<Trigger>,
    mut watcher: Option<RecommendedWatcher>,
    mut watched: Vec<PathBuf>,
) {
    while let Ok(first) = triggers.recv() {
        let Some(mut why) = describe(&loaded, first) else {
            continue;
        };
        // Wait until the burst is over, then reload once.
        let started = Instant::now();
        while started.elapsed() < MAX_DELAY {
            match triggers.recv_timeout(DEBOUNCE) {
                Ok(more) => {
                    if let Some(more) = describe(&loaded, more) {
                        why = more;
                    }
                }
                Err(_) => break,
            }
        }
        info!("reloading: {why}");
        if let Some(fresh) = blocking::reload(&loaded, pipeline.blocking()) {
            loaded = fresh;
            if let Some(w) = watcher.as_mut() {
                watch(w, &loaded, &mut watched);
            }
        }
    }
}

/// Why this trigger calls for a reload, or `None` if it does not.
fn describe(loaded: &Loaded, trigger: Trigger) -> Option<String> {
    match trigger {
        Trigger::Signal => Some("SIGHUP".into()),
        Trigger::Because(why) => Some(why),
        Trigger::Files(paths) => paths
            .into_iter()
            .find(|p| blocking::is_relevant(loaded, p))
            .map(|p| format!("{} changed", p.display())),
    }
}
