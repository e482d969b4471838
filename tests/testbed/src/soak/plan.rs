//! The soak's seeded plan: the connections and the schedule of faults, both drawn from one
//! seed, so that a seed names a run.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::standin::Fault;

/// How a connection authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Post,
    Basic,
    SecretJwt,
    PrivateKeyJwt,
}

impl Auth {
    /// `spec.tokenEndpointAuthMethod`.
    pub fn spec(self) -> &'static str {
        match self {
            Auth::Post => "client_secret_post",
            Auth::Basic => "client_secret_basic",
            Auth::SecretJwt => "client_secret_jwt",
            Auth::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// It has a client secret.
    pub fn secret_based(self) -> bool {
        self != Auth::PrivateKeyJwt
    }
}

/// One connection of the soak.
#[derive(Clone, Debug)]
pub struct ConnPlan {
    pub index: usize,
    /// Index into the namespaces.
    pub namespace: usize,
    /// Index into the environments.
    pub environment: usize,
    pub auth: Auth,
    /// The stand-in's token lifetime for its client.
    pub lifetime: Duration,
    /// It rotates its client secret (secret-based only).
    pub rotates: bool,
    /// With recovery credentials (rotating only).
    pub recovery: bool,
}

/// Namespaces the connections live in; the last one is deleted during the run.
pub const NAMESPACES: usize = 4;
/// Environments, each with its own cap.
pub const ENVIRONMENTS: usize = 3;

/// The connections for `seed`.
pub fn connections(seed: u64, n: usize) -> Vec<ConnPlan> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc0ec);
    (0..n)
        .map(|index| {
            let auth = [
                Auth::Post,
                Auth::Basic,
                Auth::SecretJwt,
                Auth::PrivateKeyJwt,
            ][index % 4];
            let rotates = auth.secret_based() && rng.gen_ratio(1, 6);
            ConnPlan {
                index,
                namespace: index % NAMESPACES,
                environment: rng.gen_range(0..ENVIRONMENTS),
                auth,
                lifetime: Duration::from_secs(60 * rng.gen_range(1..=5)),
                rotates,
                recovery: rotates && rng.gen_bool(0.5),
            }
        })
        .collect()
}

/// What the scheduler does.
#[derive(Clone, Debug)]
pub enum Action {
    /// The next `times` token requests (of any client) get `fault`.
    TokenFault { fault: Fault, times: usize },
    /// The next `times` Management API requests get `fault`.
    ManagementFault { fault: Fault, times: usize },
    /// The next Management API request commits and its answer is held this long.
    ManagementHold { release_after: Duration },
    /// The JWKS answers 503 for this long.
    JwksDown { length: Duration },
    /// The stand-in signs with a new key.
    JwksRotate,
    /// The API server stops for this long (etcd compacted meanwhile when `compact`): every
    /// watch is cut.
    ApiServerRestart { downtime: Duration, compact: bool },
    /// An admission policy denies writes of the operator's Secrets in a namespace.
    DenyWrites { namespace: usize, length: Duration },
    /// SIGKILL of the leader, started again after `down`.
    KillLeader { down: Duration },
    /// SIGTERM of the leader (a handover), started again after `down`.
    TermLeader { down: Duration },
    /// SIGSTOP of the leader (a long pause), SIGCONT after `length`.
    StopLeader { length: Duration },
    /// A person rewrites the client secret with a CRLF ending.
    Crlf { conn: usize },
    /// A person puts a wrong secret in, and the right one after `length`.
    WrongThenRight { conn: usize, length: Duration },
    /// A person makes a new secret in PingOne's console (the old one stops working) and puts
    /// it in after `length`.
    RotatedByHand { conn: usize, length: Duration },
    /// A person changes the scopes, and back after `length`.
    SpecFlip { conn: usize, length: Duration },
    /// A person asks for a new token.
    Renew { conn: usize },
    /// A person deletes the token Secret.
    DeleteTokenSecret { conn: usize },
    /// A person puts a Secret of their own at the token Secret's name for `length`.
    ForeignSecret { conn: usize, length: Duration },
    /// A rotating connection's rotation becomes due.
    RotationDue { conn: usize },
    /// A person resolves an unknown rotation outcome (the current secret from the console).
    ResolveUnknown,
    /// The last namespace is deleted with its connections.
    DeleteNamespace,
}

