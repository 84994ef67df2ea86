//! `slipway`: the platform (`slipway serve`) and the CLI that talks to its API.
//!
//! The binary is thin: it parses flags, wires the crates together and prints. Everything
//! else lives in the crates named in docs/ARCHITECTURE.md.

mod cli;
mod serve;
mod sse;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Source to a live URL on your own machine.
#[derive(Parser)]
#[command(name = "slipway", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the platform: API, router, deployer, scaler, in one process.
    Serve(Box<serve::ServeArgs>),
    #[command(flatten)]
    Client(Box<cli::ClientCmd>),
}

/// Where state lives when `--data-dir` is not given.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SLIPWAY_DATA_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/slipway")
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slipway: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = match args.cmd {
        Cmd::Serve(a) => rt.block_on(serve::serve(*a)),
        Cmd::Client(c) => rt.block_on(cli::run(*c)),
    };
    // A blocking task still running (a fetch whose remote holds it past its deadline)
    // does not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = result {
        eprintln!("slipway: {e:#}");
        std::process::exit(1);
    }
}
