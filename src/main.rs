use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    xecm_bridge::cli::run(xecm_bridge::cli::Cli::parse())
}