impl Action {
    /// The class, for the counts of the report.
    pub fn class(&self) -> &'static str {
        match self {
            Action::TokenFault { .. } => "token endpoint",
            Action::ManagementFault { .. } | Action::ManagementHold { .. } => "Management API",
            Action::JwksDown { .. } | Action::JwksRotate => "JWKS",
            Action::ApiServerRestart { .. } | Action::DenyWrites { .. } => "Kubernetes",
            Action::KillLeader { .. } | Action::TermLeader { .. } | Action::StopLeader { .. } => {
                "operator"
            }
            Action::RotationDue { .. } => "rotation due",
            _ => "people",
        }
    }

    /// How long its effect lasts after it starts (the checker's convergence counts from the
    /// end of the last one).
    pub fn length(&self) -> Duration {
        match self {
            Action::TokenFault {
                fault:
                    Fault::Status {
                        status: 429,
                        retry_after: Some(after),
                        ..
                    },
                ..
            } => Duration::from_secs(*after).min(Duration::from_secs(300)),
            Action::ManagementHold { release_after } => *release_after,
            Action::JwksDown { length }
            | Action::DenyWrites { length, .. }
            | Action::StopLeader { length }
            | Action::WrongThenRight { length, .. }
            | Action::RotatedByHand { length, .. }
            | Action::SpecFlip { length, .. }
            | Action::ForeignSecret { length, .. } => *length,
            Action::ApiServerRestart { downtime, .. } => *downtime,
            Action::KillLeader { down } | Action::TermLeader { down } => *down,
            _ => Duration::ZERO,
        }
    }
}

/// An action at an offset from the start of the fault phase.
#[derive(Clone, Debug)]
pub struct Planned {
    pub at: Duration,
    pub action: Action,
}

fn secs(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_secs(rng.gen_range(lo..=hi))
}

fn token_fault(rng: &mut StdRng) -> Fault {
    match rng.gen_range(0..10) {
        0 => Fault::status([500, 502, 503][rng.gen_range(0..3)]),
        1 => Fault::status_with_retry_after(429, [1, 5, 30, 120, 3600][rng.gen_range(0..5)]),
        2 => Fault::html_page([403, 404][rng.gen_range(0..2)]),
        3 => Fault::status([400, 401][rng.gen_range(0..2)]),
        4 => Fault::Delay(Duration::from_secs(7)),
        5 => Fault::DropConnection,
        6 => Fault::DropAfterCommit,
        7 => Fault::Delay(Duration::from_secs(2)),
        8 => Fault::UnknownKid,
        _ => Fault::StatusAfterCommit(502),
    }
}

