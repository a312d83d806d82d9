//! The `mcp-auth-gateway` command: serve, check, keygen, hash-key, token, and for the
//! built-in authorization server clients, keys, hash-password.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mcp_auth_gateway::auth::api_key;
use mcp_auth_gateway::config::{self, Config};
use mcp_auth_gateway::model::route::UserTokenSource;
use mcp_auth_gateway::{observability, Gateway};

mod as_cli;
mod probe_cli;
mod token_cli;

#[derive(Parser)]
#[command(
    name = "mcp-auth-gateway",
    version,
    about = "Auth gateway for MCP servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(
            long,
            short,
            default_value = "gateway.toml",
            env = "MCP_GATEWAY_CONFIG"
        )]
        config: PathBuf,
        /// Also reload when the file's content changes (checked every 2 s; a Kubernetes
        /// ConfigMap update, an edit), as SIGHUP does.
        #[arg(long, env = "MCP_GATEWAY_WATCH")]
        watch: bool,
    },
    /// Validate a configuration and print the routes and verifiers it compiles to.
    Check {
        #[arg(
            long,
            short,
            default_value = "gateway.toml",
            env = "MCP_GATEWAY_CONFIG"
        )]
        config: PathBuf,
    },
    /// Generate a new API key and print it with the hash to put in the configuration.
    Keygen,
    /// Read an API key from stdin and print its `sha256:` hash.
    HashKey,
    /// Inspect or mint JWTs (for debugging and demos).
    #[command(subcommand)]
    Token(token_cli::TokenCommand),
    /// Manage the built-in authorization server's registered clients.
    #[command(subcommand)]
    Clients(as_cli::ClientsCommand),
    /// Rotate the built-in authorization server's signing key.
    #[command(subcommand)]
    Keys(as_cli::KeysCommand),
    /// Read a password from stdin and print its Argon2id hash (local users).
    HashPassword,
    /// Ask a health endpoint; exit 0 when it answers 2xx (container health checks).
    Probe(probe_cli::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, watch } => serve(config, watch),
        Command::Check { config } => check(config),
        Command::Keygen => keygen(),
        Command::HashKey => hash_key(),
        Command::Token(command) => token_cli::run(command),
        Command::Clients(command) => as_cli::clients(command),
        Command::Keys(command) => as_cli::keys(command),
        Command::HashPassword => as_cli::hash_password(),
        Command::Probe(args) => probe_cli::run(args),
    }
}

pub(crate) fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|error| {
        eprint!("{}: {error}", path.display());
        ExitCode::FAILURE
    })
}

