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
    /// Check the configuration, print what it sets up, and exit 1 on any problem.
    Check {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let loaded = match config::load(&path) {
        Ok(loaded) => loaded,
        Err(problem) => {
            eprintln!("{problem}");
            return ExitCode::FAILURE;
        }
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
    let loaded = match config::load(&path) {
        Ok(loaded) => loaded,
        Err(problem) => {
            eprintln!("{problem}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = sinkd::pipeline::Pipeline::new(&loaded) {
        eprintln!("{}: {e}", loaded.path.display());
        return ExitCode::FAILURE;
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
    ExitCode::SUCCESS
}
