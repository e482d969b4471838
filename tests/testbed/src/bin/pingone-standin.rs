//! `pingone-standin`: the PingOne token endpoint stand-in as a standalone HTTPS server, for the
//! demo and benchmarks. Configure it with flags at start and through its admin API under
//! `/__standin/` while it runs (see `pingone_testbed::standin::admin`).
//!
//! Prints `listening on ADDR` once ready and runs until SIGTERM or SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use pingone_testbed::standin::{
    AuthMethod, ClientRegistration, StandIn, StandInConfig, is_environment_id,
};

/// A PingOne token endpoint stand-in (test support; not for production).
#[derive(Debug, Parser)]
#[command(name = "pingone-standin", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,

    /// Write the test CA certificate (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    ca_out: Option<PathBuf>,

    /// Register a client: ENV_ID:CLIENT_ID:CLIENT_SECRET[:post|basic] (default post). The
    /// secret may contain ':'; a last part `post` or `basic` is the method. Repeatable.
    #[arg(long = "client", value_name = "ENV:ID:SECRET[:post|basic]", value_parser = parse_client)]
    clients: Vec<ClientRegistration>,

    /// Scopes a client may request: CLIENT_ID=SCOPE[,SCOPE...]. Repeatable.
    #[arg(long = "client-scopes", value_name = "CLIENT_ID=SCOPES", value_parser = parse_client_scopes)]
    client_scopes: Vec<(String, Vec<String>)>,

    /// Serve an environment on a custom domain: HOST=ENV_ID (also put into the certificate).
    /// Repeatable.
    #[arg(long = "custom-domain", value_name = "HOST=ENV_ID", value_parser = parse_custom_domain)]
    custom_domains: Vec<(String, String)>,

    /// Extra DNS name for the server certificate. Repeatable.
    #[arg(long = "dns-name", value_name = "NAME")]
    dns_names: Vec<String>,

    /// Token lifetime in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    token_lifetime: u64,

    /// Rate limit: at most N token requests per SECS seconds.
    #[arg(long, value_name = "N/SECS", value_parser = parse_rate_limit)]
    rate_limit: Option<(u32, Duration)>,
}

fn parse_client(s: &str) -> Result<ClientRegistration> {
    let mut parts = s.splitn(3, ':');
    let (Some(env), Some(id), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("expected ENV_ID:CLIENT_ID:CLIENT_SECRET[:post|basic]");
    };
    if !is_environment_id(env) {
        bail!("environment id {env:?} is not a lowercase UUID");
    }
    if id.is_empty() {
        bail!("the client id is empty");
    }
    let (secret, method) = match rest.rsplit_once(':') {
        Some((secret, "post")) => (secret, AuthMethod::ClientSecretPost),
        Some((secret, "basic")) => (secret, AuthMethod::ClientSecretBasic),
        _ => (rest, AuthMethod::ClientSecretPost),
    };
    if secret.is_empty() {
        bail!("the client secret is empty");
    }
    Ok(ClientRegistration::new(env, id, secret).with_auth_method(method))
}

fn parse_client_scopes(s: &str) -> Result<(String, Vec<String>)> {
    let (id, scopes) = s
        .split_once('=')
        .context("expected CLIENT_ID=SCOPE[,SCOPE...]")?;
    let scopes = scopes
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((id.to_owned(), scopes))
}

fn parse_custom_domain(s: &str) -> Result<(String, String)> {
    let (host, env) = s.split_once('=').context("expected HOST=ENV_ID")?;
    if host.is_empty() {
        bail!("the host is empty");
    }
    if !is_environment_id(env) {
        bail!("environment id {env:?} is not a lowercase UUID");
    }
    Ok((host.to_ascii_lowercase(), env.to_owned()))
}

fn parse_rate_limit(s: &str) -> Result<(u32, Duration)> {
    let (n, secs) = s.split_once('/').context("expected N/SECS")?;
    let n: u32 = n.trim().parse().context("N is not a number")?;
    let secs: u64 = secs.trim().parse().context("SECS is not a number")?;
    if secs == 0 {
        bail!("SECS must be at least 1");
    }
    Ok((n, Duration::from_secs(secs)))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut clients = args.clients;
    for (id, scopes) in &args.client_scopes {
        let mut found = false;
        for client in clients.iter_mut().filter(|c| &c.client_id == id) {
            client.allowed_scopes.extend(scopes.iter().cloned());
            found = true;
        }
        if !found {
            bail!("--client-scopes names client {id:?}, which no --client registers");
        }
    }

    let standin = StandIn::start(StandInConfig {
        listen: args.listen,
        extra_dns_names: args.dns_names,
        custom_domains: args.custom_domains,
        token_lifetime: Duration::from_secs(args.token_lifetime),
        ..StandInConfig::default()
    })
    .await?;
    for client in clients {
        standin.add_client(client);
    }
    standin.set_rate_limit(args.rate_limit);
    if let Some(path) = &args.ca_out {
        std::fs::write(path, standin.ca_pem())
            .with_context(|| format!("writing the CA certificate to {}", path.display()))?;
    }

    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", standin.addr())?;
        stdout.flush()?;
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = sigterm.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
    }
    standin.shutdown().await;
    Ok(())
}