fn serve(path: PathBuf, watch: bool) -> ExitCode {
    // The control runtime: signals and background refreshes. Requests are served by the
    // gateway's own worker threads (`server.workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let config = match load(&path) {
            Ok(config) => config,
            Err(code) => return code,
        };
        // Held until exit: dropping it flushes the queued log lines.
        let _log = observability::init(&config.log);
        let routes = config.routes.len();
        // The content the running configuration came from: a change made while the gateway
        // starts is a change too.
        let mut watcher = watch.then(|| ConfigWatcher::new(&path, &config.source_sha256));
        let gateway = match Gateway::start(config).await {
            Ok(gateway) => gateway,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(routes, config = %path.display(), watch, "mcp-auth-gateway started");
        loop {
            let signal = match watcher.as_mut() {
                Some(watcher) => tokio::select! {
                    signal = wait_for_signal() => signal,
                    () = watcher.changed() => Signal::FileChanged,
                },
                None => wait_for_signal().await,
            };
            match signal {
                Signal::Stop => break,
                Signal::Reload => reload(&gateway, &path, "SIGHUP received"),
                Signal::FileChanged => reload(&gateway, &path, "the configuration file changed"),
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        gateway.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

enum Signal {
    Stop,
    Reload,
    FileChanged,
}

/// `serve --watch`: notices when the configuration file's content changes. It compares
/// content, not modification times: a Kubernetes ConfigMap is swapped in through symlinks,
/// and an editor may touch a file without changing it.
struct ConfigWatcher {
    path: PathBuf,
    /// SHA-256 (hex) of the content last loaded or seen.
    last: String,
}

impl ConfigWatcher {
    const INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

    /// `loaded`: SHA-256 (hex) of the text the running configuration was compiled from.
    fn new(path: &std::path::Path, loaded: &str) -> ConfigWatcher {
        ConfigWatcher {
            path: path.to_path_buf(),
            last: loaded.to_string(),
        }
    }

    fn digest(path: &std::path::Path) -> Option<String> {
        let text = std::fs::read(path).ok()?;
        Some(
            api_key::sha256(&text)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// Returns once the content differs from what it was at the last change (a file that
    /// cannot be read for a moment, mid-swap, is no change).
    async fn changed(&mut self) {
        loop {
            tokio::time::sleep(Self::INTERVAL).await;
            match Self::digest(&self.path) {
                Some(now) if now != self.last => {
                    self.last = now;
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Waits for SIGTERM or Ctrl-C (stop) or SIGHUP (reload: `systemctl reload`,
/// `kill -HUP`).
async fn wait_for_signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return Signal::Stop;
        };
        tokio::select! {
            _ = term.recv() => Signal::Stop,
            _ = tokio::signal::ctrl_c() => Signal::Stop,
            _ = hangup.recv() => Signal::Reload,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}

/// Reads and compiles the configuration file again and swaps it in; a file that does not
/// compile is reported (every problem, with its key path) and the running configuration
/// keeps serving.
fn reload(gateway: &Gateway, path: &std::path::Path, why: &str) {
    tracing::info!(config = %path.display(), "{why}: reloading the configuration");
    match config::load(path) {
        Ok(config) => {
            let hash = config.source_sha256.clone();
            let needs_restart = gateway.reload(config);
            tracing::info!(sha256 = %hash, "configuration reloaded");
            if !needs_restart.is_empty() {
                tracing::warn!(
                    changed = ?needs_restart,
                    "these settings changed but apply only at the next restart"
                );
            }
        }
        Err(error) => {
            observability::metrics::METRICS.config_loaded("error", None);
            tracing::error!(
                config = %path.display(),
                problems = %error.to_string().trim_end(),
                "configuration reload failed; the running configuration keeps serving"
            );
        }
    }
}

fn check(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    println!("{}: ok", path.display());
    println!(
        "public_url: {}{}",
        config.server.public_url.origin, config.server.public_url.base_path
    );
    for addr in &config.server.listen {
        println!(
            "listen: {addr}{}",
            if config.server.tls.is_some() {
                " (tls)"
            } else {
                ""
            }
        );
    }
    println!("workers: {}", config.server.workers);
    if let Some(path) = &config.forward_auth.path {
        println!("forward_auth: {path}");
    }
    println!("verifiers:");
    println!("  api_keys: {} key(s)", config.verifiers.api_keys.len());
    for issuer in &config.verifiers.issuers {
        println!(
            "  jwt:{} issuer={} algorithms={:?}",
            issuer.id, issuer.issuer, issuer.algorithms
        );
    }
    for x in &config.verifiers.introspectors {
        println!("  introspection:{} endpoint={}", x.id, x.endpoint);
    }
    println!("routes:");
    for route in config.routes.iter() {
        println!(
            "  {} {}{} -> {}://{}{} verifiers=[{}] scopes=[{}] resource={}{}",
            route.id,
            route.host.as_deref().unwrap_or(""),
            route.path,
            route.upstream.scheme,
            route.upstream.authority,
            route.upstream.base_path,
            if route.unauthenticated {
                "NONE (dangerous)".to_string()
            } else {
                route.verifiers.describe().join(", ")
            },
            route.required_scopes.join(" "),
            route.resource,
            if route.public_paths.is_empty() {
                String::new()
            } else {
                format!(" public={:?}", route.public_paths)
            },
        );
        if let Some(mcp) = &route.mcp {
            for line in mcp_auth_gateway::model::rules::describe(mcp) {
                println!("    {line}");
            }
        }
    }
    if let Some(settings) = &config.authorization_server {
        println!("authorization_server: issuer={}", settings.issuer);
        match &settings.redis {
            Some(redis) => println!("  store: Redis {} (shared by replicas)", redis.url),
            None => println!("  database: {}", settings.database.display()),
        }
        println!(
            "  signing: {:?}{}",
            settings.signing_algorithm,
            settings
                .signing_key_file
                .as_ref()
                .map(|f| format!(" from {}", f.display()))
                .unwrap_or_else(|| " (generated, kept in the store)".into())
        );
        println!(
            "  tokens: access {:?}, refresh {:?} (reuse grace {:?}), code {:?}",
            settings.access_token_ttl,
            settings.refresh_token_ttl,
            settings.refresh_reuse_grace,
            settings.code_ttl
        );
        println!(
            "  clients: {} configured; registration {}; metadata documents {}",
            settings.clients.len(),
            if settings.registration.enabled {
                "on"
            } else {
                "off"
            },
            if settings.cimd.enabled { "on" } else { "off" }
        );
        println!("  users: {}", settings.users.len());
        for provider in &settings.identity_providers {
            // The callback is what the operator registers at the provider.
            println!(
                "  identity provider {}: {} ({}), callback {}",
                provider.id,
                provider.display_name,
                if provider.is_github() {
                    "github"
                } else {
                    "oidc"
                },
                settings.callback_uri(&provider.id)
            );
        }
        for route in config.routes.iter() {
            // What the operator registers at an upstream's authorization server, when the
            // gateway cannot register itself there.
            if let Some(UserTokenSource::UpstreamOAuth(oauth)) =
                route.user_token.as_ref().map(|t| &t.source)
            {
                println!(
                    "  route {}: users connect to the upstream's authorization server ({}), redirect URI {}",
                    route.id,
                    oauth
                        .authorization_server
                        .as_deref()
                        .unwrap_or("discovered"),
                    settings.connect_callback_uri(&route.id)
                );
            }
        }
        for resource in &settings.resources {
            println!(
                "  resource: {} scopes=[{}]",
                resource.uri,
                resource.scopes.join(" ")
            );
        }
        for warning in mcp_auth_gateway::authorization_server::client_pitfalls(settings) {
            println!("WARNING authorization_server: {warning}");
        }
    }
    for proxy in &config.outbound_proxy {
        println!("outbound proxy for identity calls: {proxy}");
    }
    for switch in &config.dangerous {
        println!("WARNING dangerous: {switch}");
    }
    for warning in &config.warnings {
        println!("WARNING {}: {}", warning.path, warning.message);
    }
    ExitCode::SUCCESS
}

fn keygen() -> ExitCode {
    match api_key::generate_key() {
        Ok(key) => {
            println!("key:  {key}");
            println!(
                "hash: {}",
                api_key::format_hash(&api_key::sha256(key.as_bytes()))
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn hash_key() -> ExitCode {
    let mut input = String::new();
    // On a terminal, say what is expected and read one line; piped, read everything.
    let read = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("API key (then Enter; it is not stored): ");
        std::io::stdin().read_line(&mut input).map(|_| ())
    } else {
        std::io::stdin().read_to_string(&mut input).map(|_| ())
    };
    if let Err(error) = read {
        eprintln!("cannot read the key from stdin: {error}");
        return ExitCode::FAILURE;
    }
    let key = input.trim_end_matches(['\r', '\n']);
    if key.is_empty() {
        eprintln!("no key on stdin: pipe the key in, e.g. `printf %s \"$KEY\" | mcp-auth-gateway hash-key`");
        return ExitCode::FAILURE;
    }
    println!("{}", api_key::format_hash(&api_key::sha256(key.as_bytes())));
    ExitCode::SUCCESS
}
