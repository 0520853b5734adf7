//! `cart-actor`: the binary. It only parses flags and wires the layers
//! together; everything else lives in the library crates.

mod backup;
mod bench;
mod config;
mod families;
mod migrate;
mod serve;
mod stores;
mod telemetry;

use clap::Parser;

/// mimalloc: less lock contention and fragmentation than glibc malloc under
/// many small, short-lived allocations (measured in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A distributed shopping-cart service: one event-sourced actor per cart.
#[derive(Debug, Parser)]
#[command(name = "cart-actor", version, about)]
enum Command {
    /// Run the cart service.
    Serve(Box<config::ServeArgs>),
    /// Copy every cart's event log from one store to another (idempotent,
    /// resumable), e.g. from the file store to PostgreSQL.
    Migrate(migrate::MigrateArgs),
    /// Write a consistent copy of a live store (file or PostgreSQL) to a
    /// new directory.
    Backup(backup::BackupArgs),
    /// Bring a backup back into a store (file or PostgreSQL).
    Restore(backup::RestoreArgs),
    /// Drive a running service with storefront load and report throughput
    /// and latency.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Command::parse() {
        Command::Serve(args) => serve::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            telemetry::fatal(&e);
            std::process::ExitCode::FAILURE
        }
    }
}
