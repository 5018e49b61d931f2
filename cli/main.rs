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
    // A component's panic is contained and handled by its supervisor; log it as one line.
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let what = info.payload().downcast_ref::<&str>().map(|s| s.to_string());
        let what = what.or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
        tracing::error!(panic = %what, at = %at, "Panic caught.");
    }));
    commands::dispatch(cli.command, cli.log_format, commands::colour(cli.color))
}