/// The schedule for `seed`: actions over `length`, about one every `mean` seconds.
pub fn schedule(seed: u64, length: Duration, mean: f64, conns: &[ConnPlan]) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let secret_based: Vec<usize> = conns
        .iter()
        .filter(|c| c.auth.secret_based() && c.namespace + 1 < NAMESPACES)
        .map(|c| c.index)
        .collect();
    let rotating: Vec<usize> = conns
        .iter()
        .filter(|c| c.rotates && c.namespace + 1 < NAMESPACES)
        .map(|c| c.index)
        .collect();
    let all: Vec<usize> = conns
        .iter()
        .filter(|c| c.namespace + 1 < NAMESPACES)
        .map(|c| c.index)
        .collect();
    let pick = |rng: &mut StdRng, from: &[usize]| from[rng.gen_range(0..from.len())];
    let mut out = Vec::new();
    let mut at = 0.0f64;
    // The namespace goes in the middle of the run.
    let doomed_at = length.as_secs_f64() * rng.gen_range(0.3..0.7);
    let mut doomed = false;
    loop {
        // Exponential gaps: faults alone, and now and then overlapping.
        at += -mean * (1.0 - rng.r#gen::<f64>()).ln();
        if at >= length.as_secs_f64() {
            break;
        }
        if !doomed && at >= doomed_at {
            doomed = true;
            out.push(Planned {
                at: Duration::from_secs_f64(at),
                action: Action::DeleteNamespace,
            });
            continue;
        }
        let action = match rng.gen_range(0..100) {
            0..=25 => Action::TokenFault {
                fault: token_fault(&mut rng),
                times: rng.gen_range(1..=4),
            },
            26..=33 if !rotating.is_empty() => Action::RotationDue {
                conn: pick(&mut rng, &rotating),
            },
            34..=39 => match rng.gen_range(0..5) {
                0 => Action::ManagementHold {
                    release_after: secs(&mut rng, 2, 10),
                },
                n => Action::ManagementFault {
                    fault: match n {
                        1 => Fault::DropAfterCommit,
                        2 => Fault::StatusAfterCommit(502),
                        3 => Fault::DelayAfterCommit(Duration::from_secs(7)),
                        _ => Fault::status(503),
                    },
                    times: rng.gen_range(1..=2),
                },
            },
            40..=44 => match rng.gen_range(0..3) {
                0 => Action::JwksRotate,
                _ => Action::JwksDown {
                    length: secs(&mut rng, 5, 40),
                },
            },
            45..=48 => Action::ApiServerRestart {
                downtime: secs(&mut rng, 1, 5),
                compact: rng.gen_bool(0.5),
            },
            49..=52 => Action::DenyWrites {
                namespace: rng.gen_range(0..NAMESPACES - 1),
                length: secs(&mut rng, 5, 30),
            },
            53..=55 => Action::KillLeader {
                down: secs(&mut rng, 1, 10),
            },
            56..=58 => Action::TermLeader {
                down: secs(&mut rng, 1, 10),
            },
            59..=61 => Action::StopLeader {
                length: secs(&mut rng, 3, 15),
            },
            62..=65 if !secret_based.is_empty() => Action::Crlf {
                conn: pick(&mut rng, &secret_based),
            },
            66..=70 if !secret_based.is_empty() => Action::WrongThenRight {
                conn: pick(&mut rng, &secret_based),
                length: secs(&mut rng, 5, 40),
            },
            71..=74 if !secret_based.is_empty() => Action::RotatedByHand {
                conn: pick(&mut rng, &secret_based),
                length: secs(&mut rng, 3, 30),
            },
            75..=80 => Action::SpecFlip {
                conn: pick(&mut rng, &all),
                length: secs(&mut rng, 5, 30),
            },
            81..=87 => Action::Renew {
                conn: pick(&mut rng, &all),
            },
            88..=91 => Action::DeleteTokenSecret {
                conn: pick(&mut rng, &all),
            },
            92..=95 => Action::ForeignSecret {
                conn: pick(&mut rng, &all),
                length: secs(&mut rng, 5, 30),
            },
            _ => Action::ResolveUnknown,
        };
        out.push(Planned {
            at: Duration::from_secs_f64(at),
            action,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_plan_and_another_seed_another() {
        let conns = connections(7, 40);
        let a = schedule(7, Duration::from_secs(600), 3.0, &conns);
        let b = schedule(7, Duration::from_secs(600), 3.0, &conns);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let c = schedule(8, Duration::from_secs(600), 3.0, &conns);
        assert_ne!(format!("{a:?}"), format!("{c:?}"));
        // Every class is drawn in a long enough run.
        let classes: std::collections::BTreeSet<&str> =
            a.iter().map(|p| p.action.class()).collect();
        for class in [
            "token endpoint",
            "Management API",
            "JWKS",
            "Kubernetes",
            "operator",
            "people",
        ] {
            assert!(classes.contains(class), "{class} missing from {classes:?}");
        }
        assert_eq!(
            a.iter()
                .filter(|p| matches!(p.action, Action::DeleteNamespace))
                .count(),
            1
        );
        // All four auth methods, some rotating.
        assert!(conns.iter().any(|c| c.rotates));
        for auth in [
            Auth::Post,
            Auth::Basic,
            Auth::SecretJwt,
            Auth::PrivateKeyJwt,
        ] {
            assert!(conns.iter().any(|c| c.auth == auth));
        }
    }
}
