//! `kubectl pingone`: the day-to-day questions about PingOneConnections in one command each.
//!
//! - `status`: every connection with readiness, reason, expiry, next renewal, last failure and
//!   the next attempt when a retry is scheduled;
//! - `renew NAME`: asks the operator for a new token now (an annotation);
//! - `why NAME`: conditions, recent Events and the README's hint for each reason they show;
//! - `token NAME`: the token's decoded claims and times, never the token unless asked.
//!
//! Installed as `kubectl-pingone` on the PATH, kubectl runs it for `kubectl pingone`. kubectl
//! passes no flags to plugins: `--kubeconfig`, `--context` and `-n` are handled here, as
//! kubectl does (KUBECONFIG, the context's namespace).
#![forbid(unsafe_code)]

mod jwt;
mod readme;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config, ResourceExt};
use serde_json::Value;

/// The annotation that asks the operator for a new token; its value is an RFC 3339 time, and
/// each distinct value is served once (recorded in `status.renewRequestServed`).
const RENEW_ANNOTATION: &str = "pingone.tokenops.dev/renew-requested-at";

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-pingone",
    bin_name = "kubectl pingone",
    version,
    about = "Status, renewal, troubleshooting and token claims of PingOneConnections"
)]
struct Cli {
    #[command(flatten)]
    kube: KubeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every connection: ready, reason, token expiry, next renewal, last failure, next attempt.
    Status {
        /// Connections of all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Asks the operator for a new token now (sets the annotation
    /// pingone.tokenops.dev/renew-requested-at).
    Renew {
        /// The connection.
        name: String,
        /// Wait until the operator has served the request (status.renewRequestServed).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. 30s, 2m.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Why a connection is (not) Ready: conditions, recent Events and what to do.
    Why {
        /// The connection.
        name: String,
    },
    /// The token's claims (issuer, audience, client, scopes, times), not the token itself.
    Token {
        /// The connection.
        name: String,
        /// Print the access token too.
        #[arg(long)]
        show_token: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let span: jiff::Span = s.parse().map_err(|e| format!("{s}: {e}"))?;
    let d = SignedDuration::try_from(span).map_err(|e| format!("{s}: {e}"))?;
    Duration::try_from(d).map_err(|e| format!("{s}: {e}"))
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The client and the namespace to work in, as kubectl would pick them.
async fn connect(args: &KubeArgs) -> Result<(Client, String), Error> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

/// Reads connection `name`; a connection that does not exist is a one-line message naming it
/// and the namespace, not the API server's error structure.
async fn get_connection(
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
) -> Result<DynamicObject, Error> {
    match api.get_opt(name).await? {
        Some(obj) => Ok(obj),
        None => Err(not_found(namespace, name).into()),
    }
}

/// What the plugin says of a connection that does not exist.
fn not_found(namespace: &str, name: &str) -> String {
    format!("pingoneconnection {name} not found in namespace {namespace}")
}

fn connections_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("pingone.tokenops.dev", "v1alpha1", "PingOneConnection"),
        "pingoneconnections",
    )
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let (client, namespace) = connect(&cli.kube).await?;
    let resource = connections_resource();
    let connections: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &resource);
    match cli.command {
        Command::Status { all_namespaces } => {
            let api = if all_namespaces {
                Api::all_with(client, &resource)
            } else {
                connections
            };
            status(&api, all_namespaces, &namespace).await
        }
        Command::Renew {
            name,
            wait,
            timeout,
        } => renew(&connections, &namespace, &name, wait, timeout).await,
        Command::Why { name } => why(&client, &connections, &namespace, &name).await,
        Command::Token { name, show_token } => {
            token(&client, &connections, &namespace, &name, show_token).await
        }
    }
}

/// A time as RFC 3339 UTC with whole seconds.
fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `t` relative to `now`: "in 9m", "3m ago", "in 1h5m", "now".
fn relative(t: Timestamp, now: Timestamp) -> String {
    let secs = t.as_second() - now.as_second();
    let a = secs.unsigned_abs();
    let text = if a < 60 {
        format!("{a}s")
    } else if a < 3600 {
        format!("{}m", a / 60)
    } else if a < 86_400 {
        let m = (a % 3600) / 60;
        if m == 0 {
            format!("{}h", a / 3600)
        } else {
            format!("{}h{m}m", a / 3600)
        }
    } else {
        let h = (a % 86_400) / 3600;
        if h == 0 {
            format!("{}d", a / 86_400)
        } else {
            format!("{}d{h}h", a / 86_400)
        }
    };
    match secs {
        0 => "now".into(),
        s if s > 0 => format!("in {text}"),
        _ => format!("{text} ago"),
    }
}

fn status_of(obj: &DynamicObject) -> &Value {
    &obj.data["status"]
}

fn conditions(obj: &DynamicObject) -> Vec<&Value> {
    status_of(obj)["conditions"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    conditions(obj).into_iter().find(|c| c["type"] == type_)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The condition that says what is wrong: Stalled=True, then Ready not True, then
/// Reconciling=True, then any other condition that is False; `None` when healthy.
fn problem(obj: &DynamicObject) -> Option<&Value> {
    let is = |type_: &str, status: &str| condition(obj, type_).filter(|c| c["status"] == status);
    is("Stalled", "True")
        .or_else(|| condition(obj, "Ready").filter(|c| c["status"] != "True"))
        .or_else(|| is("Reconciling", "True"))
        .or_else(|| {
            conditions(obj).into_iter().find(|c| {
                c["status"] == "False"
                    && !["Ready", "Stalled", "Reconciling"].contains(&str_of(&c["type"]))
            })
        })
}

/// When the operator tries again after a failure (`status.nextAttemptTime`), relative to
/// `now`: "in 40s", "due" once the time has come, "-" when no retry is scheduled.
fn next_attempt(obj: &DynamicObject, now: Timestamp) -> String {
    match status_of(obj)["nextAttemptTime"]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
    {
        Some(t) if t.as_second() > now.as_second() => relative(t, now),
        Some(_) => "due".into(),
        None => "-".into(),
    }
}

/// A status time field, shown absolute and relative to `now`.
fn time_field(obj: &DynamicObject, field: &str, now: Timestamp) -> String {
    status_of(obj)[field]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|t| relative(t, now))
        .unwrap_or_else(|| "-".into())
}

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == row.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

async fn status(
    api: &Api<DynamicObject>,
    all_namespaces: bool,
    namespace: &str,
) -> Result<ExitCode, Error> {
    let mut list = api.list(&ListParams::default()).await?.items;
    list.sort_by_key(|o| (o.namespace(), o.name_any()));
    if list.is_empty() {
        if all_namespaces {
            eprintln!("No PingOneConnections found.");
        } else {
            eprintln!("No PingOneConnections found in namespace {namespace}.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = Timestamp::now();
    let mut header = vec![
        "NAME",
        "READY",
        "REASON",
        "EXPIRES",
        "NEXT RENEWAL",
        "LAST FAILURE",
        "NEXT ATTEMPT",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for obj in &list {
        let ready = condition(obj, "Ready")
            .map(|c| str_of(&c["status"]).to_string())
            .unwrap_or_else(|| "Unknown".into());
        let reason = problem(obj)
            .or_else(|| condition(obj, "Ready"))
            .map(|c| str_of(&c["reason"]).to_string())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "-".into());
        let mut row = vec![
            obj.name_any(),
            ready,
            reason,
            time_field(obj, "expiresAt", now),
            time_field(obj, "renewalTime", now),
            time_field(obj, "lastFailureTime", now),
            next_attempt(obj, now),
        ];
        if all_namespaces {
            row.insert(0, obj.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

async fn renew(
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
    wait: bool,
    timeout: Duration,
) -> Result<ExitCode, Error> {
    // Fails with "not found" before anything is written.
    get_connection(api, namespace, name).await?;
    let value = rfc3339(Timestamp::now());
    let patch = serde_json::json!({"metadata": {"annotations": {RENEW_ANNOTATION: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    println!("pingoneconnection/{name}: renewal requested ({RENEW_ANNOTATION}={value})");
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut said = false;
    loop {
        let obj = api.get(name).await?;
        // Held back by the floor: say why, once.
        if !said
            && let Some(waiting) = conditions(&obj)
                .into_iter()
                .find(|c| c["reason"] == "RenewRequestWaiting" && c["status"] == "True")
        {
            println!("pingoneconnection/{name}: {}", str_of(&waiting["message"]));
            said = true;
        }
        if status_of(&obj)["renewRequestServed"] == value.as_str() {
            let now = Timestamp::now();
            println!(
                "pingoneconnection/{name}: renewal served; token expires {}",
                time_field(&obj, "expiresAt", now)
            );
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "pingoneconnection/{name}: the renewal was not served within {timeout:?} (status.renewRequestServed is {}); see kubectl pingone why {name}",
                status_of(&obj)["renewRequestServed"]
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When an Event last happened, as well as it can tell.
fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How many recent Events `why` shows.
const EVENTS_SHOWN: usize = 10;

async fn why(
    client: &Client,
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
) -> Result<ExitCode, Error> {
    let obj = get_connection(api, namespace, name).await?;
    let now = Timestamp::now();
    println!("PingOneConnection {namespace}/{name}");
    println!();
    println!("Conditions:");
    let conds = conditions(&obj);
    if conds.is_empty() {
        println!(
            "  none yet (the operator has not reconciled it; is it running and watching {namespace}?)"
        );
    } else {
        let mut rows = vec![
            ["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        for c in &conds {
            let since = c["lastTransitionTime"]
                .as_str()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .map(|t| relative(t, now))
                .unwrap_or_default();
            rows.push(vec![
                format!("  {}", str_of(&c["type"])),
                str_of(&c["status"]).into(),
                str_of(&c["reason"]).into(),
                since,
                str_of(&c["message"]).into(),
            ]);
        }
        rows[0][0] = format!("  {}", rows[0][0]);
        print_table(&rows);
    }

    println!();
    println!("Recent Events:");
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let selector = format!("involvedObject.name={name},involvedObject.kind=PingOneConnection");
    let mut list = events
        .list(&ListParams::default().fields(&selector))
        .await?
        .items;
    if let Some(uid) = obj.uid() {
        list.retain(|e| e.involved_object.uid.as_deref().is_none_or(|u| u == uid));
    }
    list.sort_by_key(event_time);
    let skip = list.len().saturating_sub(EVENTS_SHOWN);
    if list.is_empty() {
        println!("  none");
    } else {
        let mut rows = vec![
            ["  LAST SEEN", "TYPE", "REASON", "COUNT", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        for e in list.iter().skip(skip) {
            rows.push(vec![
                format!(
                    "  {}",
                    event_time(e).map(|t| relative(t, now)).unwrap_or_default()
                ),
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.series
                    .as_ref()
                    .and_then(|s| s.count)
                    .or(e.count)
                    .unwrap_or(1)
                    .to_string(),
                e.message.clone().unwrap_or_default(),
            ]);
        }
        print_table(&rows);
    }

    let warnings: Vec<String> = list
        .iter()
        .skip(skip)
        .rev()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason.clone())
        .collect();
    for line in advice(&obj, &warnings) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The conditions that say what is wrong, most telling first: Stalled=True, Ready not True,
/// Reconciling=True, then any other condition that is False.
fn problems(obj: &DynamicObject) -> Vec<&Value> {
    let conds = conditions(obj);
    let of = |pick: &dyn Fn(&Value) -> bool| -> Vec<&Value> {
        conds.iter().copied().filter(|c| pick(c)).collect()
    };
    [
        of(&|c| c["type"] == "Stalled" && c["status"] == "True"),
        of(&|c| c["type"] == "Ready" && c["status"] != "True"),
        of(&|c| c["type"] == "Reconciling" && c["status"] == "True"),
        of(&|c| {
            c["status"] == "False"
                && !["Ready", "Stalled", "Reconciling"].contains(&str_of(&c["type"]))
        }),
    ]
    .concat()
}

/// The end of `why`: for each reason the conditions show as a problem, and each reason of the
/// Warning Events shown (`warnings`, newest first), what it means and what to do, from the
/// README; each reason once. "Ready: nothing to do." when no condition shows a problem.
fn advice(obj: &DynamicObject, warnings: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let explain = |lines: &mut Vec<String>, heading: String, reason: &str| {
        lines.push(String::new());
        lines.push(heading);
        match readme::hint(reason) {
            Some(h) => {
                if !h.meaning.is_empty() {
                    lines.push(format!("Meaning: {}", h.meaning));
                }
                lines.push(format!("What to do: {}", h.what_to_do));
            }
            None => lines.push(format!(
                "What to do: the README has no entry for {reason}; read the message above"
            )),
        }
    };
    let problems = problems(obj);
    if problems.is_empty() {
        lines.push(String::new());
        lines.push("Ready: nothing to do.".into());
    }
    for c in problems {
        let reason = str_of(&c["reason"]);
        if seen.contains(&reason) {
            continue;
        }
        seen.push(reason);
        let heading = format!(
            "Problem: {}={}: {reason}",
            str_of(&c["type"]),
            str_of(&c["status"])
        );
        explain(&mut lines, heading, reason);
    }
    for reason in warnings {
        if reason.is_empty() || seen.contains(&reason.as_str()) {
            continue;
        }
        seen.push(reason.as_str());
        explain(&mut lines, format!("Warning Event: {reason}"), reason);
    }
    lines
}

async fn token(
    client: &Client,
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
    show_token: bool,
) -> Result<ExitCode, Error> {
    let obj = get_connection(api, namespace, name).await?;
    // The Secret the spec names (the operator's rule: target.secretName, else NAME-token),
    // else the one status says was written last.
    let desired = obj.data["spec"]["target"]["secretName"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| format!("{name}-token"));
    let mut candidates = vec![desired];
    if let Some(written) = status_of(&obj)["tokenSecretName"].as_str()
        && written != candidates[0]
    {
        candidates.push(written.to_string());
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut found = None;
    for candidate in &candidates {
        if let Some(secret) = secrets.get_opt(candidate).await? {
            found = Some((candidate.clone(), secret));
            break;
        }
    }
    let Some((secret_name, secret)) = found else {
        eprintln!(
            "Secret {namespace}/{} does not exist yet; see kubectl pingone why {name}",
            candidates[0]
        );
        return Ok(ExitCode::FAILURE);
    };
    // The data keys the spec names (spec.target.keys), else the defaults.
    let keys = &obj.data["spec"]["target"]["keys"];
    let data = |field: &str, default: &str| {
        let key = keys[field].as_str().unwrap_or(default);
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let now = Timestamp::now();
    let at = |t: Timestamp| format!("{} ({})", rfc3339(t), relative(t, now));
    println!("Secret:      {namespace}/{secret_name}");
    if let Some(t) = data("tokenType", "token_type") {
        println!("token type:  {t}");
    }
    if let Some(e) = data("expiresAt", "expires_at") {
        match e.parse::<Timestamp>() {
            Ok(t) => println!("expires_at:  {}", at(t)),
            Err(_) => println!("expires_at:  {e}"),
        }
    }
    let Some(access_token) = data("accessToken", "access_token").filter(|t| !t.is_empty()) else {
        println!("The Secret holds no access token.");
        return Ok(ExitCode::FAILURE);
    };
    match jwt::decode(&access_token) {
        None => println!("The token is opaque (not a JWT): no claims to show."),
        Some((header, claims)) => {
            println!("Claims (decoded, not verified):");
            for key in [
                "iss",
                "aud",
                "sub",
                "client_id",
                "scope",
                "scp",
                "env",
                "org",
            ] {
                if let Some(v) = claims.get(key) {
                    println!("  {key:<10} {}", jwt::text(v));
                }
            }
            for key in ["iat", "nbf", "exp"] {
                if let Some(v) = claims.get(key) {
                    match v.as_i64().and_then(|s| Timestamp::from_second(s).ok()) {
                        Some(t) => println!("  {key:<10} {}", at(t)),
                        None => println!("  {key:<10} {}", jwt::text(v)),
                    }
                }
            }
            for key in ["alg", "kid"] {
                if let Some(v) = header.get(key) {
                    println!("  {:<10} {}", format!("({key})"), jwt::text(v));
                }
            }
        }
    }
    if show_token {
        println!("access_token: {access_token}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| now + SignedDuration::from_secs(s);
        assert_eq!(relative(at(0), now), "now");
        assert_eq!(relative(at(9 * 60 + 5), now), "in 9m");
        assert_eq!(relative(at(-42), now), "42s ago");
        assert_eq!(relative(at(3900), now), "in 1h5m");
        assert_eq!(relative(at(7200), now), "in 2h");
        assert_eq!(relative(at(-(2 * 86_400 + 3 * 3600)), now), "2d3h ago");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
    }

    fn connection(status: Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pingone.tokenops.dev/v1alpha1",
            "kind": "PingOneConnection",
            "metadata": {"name": "c", "namespace": "ns"},
            "status": status,
        }))
        .unwrap()
    }

    fn cond(type_: &str, status: &str, reason: &str) -> Value {
        serde_json::json!({"type": type_, "status": status, "reason": reason, "message": "m"})
    }

    #[test]
    fn the_next_attempt_is_shown_when_a_retry_is_scheduled() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let retrying = connection(serde_json::json!({"nextAttemptTime": "2026-01-01T00:00:40Z"}));
        assert_eq!(next_attempt(&retrying, now), "in 40s");
        let due = connection(serde_json::json!({"nextAttemptTime": "2026-01-01T00:00:00Z"}));
        assert_eq!(next_attempt(&due, now), "due");
        let passed = connection(serde_json::json!({"nextAttemptTime": "2025-12-31T23:59:00Z"}));
        assert_eq!(next_attempt(&passed, now), "due");
        assert_eq!(next_attempt(&connection(serde_json::json!({})), now), "-");
    }

    /// An expired connection shows two reasons (TokenExpired, and the cause): `why` explains
    /// both, and a Warning Event's reason too, each once.
    #[test]
    fn why_explains_every_reason_it_shows() {
        let expired = connection(serde_json::json!({"conditions": [
            cond("Ready", "False", "TokenExpired"),
            cond("Reconciling", "False", "Reconciled"),
            cond("Stalled", "True", "InvalidClient"),
        ]}));
        let warnings = [
            "InvalidClient".to_string(),
            "TokenEndpointUnavailable".to_string(),
        ];
        let text = advice(&expired, &warnings).join("\n");
        let what =
            |reason: &str| format!("What to do: {}", readme::hint(reason).unwrap().what_to_do);
        for reason in ["InvalidClient", "TokenExpired", "TokenEndpointUnavailable"] {
            assert_eq!(text.matches(&what(reason)).count(), 1, "{reason}: {text}");
        }
        assert!(
            text.contains("Problem: Stalled=True: InvalidClient"),
            "{text}"
        );
        assert!(
            text.contains("Problem: Ready=False: TokenExpired"),
            "{text}"
        );
        assert!(
            text.contains("Warning Event: TokenEndpointUnavailable"),
            "{text}"
        );
        // The cause first: Stalled before Ready.
        assert!(
            text.find("InvalidClient") < text.find("TokenExpired"),
            "{text}"
        );
        assert!(!text.contains("Ready: nothing to do."), "{text}");

        // A reason the README does not know says so.
        let odd = connection(serde_json::json!({"conditions": [
            cond("Ready", "False", "SomethingNew"),
        ]}));
        let text = advice(&odd, &[]).join("\n");
        assert!(
            text.contains("the README has no entry for SomethingNew"),
            "{text}"
        );

        let ready = connection(serde_json::json!({"conditions": [
            cond("Ready", "True", "TokenIssued"),
            cond("Reconciling", "False", "Reconciled"),
            cond("Stalled", "False", "Reconciled"),
        ]}));
        assert_eq!(advice(&ready, &[]), ["", "Ready: nothing to do."]);
    }

    #[test]
    fn a_missing_connection_is_one_line() {
        assert_eq!(
            not_found("payments", "billing"),
            "pingoneconnection billing not found in namespace payments"
        );
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
