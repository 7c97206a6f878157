//! Picking up edits without a restart: `notify` watches the directories of
//! every list and of the config file; a burst of events (an editor's
//! write-rename-delete dance) is debounced into one reload. SIGHUP reloads
//! too. Reloads run on their own thread, never on a query's path.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tracing::{debug, info, warn};

use crate::blocking;
use crate::config::Loaded;
use crate::pipeline::Pipeline;

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

enum Trigger {
    Files(Vec<PathBuf>),
    Signal,
    Because(String),
}

/// A handle to ask for a reload (SIGHUP).
#[derive(Clone)]
pub struct Reloader(mpsc::Sender<Trigger>);

impl Reloader {
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
    let debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events_) => {
            let _ = events.send(Trigger::Files(
                events_.into_iter().map(|e| e.path).collect(),
            ));
        }
        Err(e) => warn!(error = %e, "watching lists"),
    });
    let mut debouncer = match debouncer {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(error = %e, "cannot watch files; edits are picked up on SIGHUP only");
            None
        }
    };
    let mut watched = Vec::new();
    if let Some(d) = debouncer.as_mut() {
        watch(d, &loaded, &mut watched);
    }
    std::thread::Builder::new()
        .name("sinkd-reload".into())
        .spawn(move || run(loaded, pipeline, rx, debouncer, watched))
        .expect("spawn the reload thread");
    Reloader(tx)
}

fn watch(
    debouncer: &mut Debouncer<impl notify_debouncer_mini::notify::Watcher>,
    loaded: &Loaded,
    watched: &mut Vec<PathBuf>,
) {
    for dir in blocking::watch_dirs(loaded) {
        if watched.contains(&dir) {
            continue;
        }
        let target = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.clone()
        };
        match debouncer
            .watcher()
            .watch(&target, RecursiveMode::NonRecursive)
        {
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
    mut debouncer: Option<Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>>,
    mut watched: Vec<PathBuf>,
) {
    while let Ok(first) = triggers.recv() {
        // Coalesce whatever else arrived meanwhile into this one reload.
        let mut why = describe(&loaded, first);
        while let Ok(more) = triggers.try_recv() {
            why = why.or(describe(&loaded, more));
        }
        let Some(why) = why else { continue };
        info!("reloading: {why}");
        if let Some(fresh) = blocking::reload(&loaded, pipeline.blocking()) {
            loaded = fresh;
            if let Some(d) = debouncer.as_mut() {
                watch(d, &loaded, &mut watched);
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
