//! Picking up edits without a restart: `notify` watches the directories of
//! every list and of the config file; a burst of changes (an editor's
//! write-rename-delete dance) is debounced into one reload. SIGHUP reloads
//! too. Reloads run on their own thread, never on a query's path; a big
//! list's rebuild runs at idle priority (see [`IDLE_REBUILD_BYTES`]).
//!
//! Only changes count, never reads: a reload reads the config and the lists,
//! and counting those reads would start the next reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, info, warn};

use std::path::Path;

use tracing::error;

use crate::blocking::{self, is_list_file};
use crate::config::{self, Loaded};
use crate::pipeline::Pipeline;

/// Quiet time after the last change before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A steady stream of changes still reloads this often.
const MAX_DELAY: Duration = Duration::from_millis(600);
/// When the name lists a reload is about to read are bigger than this on
/// disk, it rebuilds at idle priority. Rebuilding costs about 0.35 µs a
/// name: a million names take some 350 ms of CPU that a query on the same
/// core must not wait behind. 640 KB is at most some 20,000 to 35,000 names
/// (public domain lists spend 18 to 22 bytes a line, hosts files about 30),
/// 7 to 12 ms. Idle priority has a price: any other busy process on the
/// machine starves it, and a small edit would then wait seconds for what
/// normal priority does at once. The files are judged, not the running
/// lists, so the reload that adds a big list already runs at idle priority.
const IDLE_REBUILD_BYTES: u64 = 640_000;

enum Trigger {
    /// A file sinkd reads changed.
    Changed(PathBuf),
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

/// The watches on what a configuration names, set before its lists are
/// read: an edit made while sinkd starts (between reading a list and
/// watching its directory, once a window of 10 ms and more) would otherwise
/// be lost until the next one. Its event waits here for the reload thread.
pub struct Watching {
    loaded: Loaded,
    current: Arc<ArcSwap<Loaded>>,
    triggers: (mpsc::Sender<Trigger>, mpsc::Receiver<Trigger>),
    watcher: Option<RecommendedWatcher>,
    watched: Vec<PathBuf>,
}

/// Watches what `loaded` names; [`Watching::spawn`] starts the reloads.
pub fn watch(loaded: &Loaded) -> Watching {
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    // What is watched changes with each reload; notify's thread drops every
    // event that touches nothing sinkd reads (its own query log beside the
    // config, say), so a busy file never wakes the reload thread.
    let current = Arc::new(ArcSwap::from_pointee(loaded.clone()));
    let relevant = current.clone();
    let watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) if is_change(&event.kind) => {
                let loaded = relevant.load();
                if let Some(path) = event.paths.into_iter().find(|p| is_relevant(&loaded, p)) {
                    let _ = events.send(Trigger::Changed(path));
                }
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
        add_watches(w, loaded, &mut watched);
    }
    Watching {
        loaded: loaded.clone(),
        current,
        triggers: (tx, rx),
        watcher,
        watched,
    }
}

