use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use sinkd::config;

/// sinkd: a DNS sinkhole resolver for the home LAN.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the DNS server.
    Serve {
        /// The configuration file; relative paths in it are relative to its directory.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Check the configuration and every list, print what they set up, and
    /// exit 1 on any problem (`path:line: what is wrong`).
    Check {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Follow the query log: one line per query, which device asked for what
    /// and what sinkd did.
    Tail {
        /// Only this device (name, IP or MAC).
        #[arg(long)]
        device: Option<String>,
        /// Only blocked queries.
        #[arg(long)]
        blocked: bool,
        /// Only names containing this.
        #[arg(long)]
        name: Option<String>,
        /// The raw JSON lines.
        #[arg(long)]
        json: bool,
        /// Print what is there and exit.
        #[arg(long)]
        no_follow: bool,
        /// The log file, if not the one the config names.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Per device: queries, share blocked, the vendor endpoints it tried by
    /// category, bypass attempts; as text or as one HTML page.
    Report {
        /// Only the queries of this last stretch, e.g. 24h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Only this device (name, IP or MAC).
        #[arg(long)]
        device: Option<String>,
        /// Write a self-contained HTML page with charts to this file.
        #[arg(long)]
        html: Option<PathBuf>,
        /// The log file, if not the one the config names.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Print what the router should drop: blocked address ranges, the
    /// current addresses of blocked names, and DNS over TLS (port 853).
    Firewall {
        #[arg(long, value_enum, default_value = "nft")]
        format: FirewallFormat,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Say what sinkd would do with a name, and why.
    Query {
        /// The name to look up, e.g. tracking.miui.com
        name: String,
        /// The query type (A, AAAA, HTTPS, …).
        #[arg(short = 't', long = "type", default_value = "A")]
        qtype: String,
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FirewallFormat {
    Nft,
    Iptables,
    Plain,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
        Command::Tail {
            device,
            blocked,
            name,
            json,
            no_follow,
            file,
            config,
        } => {
            let path = match querylog_path(file, &config) {
                Ok(path) => path,
                Err(code) => return code,
            };
            let options = sinkd::tail::TailOptions {
                path,
                device,
                blocked,
                name,
                json,
                follow: !no_follow,
                color: std::io::IsTerminal::is_terminal(&std::io::stdout()),
                stop_after: None,
            };
            match sinkd::tail::run(options, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sinkd tail: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Firewall { format, config } => firewall(config, format),
        Command::Report {
            since,
            device,
            html,
            file,
            config,
        } => report(config, file, since, device, html),
        Command::Query {
            name,
            qtype,
            config,
        } => query(config, &name, &qtype),
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let loaded = match load_config(&path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let threads = match loaded.config.server.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(sinkd::serve(loaded, threads)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sinkd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: PathBuf) -> ExitCode {
    let loaded = match load_config(&path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Err(e) = sinkd::pipeline::Pipeline::new(&loaded, sinkd::blocking::Policy::empty()) {
        eprintln!("{}: {e}", loaded.path.display());
        return ExitCode::FAILURE;
    }
    let load = sinkd::blocking::load(&loaded);
    for problem in load.unreadable.iter().chain(&load.problems) {
        eprintln!("{problem}");
    }
    let c = &loaded.config;
    println!("{}: ok", loaded.path.display());
    let list = |items: Vec<String>| items.join(", ");
    println!(
        "  listen    {} (udp and tcp)",
        list(c.server.listen.iter().map(|a| a.to_string()).collect())
    );
    println!(
        "  allow     {}",
        list(c.server.allow.iter().map(|n| n.to_string()).collect())
    );
    println!(
        "  upstream  {} (timeout {} ms)",
        list(c.upstream.servers.0.iter().map(|s| s.to_string()).collect()),
        c.upstream.timeout_ms.0
    );
    match c.cache.size {
        0 => println!("  cache     off"),
        n => println!(
            "  cache     {n} entries, TTL clamped to {}..{} s",
            c.cache.min_ttl, c.cache.max_ttl
        ),
    }
    let (block, allow, ranges) = load.policy.counts();
    println!(
        "  blocking  {} list files: {block} blocked names and rules, {allow} allowed, {ranges} address ranges ({} ms)",
        load.files,
        load.took.as_millis()
    );
    let problems = load.unreadable.len() + load.problems.len();
    if problems > 0 {
        eprintln!("{problems} problems");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn query(path: PathBuf, name: &str, qtype: &str) -> ExitCode {
    let loaded = match load_config(&path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let Ok(record_type) = qtype
        .to_ascii_uppercase()
        .parse::<hickory_proto::rr::RecordType>()
    else {
        eprintln!("unknown query type `{qtype}`");
        return ExitCode::FAILURE;
    };
    let load = sinkd::blocking::load(&loaded);
    for problem in &load.unreadable {
        eprintln!("{problem}");
    }
    let normalized = sinkd::policy::normalize_name(name).into_owned();
    let policy = &load.policy;
    match policy.check(&normalized, u16::from(record_type)) {
        sinkd::blocking::NameVerdict::Blocked(block) => {
            println!("{normalized} {record_type}: blocked by {}", block.rule);
            println!("  answered with {}", describe_answer(&block.answer));
        }
        sinkd::blocking::NameVerdict::Allowed(rule) => {
            println!("{normalized} {record_type}: allowed by {rule}");
            println!("  forwarded upstream; its answer is not inspected");
        }
        sinkd::blocking::NameVerdict::Pass => {
            println!("{normalized} {record_type}: forwarded (on no list)");
            let (_, _, ranges) = policy.counts();
            if ranges > 0 {
                println!(
                    "  the answer is still blocked if a CNAME in it is listed or an address lies in one of {ranges} answer_ips ranges"
                );
            }
        }
    }
    ExitCode::SUCCESS
}

fn report(
    config: PathBuf,
    file: Option<PathBuf>,
    since: Option<String>,
    device: Option<String>,
    html: Option<PathBuf>,
) -> ExitCode {
    let since = match since.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("--since: {e} (write e.g. 24h or 7d)");
            return ExitCode::FAILURE;
        }
    };
    let path = match querylog_path(file, &config) {
        Ok(path) => path,
        Err(code) => return code,
    };
    let options = sinkd::report::ReportOptions {
        path,
        since,
        device,
        now: std::time::SystemTime::now(),
    };
    let report = match sinkd::report::build(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("sinkd report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = match &html {
        Some(target) => std::fs::File::create(target)
            .map(std::io::BufWriter::new)
            .and_then(|mut out| {
                sinkd::report::write_html(&report, &mut out)?;
                std::io::Write::flush(&mut out)
            })
            .map(|()| println!("wrote {}", target.display())),
        None => sinkd::report::write_text(&report, &mut std::io::stdout().lock()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sinkd report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn firewall(path: PathBuf, format: FirewallFormat) -> ExitCode {
    use sinkd::firewall;
    let loaded = match load_config(&path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let mut feed = firewall::load(&loaded);
    if firewall::needs_lookup(&loaded, &feed) {
        // No running sinkd has looked the names up lately: do it now.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let c = &loaded.config;
        let ca_file = c.upstream.ca_file.as_ref().map(|p| loaded.resolve(p));
        let ttl = sinkd::wire::TtlPolicy {
            min: c.cache.min_ttl,
            max: c.cache.max_ttl,
        };
        let upstreams = match sinkd::upstream::Upstreams::new(
            &c.upstream.servers.0,
            c.upstream.timeout(),
            ttl,
            ca_file.as_deref(),
        ) {
            Ok(u) => std::sync::Arc::new(u),
            Err(e) => {
                eprintln!("{}: {e}", loaded.path.display());
                return ExitCode::FAILURE;
            }
        };
        let names = firewall::names(&loaded);
        let lookup = firewall::resolve(&upstreams, names);
        match runtime
            .block_on(async { tokio::time::timeout(firewall::LOOKUP_BUDGET, lookup).await })
        {
            Ok(addresses) => {
                if let Err(e) = firewall::store(&loaded, &addresses) {
                    eprintln!(
                        "sinkd firewall: cannot keep the addresses ({e}); printing them anyway"
                    );
                }
                feed.addresses = addresses
                    .into_iter()
                    .filter(|(ip, _)| !feed.ranges.keys().any(|net| net.contains(ip)))
                    .collect();
                feed.resolved_at = Some(std::time::SystemTime::now());
            }
            Err(_) => eprintln!(
                "sinkd firewall: the upstreams did not answer in time; printing the ranges only"
            ),
        }
    }
    let format = match format {
        FirewallFormat::Nft => firewall::Format::Nft,
        FirewallFormat::Iptables => firewall::Format::Iptables,
        FirewallFormat::Plain => firewall::Format::Plain,
    };
    print!(
        "{}",
        firewall::render(&feed, format, &loaded.path.display().to_string())
    );
    ExitCode::SUCCESS
}

fn describe_answer(answer: &sinkd::wire::BlockedAnswer) -> String {
    let rcode = sinkd::wire::Rcode::name(answer.rcode as u16);
    match (answer.address, answer.soa) {
        (Some(ip), _) => format!("{rcode} {ip} (TTL {})", answer.ttl),
        (None, true) => format!("{rcode} and an SOA (cached for {} s)", answer.ttl),
        (None, false) => rcode.to_string(),
    }
}

/// The config, or the exit after saying what is wrong with it.
fn load_config(path: &std::path::Path) -> Result<config::Loaded, ExitCode> {
    config::load(path).map_err(|problem| {
        eprintln!("{problem}");
        ExitCode::FAILURE
    })
}

/// The query log to read: `--file`, else the one the config names.
fn querylog_path(file: Option<PathBuf>, config: &std::path::Path) -> Result<PathBuf, ExitCode> {
    match file {
        Some(path) => Ok(path),
        None => load_config(config).map(|loaded| loaded.resolve(&loaded.config.querylog.path)),
    }
}
