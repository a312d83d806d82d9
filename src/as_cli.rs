//! `clients`, `keys` and `hash-password`: operating the built-in authorization server.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use mcp_auth_gateway::authorization_server::cli;
use mcp_auth_gateway::config::authorization_server::AuthorizationServerSettings;

#[derive(Subcommand)]
pub enum ClientsCommand {
    /// List configured and registered clients.
    List {
        #[arg(
            long,
            short,
            default_value = "gateway.toml",
            env = "MCP_GATEWAY_CONFIG"
        )]
        config: PathBuf,
    },
    /// Register a client in the store (kept until removed); prints its id and secret.
    Add {
        #[arg(
            long,
            short,
            default_value = "gateway.toml",
            env = "MCP_GATEWAY_CONFIG"
        )]
        config: PathBuf,
        /// The name shown on the consent page.
        #[arg(long)]
        name: String,
        /// A redirect URI (repeat for several).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Issue a client secret (client_secret_basic) instead of a public client.
        #[arg(long)]
        confidential: bool,
    },
    /// Delete a registered client.
    Remove {
        #[arg(
            long,
            short,
            default_value = "gateway.toml",
            env = "MCP_GATEWAY_CONFIG"
        )]
        config: PathBuf,
        client_id: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key current; old public keys stay published until the tokens they
    /// signed expire. Running gateways pick the new key up within 30 seconds.
    Rotate {
        #[arg(
            long,
            short,
            default_value = "gateway.toml",
            env = "MCP_GATEWAY_CONFIG"
        )]
        config: PathBuf,
    },
}

fn settings(path: &std::path::Path) -> Result<AuthorizationServerSettings, ExitCode> {
    let config = crate::load(path)?;
    config.authorization_server.ok_or_else(|| {
        eprintln!(
            "{}: no [authorization_server] section: the built-in authorization server is off",
            path.display()
        );
        ExitCode::FAILURE
    })
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|runtime| runtime.block_on(future))
        .map_err(|error| {
            eprintln!("cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

fn report<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, ExitCode> {
    result.map_err(|error| {
        eprintln!("{error}");
        ExitCode::FAILURE
    })
}

pub fn clients(command: ClientsCommand) -> ExitCode {
    let run = || -> Result<(), ExitCode> {
        match command {
            ClientsCommand::List { config } => {
                let settings = settings(&config)?;
                for client in report(block_on(cli::list_clients(&settings))?)? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        client.client_id,
                        client.source,
                        if client.confidential {
                            "confidential"
                        } else {
                            "public"
                        },
                        client.name,
                        client.redirect_uris.join(" ")
                    );
                }
            }
            ClientsCommand::Add {
                config,
                name,
                redirect_uris,
                confidential,
            } => {
                let settings = settings(&config)?;
                let (client_id, secret) = report(block_on(cli::add_client(
                    &settings,
                    &name,
                    &redirect_uris,
                    confidential,
                ))?)?;
                println!("client_id:     {client_id}");
                if let Some(secret) = secret {
                    println!("client_secret: {secret}");
                    eprintln!("(the secret is shown once; only its hash is stored)");
                }
            }
            ClientsCommand::Remove { config, client_id } => {
                let settings = settings(&config)?;
                let deletion = report(block_on(cli::remove_client(&settings, &client_id))?)?;
                if !deletion.existed {
                    eprintln!("no registered client {client_id:?} (clients from the configuration file are removed there)");
                    return Err(ExitCode::FAILURE);
                }
                println!(
                    "removed {client_id}; its grants are revoked ({} access tokens still unexpired, refused by running gateways within seconds)",
                    deletion.revoked_access.len()
                );
            }
        }
        Ok(())
    };
    run().err().unwrap_or(ExitCode::SUCCESS)
}

pub fn keys(command: KeysCommand) -> ExitCode {
    let KeysCommand::Rotate { config } = command;
    let run = || -> Result<(), ExitCode> {
        let settings = settings(&config)?;
        if settings.signing_key_file.is_some() {
            eprintln!("signing_key_file is set: rotate by replacing that file and restarting");
            return Err(ExitCode::FAILURE);
        }
        let kid = report(block_on(cli::rotate_keys(&settings))?)?;
        println!("new signing key: {kid}");
        Ok(())
    };
    run().err().unwrap_or(ExitCode::SUCCESS)
}

/// Reads a password (one line on a terminal, everything when piped) and prints its
/// Argon2id hash for `[[authorization_server.users]] password_hash`.
pub fn hash_password() -> ExitCode {
    let mut input = String::new();
    let read = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("Password (then Enter; it is not stored): ");
        std::io::stdin().read_line(&mut input).map(|_| ())
    } else {
        std::io::stdin().read_to_string(&mut input).map(|_| ())
    };
    if let Err(error) = read {
        eprintln!("cannot read the password from stdin: {error}");
        return ExitCode::FAILURE;
    }
    let password = input.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!(
            "no password on stdin: e.g. `printf %s \"$PASSWORD\" | mcp-auth-gateway hash-password`"
        );
        return ExitCode::FAILURE;
    }
    match cli::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