impl Watching {
    /// Starts the reload thread for `pipeline`, built from the lists read
    /// after the watches were set.
    pub fn spawn(self, pipeline: Arc<Pipeline>) -> Reloader {
        let Watching {
            loaded,
            current,
            triggers: (tx, rx),
            watcher,
            watched,
        } = self;
        std::thread::Builder::new()
            .name("sinkd-reload".into())
            .spawn(move || run(loaded, current, pipeline, rx, watcher, watched))
            .expect("spawn the reload thread");
        Reloader(tx)
    }
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

fn add_watches(watcher: &mut RecommendedWatcher, loaded: &Loaded, watched: &mut Vec<PathBuf>) {
    for dir in watch_dirs(loaded) {
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
    current: Arc<ArcSwap<Loaded>>,
    pipeline: Arc<Pipeline>,
    triggers: mpsc::Receiver<Trigger>,
    mut watcher: Option<RecommendedWatcher>,
    mut watched: Vec<PathBuf>,
) {
    while let Ok(first) = triggers.recv() {
        let mut why = describe(first);
        // Wait until the burst is over, then reload once.
        let started = Instant::now();
        while started.elapsed() < MAX_DELAY {
            match triggers.recv_timeout(DEBOUNCE) {
                Ok(more) => why = describe(more),
                Err(_) => break,
            }
        }
        info!("reloading: {why}");
        // systemd shows "reloading" meanwhile (and needs the clock for it).
        let mut notify = vec![sd_notify::NotifyState::Reloading];
        notify.extend(sd_notify::NotifyState::monotonic_usec_now());
        let _ = sd_notify::notify(&notify);
        match config::load(&loaded.path) {
            Ok(fresh) => {
                if blocking::name_list_bytes(&fresh) > IDLE_REBUILD_BYTES {
                    at_idle_priority(|| apply(&loaded, &fresh, &pipeline));
                } else {
                    apply(&loaded, &fresh, &pipeline);
                }
                loaded = fresh;
                current.store(Arc::new(loaded.clone()));
                if let Some(w) = watcher.as_mut() {
                    add_watches(w, &loaded, &mut watched);
                }
            }
            Err(problem) => error!("{problem} (keeping the running configuration)"),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// How long a rebuild may wait at idle priority before it goes on at the
/// lowest normal priority. Idle priority runs it only when no other process
/// wants the CPU; on a machine kept busy by something else (a transcode, a
/// backup) that could hold an edit back for as long as that runs.
const IDLE_PATIENCE: Duration = Duration::from_secs(2);

/// Runs `work` on a thread of its own at idle priority and waits for it:
/// this thread keeps the normal priority its waits for edits need. Past
/// [`IDLE_PATIENCE`] the work goes on at nice 19, which still leaves
/// queries nearly all of a contended CPU.
fn at_idle_priority(work: impl FnOnce() + Send) {
    let (started, rebuild_thread) = mpsc::channel();
    let (finished, done) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let rebuild = std::thread::Builder::new()
            .name("sinkd-rebuild".into())
            .spawn_scoped(scope, move || {
                // Dropped when the work ends, however it ends.
                let _finished = finished;
                let _ = started.send(crate::current_thread_id());
                crate::yield_to_queries();
                work()
            })
            .expect("spawn the rebuild thread");
        if let Ok(thread) = rebuild_thread.recv()
            && done.recv_timeout(IDLE_PATIENCE) == Err(mpsc::RecvTimeoutError::Timeout)
        {
            warn!(
                waited_s = IDLE_PATIENCE.as_secs(),
                "the list rebuild found no idle CPU (another process keeps it busy); \
                 it goes on at the lowest normal priority"
            );
            crate::lowest_normal_priority(thread);
        }
        rebuild
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Why this trigger calls for a reload, for the log.
fn describe(trigger: Trigger) -> String {
    match trigger {
        Trigger::Signal => "SIGHUP".into(),
        Trigger::Because(why) => why,
        Trigger::Changed(path) => format!("{} changed", path.display()),
    }
}

/// Every file pattern a reload reads besides the config: lists, hosts files,
/// DHCP leases.
fn watched_patterns(loaded: &Loaded) -> impl Iterator<Item = &String> {
    let c = &loaded.config;
    c.blocking
        .lists
        .iter()
        .chain(&c.blocking.allow)
        .chain(&c.blocking.answer_ips)
        .chain(&c.local.hosts)
        .chain(&c.dhcp.leases)
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Directories to watch: the config's, and where each file, glob or
/// directory it names lives.
fn watch_dirs(loaded: &Loaded) -> Vec<PathBuf> {
    let mut dirs = vec![loaded.resolve("")];
    for pattern in watched_patterns(loaded) {
        let path = loaded.resolve(pattern);
        let text = path.to_string_lossy().into_owned();
        let dir = if has_wildcard(&text) {
            // The deepest directory without a wildcard.
            let cut = text.find(['*', '?', '[']).unwrap_or(text.len());
            Path::new(&text[..cut])
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        } else if path.is_dir() {
            path
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Whether a changed path matters: the config file itself, or a file one of
/// its patterns stands for (or could stand for, once created).
fn is_relevant(loaded: &Loaded, changed: &Path) -> bool {
    if same_file(changed, &loaded.path) {
        return true;
    }
    watched_patterns(loaded).any(|pattern| {
        let path = loaded.resolve(pattern);
        let text = path.to_string_lossy();
        if has_wildcard(&text) {
            glob::Pattern::new(&text).is_ok_and(|p| p.matches_path(changed))
        } else if path.is_dir() {
            changed.parent() == Some(path.as_path()) && is_list_file(changed)
        } else {
            same_file(changed, &path)
        }
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || absolute(a) == absolute(b)
}

fn absolute(path: &Path) -> PathBuf {
    match path.parent().map(|dir| dir.canonicalize()) {
        Some(Ok(dir)) => dir.join(path.file_name().unwrap_or_default()),
        _ => path.to_path_buf(),
    }
}

/// Reads everything the freshly read config names, and swaps each new
/// snapshot in. What cannot be read keeps what is running, and says so.
fn apply(loaded: &Loaded, fresh: &Loaded, pipeline: &Pipeline) {
    let (old, new) = (&loaded.config, &fresh.config);
    if old.server != new.server
        || old.upstream != new.upstream
        || old.cache != new.cache
        || old.forward != new.forward
        || old.querylog != new.querylog
    {
        warn!(
            "{}: changes to [server], [upstream], [cache], [[forward]] and [querylog] take effect when sinkd restarts",
            loaded.path.display()
        );
    }
    let load = blocking::load(fresh);
    if load.unreadable.is_empty() {
        blocking::report(&load);
        pipeline.swap_policy(load.policy);
    } else {
        for problem in &load.unreadable {
            error!("{problem} (keeping the lists as they were)");
        }
    }
    pipeline.reload_names(fresh);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's scheduling policy and nice value.
    fn priority() -> (i32, i32) {
        // SAFETY: queries about the calling thread.
        unsafe {
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, 0),
            )
        }
    }

    /// The watches work from the moment `watch` returns, before the lists
    /// are read and the reload thread exists: an edit in between is kept
    /// for it, not lost.
    #[test]
    fn an_edit_before_the_reload_thread_starts_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "one.test\n").unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "[blocking]\nlists = [\"list.txt\"]\n").unwrap();
        let loaded = crate::config::load(&config).unwrap();

        let watching = watch(&loaded);
        std::fs::write(&list, "one.test\ntwo.test\n").unwrap();
        match watching.triggers.1.recv_timeout(Duration::from_secs(5)) {
            Ok(Trigger::Changed(path)) => assert_eq!(path.file_name(), list.file_name()),
            Ok(_) => panic!("a trigger other than the edit"),
            Err(e) => panic!("the edit was not seen: {e}"),
        }
    }

    #[test]
    fn a_rebuild_still_waiting_after_its_patience_goes_on_at_the_lowest_normal_priority() {
        let mut quick = None;
        at_idle_priority(|| quick = Some(priority()));
        assert_eq!(quick, Some((libc::SCHED_IDLE, 0)));

        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads this process's limit into `limit`.
        unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut limit) };
        if limit.rlim_cur < 1 && unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: leaving idle priority needs root or RLIMIT_NICE >= 1");
            return;
        }
        let mut late = None;
        at_idle_priority(|| {
            std::thread::sleep(IDLE_PATIENCE + Duration::from_millis(500));
            late = Some(priority());
        });
        assert_eq!(late, Some((libc::SCHED_OTHER, 19)));
    }
}
