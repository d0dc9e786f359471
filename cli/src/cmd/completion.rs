//! `nexus completion bash|zsh|fish`: shell completion scripts generated from the command tree.

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: Args) -> u8 {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "nexus", &mut std::io::stdout());
    exit::OK
}
