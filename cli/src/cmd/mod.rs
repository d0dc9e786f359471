//! The command tree. Each command lives in its own module and returns an exit code.

use clap::{Parser, Subcommand, ValueEnum};

pub mod agent;
pub mod apply;
pub mod audit;
pub mod bench;
pub mod bench_agents;
pub mod bench_gitops;
pub mod bench_ledger;
pub mod bench_network;
pub mod bench_replication;
pub mod cluster;
pub mod completion;
pub mod debug;
pub mod diff;
pub mod get;
pub mod gitops;
pub mod history;
pub mod init;
pub mod local;
pub mod logs;
pub mod network;
pub mod plan;
pub mod schema;
pub mod server;
pub mod service;
pub mod token;
pub mod up;
pub mod up_git;
pub mod user;
pub mod validate;
pub mod wait;

/// nexus: a BFT-replicated, GitOps-native control plane.
#[derive(Debug, Parser)]
#[command(name = "nexus", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Context to use (default: $NEXUS_CONTEXT, else the config's current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Output format for commands that print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests offline: YAML syntax, kinds, fields, types, ranges, names, duplicates.
    Validate(validate::Args),
    /// Print or write the JSON Schemas (draft-07) of the manifest kinds, for editors.
    Schema(schema::Args),
    /// Show what changes between two manifest sets (files or directories).
    Diff(diff::Args),
    /// Start a local cluster (replicas, 3 node agents, the examples) and supervise it.
    Up(up::Args),
    /// Run a control-plane replica.
    Server(server::Args),
    /// Run a node agent: join the cluster, run the replicas assigned to this node.
    Agent(agent::Args),
    /// Create join tokens for node agents.
    Token(token::Args),
    /// Local clusters (create, delete, list) and cluster status.
    Cluster(cluster::Args),
    /// Deploy a command or image as a workload and service.
    Service(service::Args),
    /// Stream a workload's output from its replicas.
    Logs(logs::Args),
    /// Apply manifests: validate, sign and commit them (created / configured / unchanged).
    Apply(apply::ApplyArgs),
    /// List live objects.
    Get(get::Args),
    /// Delete objects named in manifests, or KIND NAME.
    Delete(apply::DeleteArgs),
    /// Every version of an object: who, when, from where, and what changed.
    History(history::Args),
    /// Query the audit log, or `audit verify` the hash chain and signatures.
    Audit(audit::Args),
    /// Git sources: add one, show their sync status, sync one now.
    Gitops(gitops::Args),
    /// Network policy: `network policy create NAME --selector ... --allow-ingress ...`.
    Network(network::Args),
    /// Troubleshooting: `debug troubleshoot WORKLOAD --network`.
    Debug(debug::Args),
    /// What merging a branch would change in the live cluster (for pull-request review).
    Plan(plan::Args),
    /// Create a cluster: CA, replica certificate and config, admin user, and a client context.
    Init(init::Args),
    /// Manage user certificates.
    User(user::Args),
    /// Print a shell completion script.
    Completion(completion::Args),
    /// Run a benchmark and print a table of measured figures.
    Bench(bench::Args),
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Schema(a) => schema::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Completion(a) => completion::run(a),
        Command::Init(a) => init::run(a),
        Command::Server(a) => server::run(a),
        Command::Up(a) => up::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Token(a) => token::run(a),
        Command::Cluster(a) => cluster::run(a, cli.context.as_deref()),
        Command::Service(a) => service::run(a, cli.context.as_deref()),
        Command::Logs(a) => logs::run(a, cli.context.as_deref()),
        Command::Apply(a) => apply::apply(a, cli.context.as_deref()),
        Command::Get(a) => get::run(a, cli.context.as_deref()),
        Command::Delete(a) => apply::delete(a, cli.context.as_deref()),
        Command::History(a) => history::run(a, cli.context.as_deref()),
        Command::Audit(a) => audit::run(a, cli.context.as_deref()),
        Command::Gitops(a) => gitops::run(a, cli.context.as_deref()),
        Command::Network(a) => network::run(a, cli.context.as_deref()),
        Command::Debug(a) => debug::run(a, cli.context.as_deref()),
        Command::Plan(a) => plan::run(a, cli.context.as_deref()),
        Command::User(a) => user::run(a, cli.context.as_deref()),
        Command::Bench(a) => bench::run(a),
    }
}
