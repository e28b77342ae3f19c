//! `glandseg`: the command line over the pipeline crates. Each subcommand is a thin layer
//! that parses arguments, shows progress and turns errors into messages naming the file.

mod info;
mod phantom;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "glandseg",
    version,
    about = "Salivary and lacrimal gland segmentation and uptake in PET/CT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the built-in synthetic head-and-neck PSMA PET/CT cohort (nnU-Net raw layout).
    Phantom(phantom::PhantomArgs),
    /// Show what glandseg reads from a NIfTI file: grid (LPS), datatype, scaling, values.
    Info(info::InfoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Phantom(a) => phantom::run(a),
        Command::Info(a) => info::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
