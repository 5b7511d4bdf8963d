//! `myelin`: the homeserver binary. Parses the command line and hands off;
//! the composition root is [`run`], the client listener [`http`].

mod cli;
#[cfg(test)]
mod front_door;
mod generate;
mod http;
mod run;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// jemalloc returns freed memory to the system; glibc's allocator kept large
/// freed buffers (password hashes take 19 MiB each) in every thread's arena.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => match run::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("myelin: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::GenerateConfig(args) => match generate::generate_config(&args) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("myelin generate-config: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig(args) => match cli::check_config(&args.config) {
            Ok(()) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for error in errors {
                    eprintln!("{error}");
                }
                ExitCode::FAILURE
            }
        },
    }
}
