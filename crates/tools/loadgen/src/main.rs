//! `loadgen`: parses the command line, runs, prints the report; exit 1 on a violation, 2 when
//! the run could not be carried out.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let config = loadgen::Config::parse();
    match loadgen::run(&config).await {
        Ok(report) => {
            #[allow(clippy::print_stdout)] // the report is this tool's output
            {
                print!("{report}");
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("loadgen: {err}");
            ExitCode::from(2)
        }
    }
}
