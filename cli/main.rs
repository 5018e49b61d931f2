//! The `fbp` command: parses arguments and calls the runtime. No logic of its own.

mod args;
mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    logging::init(cli.log_level.as_deref(), cli.log_format);
    commands::dispatch(cli.command)
}
