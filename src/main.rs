//! `pingone-operator`: the controller (`run`) and the CRD printer (`crd`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use pingone_operator::cli::{Cli, Command};
use pingone_operator::{api, operator, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", api::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            pingone_operator::pingone::install_crypto_provider();
            telemetry::init(args.log_format);
            match operator::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "pingone-operator failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
