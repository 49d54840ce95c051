use std::process::ExitCode;

use clap::Parser;
use portlocker::cli::Cli;

fn main() -> ExitCode {
    portlocker::app::main(Cli::parse()).into()
}
