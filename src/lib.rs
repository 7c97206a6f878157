//! sinkd: a DNS sinkhole resolver for the home LAN. See `pipeline` for the
//! path of one query; `DESIGN.md` in the shared folder for the architecture.

pub mod blocking;
pub mod cache;
pub mod clients;
pub mod config;
pub mod counters;
pub mod firewall;
pub mod listener;
pub mod local;
pub mod pipeline;
pub mod policy;
pub mod querylog;
pub mod ratelimit;
pub mod reload;
pub mod remote;
pub mod report;
pub mod tail;
pub mod upstream;
pub mod wire;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::Loaded;
use crate::listener::{BindError, TCP_MAX_CONNECTIONS};
use crate::pipeline::Pipeline;

/// Binds every listen address, then serves until SIGINT or SIGTERM.
///
/// Prints one `listening on ADDR` line per address and then `ready` on
/// stdout, so scripts and tests started with port 0 learn the port.
pub async fn serve(loaded: Loaded, udp_threads_per_address: usize) -> Result<(), StartError> {
    let signals = Signals::catch();
    let config = &loaded.config;
    if let Some(addr) = config.metrics.listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| StartError::Setup(format!("metrics on {addr}: {e}")))?;
        info!(%addr, "metrics at http://{addr}/metrics");
    }
    let watching = reload::watch(&loaded);
    let load = blocking::load(&loaded);
    blocking::report(&load);
    let mut pipeline = Pipeline::new(&loaded, load.policy).map_err(StartError::Setup)?;
    pipeline
        .start_querylog(&loaded)
        .map_err(StartError::Setup)?;
    pipeline.start_client_tracking();
    let pipeline = Arc::new(pipeline);
    upstream::describe(pipeline.upstreams());

    let mut bound = Vec::new();
    for &addr in &config.server.listen {
        match listener::bind(addr) {
            Ok(b) => bound.push(b),
            Err(e) if e.is_missing_ipv6() && config.server.listen.len() > 1 => {
                warn!("{e} (no IPv6 on this host?); serving the other addresses");
            }
            Err(e) => return Err(StartError::Bind(e)),
        }
    }
    let tcp_slots = Arc::new(Semaphore::new(TCP_MAX_CONNECTIONS));
    let (stop_udp, udp_stopped) = tokio::sync::watch::channel(false);
    let drain = config.upstream.timeout() + std::time::Duration::from_millis(500);
    let mut listeners = Vec::new();
    for b in bound {
        let addr = b.addr;
        let tcp = b
            .spawn(
                pipeline.clone(),
                tcp_slots.clone(),
                udp_threads_per_address,
                &udp_stopped,
                drain,
            )
            .map_err(|e| StartError::Setup(format!("serving {addr}: {e}")))?;
        println!("sinkd: listening on {addr} (udp, tcp)");
        listeners.push(tcp);
    }
    info!(
        upstreams = ?pipeline.upstreams().servers().collect::<Vec<_>>(),
        config = %loaded.path.display(),
        "ready"
    );
    println!("sinkd: ready");
    // systemd (Type=notify): the listeners are bound and the lists loaded.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!(error = %e, "cannot tell systemd we are ready");
    }
    if let Some(every) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every / 2).await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }

    let publisher = pipeline.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            publisher.publish_counters();
        }
    });
    let reloader = watching.spawn(pipeline.clone());
    let ca_file = config.upstream.ca_file.as_ref().map(|p| loaded.resolve(p));
    let tls = upstream::client_tls(ca_file.as_deref()).map_err(StartError::Setup)?;
    remote::spawn(&loaded, pipeline.upstreams().clone(), tls, reloader.clone());
    firewall::spawn_refresher(&loaded, pipeline.upstreams().clone());
    signals.wait(reloader).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Stop taking queries, answer the ones already taken, then write out
    // the log: a restart loses nothing a client was promised.
    let _ = stop_udp.send(true);
    for listener in listeners {
        listener.abort();
    }
    pipeline.until_answered(drain).await;
    info!(unanswered = pipeline.in_flight(), "shutting down");
    if let Some(log) = pipeline.querylog() {
        log.flush().await;
        // The benchmark reads this line: lines lost are part of every figure.
        info!(dropped = log.dropped(), "query log closed");
    }
    Ok(())
}

/// Runs this thread only when no query needs the CPU (SCHED_IDLE; nice 19
/// where that is refused), for background work: rebuilding a million-name
/// list takes a few hundred milliseconds of CPU, and on a one-core box a
/// query must not wait behind it. At nice 19 the scheduler still let the
/// rebuild finish its slice first (p99 3x during a reload); an idle-policy
/// thread is preempted the moment a query's thread wakes, and what it
/// starts (`ip neigh`) inherits the policy. It still finishes in the idle
/// time any home server has.
pub(crate) fn yield_to_queries() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on this thread (pid 0; on Linux
    // PRIO_PROCESS with a thread ID sets that one thread's nice value).
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    let idle_refused = std::io::Error::last_os_error();
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, current_thread_id(), 19) } != 0 {
        debug!(
            %idle_refused,
            nice_refused = %std::io::Error::last_os_error(),
            "background work runs at normal priority"
        );
    }
}

pub(crate) fn current_thread_id() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as libc::id_t }
}

/// Moves `thread`, running at idle priority, to the normal policy at nice
/// 19. Unprivileged, the kernel allows that only within RLIMIT_NICE (the
/// systemd unit sets `LimitNICE=+19` for it).
pub(crate) fn lowest_normal_priority(thread: libc::id_t) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on one of this process's threads.
    let refused = unsafe {
        libc::setpriority(libc::PRIO_PROCESS, thread, 19) != 0
            || libc::sched_setscheduler(thread as libc::pid_t, libc::SCHED_OTHER, &param) != 0
    };
    if refused {
        warn!(
            error = %std::io::Error::last_os_error(),
            "cannot raise the list rebuild's priority; it waits for an idle CPU"
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// SIGINT, SIGTERM and SIGHUP, caught from before sinkd says it is ready:
/// a SIGHUP right after READY must reload, not kill (its default action).
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            terminate: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            hangup: signal(SignalKind::hangup()).expect("SIGHUP handler"),
        }
    }

    /// Waits for SIGINT or SIGTERM; SIGHUP on the way asks for a reload.
    async fn wait(mut self, reloader: reload::Reloader) {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return,
                _ = self.terminate.recv() => return,
                _ = self.hangup.recv() => reloader.reload_now(),
            }
        }
    }
}
