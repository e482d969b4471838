//! The soak's checker: the operator's promises as invariants over what the soak observed (the
//! stand-in's record of every request, and the cluster's state), written independently of the
//! operator's code: it reads the objects as JSON and the tokens as JWTs, and never calls into
//! the operator's crate.
//!
//! - **I1 never stale**: a token Secret holds an expired token only if the token endpoint
//!   failed every attempt during the last third of that token's validity (and there was at
//!   least one); Ready is never True over a token expired for longer than [`Bounds::grace`].
//! - **I2 never locked out**: every credentials Secret holds a secret the stand-in accepts, or
//!   its connection reports `RotationOutcomeUnknown` with a deadline not yet passed.
//! - **I3 never a storm**: two tokens delivered to one connection are at least the floor apart;
//!   requests to an environment never exceed its cap; after a 429 with `Retry-After`, an
//!   environment sees at most one request per connection until the pause (bounded at 5 min)
//!   ends.
//! - **I4 never a foreign write**: no Secret the soak owns changes unless the soak changed it.
//! - **I5 never a leak**: no client secret, private key or token in a log line, Event or status.
//! - **I6 always converges**: after the last fault, every connection whose inputs are good is
//!   Ready with an unexpired token, and the operator is idle (requests only for renewals due).
//!
//! Windows in which the operator could not act (the API server down, no replica running, an
//! admission policy denying its writes in a namespace) excuse what needs a Kubernetes write;
//! a person's wrong credentials excuse a locked-out connection while they are in force.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};

/// A connection as the checker sees it.
#[derive(Clone, Debug, Default)]
pub struct ConnView {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub environment_id: String,
    pub client_id: String,
    /// It authenticates with a client secret (not a private key).
    pub secret_based: bool,
    /// The Ready condition's status is "True".
    pub ready: bool,
    /// The Stalled condition's status is "True".
    pub stalled: bool,
    /// The ClientSecretRotation condition's reason.
    pub rotation_reason: Option<String>,
    /// `status.previousClientSecretExpiresAt`.
    pub previous_expires_at: Option<Timestamp>,
    /// The token in its token Secret (owned by it), read from the JWT.
    pub token: Option<TokenView>,
    /// The client secret its credentials Secret holds, without a trailing line ending.
    pub credentials_secret: Option<String>,
}

/// A token's times, from its claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenView {
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// One token endpoint request of the stand-in's record.
#[derive(Clone, Debug)]
pub struct Request {
    pub time: Timestamp,
    pub environment_id: Option<String>,
    pub client_id: Option<String>,
    /// The response status (0: no answer).
    pub status: u16,
    /// The fault applied (the stand-in's name for it).
    pub fault: Option<String>,
    /// It asked for scopes (the Management API's token asks for none).
    pub scoped: bool,
}

impl Request {
    /// The client got a token from it: a 200 whose answer reached it in time.
    pub fn delivered(&self) -> bool {
        self.status == 200
            && self.fault.as_deref().is_none_or(|f| {
                // Answers that arrive, with something odd in the token.
                f == "unknown kid"
                    || f == "bad signature"
                    || f == "opaque token"
                    || f.starts_with("delay ") && delay_ms(f).is_some_and(|ms| ms < 5000)
            })
    }

    /// `Retry-After` of a 429 the stand-in sent (its fault name carries it).
    pub fn retry_after(&self) -> Option<u64> {
        if self.status != 429 {
            return None;
        }
        self.fault
            .as_deref()?
            .split("retry-after ")
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }
}

fn delay_ms(fault: &str) -> Option<u64> {
    fault
        .strip_prefix("delay ")?
        .strip_suffix(" ms")?
        .parse()
        .ok()
}

/// What the stand-in accepts for a client.
#[derive(Clone, Debug, Default)]
pub struct Accepts {
    pub current: Option<String>,
    /// The previous secret while it is still accepted.
    pub previous: Option<String>,
}

/// Time windows `[from, until)`; `until` `None` while open.
pub type Windows = Vec<(Timestamp, Option<Timestamp>)>;

/// When the operator could not act, and what people broke on purpose.
#[derive(Clone, Debug, Default)]
pub struct Excuses {
    /// The API server was down.
    pub apiserver_down: Windows,
    /// No replica was running (or every one was stopped).
    pub no_operator: Windows,
    /// A replica was killed, terminated, stopped or exited (a leader change may follow).
    pub replica_down: Windows,
    /// Writes of the operator's Secrets were denied in a namespace.
    pub denied: HashMap<String, Windows>,
    /// A person had put credentials PingOne refuses (per connection key), or PingOne's secret
    /// was changed by hand and not yet put in.
    pub person_broken: HashMap<String, Windows>,
}

fn overlaps(windows: &[(Timestamp, Option<Timestamp>)], from: Timestamp, until: Timestamp) -> bool {
    windows
        .iter()
        .any(|(a, b)| *a <= until && b.is_none_or(|b| b >= from))
}

impl Excuses {
    /// The operator could not write to the API server (in `namespace`) at some time in
    /// `[from, until]`.
    pub fn kubernetes(&self, namespace: &str, from: Timestamp, until: Timestamp) -> bool {
        overlaps(&self.apiserver_down, from, until)
            || overlaps(&self.no_operator, from, until)
            || self
                .denied
                .get(namespace)
                .is_some_and(|w| overlaps(w, from, until))
    }

    /// A person's wrong credentials were in force for `key` in `[from, until]`.
    pub fn person(&self, key: &str, from: Timestamp, until: Timestamp) -> bool {
        self.person_broken
            .get(key)
            .is_some_and(|w| overlaps(w, from, until))
    }
}

/// The bounds the operator states.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// The floor between two requests of a connection.
    pub floor: SignedDuration,
    /// Requests per second per environment.
    pub caps: HashMap<String, u32>,
    /// Token lifetime per connection's client.
    pub lifetimes: HashMap<String, SignedDuration>,
    /// When a person changed a connection's inputs or made its rotation due, per client.
    pub touched: HashMap<String, Vec<Timestamp>>,
    /// How long Ready may lag a token's expiry (the reconcile at expiry and its status write).
    pub grace: SignedDuration,
    /// The longest environment pause after a 429.
    pub max_pause: SignedDuration,
    /// How long after a person's fix the connection may still fail.
    pub settle: SignedDuration,
}

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// `I1` … `I6`.
    pub invariant: &'static str,
    /// The connection, environment or Secret.
    pub subject: String,
    /// What was seen (never a secret or a token).
    pub detail: String,
    /// Deduplicates repeats of the same finding.
    pub key: String,
}

fn fmt(t: Timestamp) -> String {
    t.strftime("%H:%M:%S%.3f").to_string()
}

/// I1: stale tokens, and Ready over an expired one.
pub fn never_stale(
    now: Timestamp,
    conns: &[ConnView],
    requests: &[Request],
    excuses: &Excuses,
    bounds: &Bounds,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in conns {
        let Some(token) = c.token else { continue };
        if now <= token.expires_at + SignedDuration::from_secs(2) {
            continue;
        }
        let lifetime = token.expires_at.duration_since(token.issued_at);
        let third = token.issued_at + lifetime * 2 / 3;
        let attempts: Vec<&Request> = requests
            .iter()
            .filter(|r| {
                r.client_id.as_deref() == Some(c.client_id.as_str())
                    && r.environment_id.as_deref() == Some(c.environment_id.as_str())
                    && r.time >= third
                    && r.time <= token.expires_at
            })
            .collect();
        let key = format!("I1/{}/{}", c.key, token.issued_at);
        if attempts.is_empty() {
            if !excuses.kubernetes(&c.namespace, third, token.expires_at) {
                out.push(Violation {
                    invariant: "I1",
                    subject: c.key.clone(),
                    detail: format!(
                        "the token Secret holds a token expired at {} and no token request was made in the last third of its validity (from {})",
                        fmt(token.expires_at),
                        fmt(third)
                    ),
                    key: key.clone(),
                });
            }
        } else if let Some(ok) = attempts.iter().find(|r| r.delivered())
            && !excuses.kubernetes(&c.namespace, ok.time, now)
        {
            out.push(Violation {
                invariant: "I1",
                subject: c.key.clone(),
                detail: format!(
                    "the token Secret holds a token expired at {}, though a token was delivered at {}",
                    fmt(token.expires_at),
                    fmt(ok.time)
                ),
                key: key.clone(),
            });
        }
        if c.ready
            && now > token.expires_at + bounds.grace
            && !overlaps(&excuses.apiserver_down, token.expires_at, now)
            && !overlaps(&excuses.no_operator, token.expires_at, now)
        {
            out.push(Violation {
                invariant: "I1",
                subject: c.key.clone(),
                detail: format!(
                    "Ready is True over a token expired at {} (seen at {})",
                    fmt(token.expires_at),
                    fmt(now)
                ),
                key: format!("I1-ready/{}/{}", c.key, token.issued_at),
            });
        }
    }
    out
}

/// I2: every credentials Secret holds a secret PingOne accepts, or the connection says the
/// rotation's outcome is unknown, before its deadline.
pub fn never_locked_out(
    now: Timestamp,
    conns: &[ConnView],
    accepts: &HashMap<(String, String), Accepts>,
    excuses: &Excuses,
    bounds: &Bounds,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in conns.iter().filter(|c| c.secret_based) {
        let Some(held) = &c.credentials_secret else {
            continue;
        };
        let Some(a) = accepts.get(&(c.environment_id.clone(), c.client_id.clone())) else {
            continue;
        };
        let accepted = a.current.as_deref() == Some(held.as_str())
            || a.previous.as_deref() == Some(held.as_str());
        if accepted {
            continue;
        }
        let unknown = c.rotation_reason.as_deref() == Some("RotationOutcomeUnknown")
            && c.previous_expires_at.is_some_and(|d| d > now);
        if unknown || excuses.person(&c.key, now - bounds.settle, now) {
            continue;
        }
        out.push(Violation {
            invariant: "I2",
            subject: c.key.clone(),
            detail: format!(
                "the credentials Secret holds a client secret PingOne does not accept (rotation: {})",
                c.rotation_reason.as_deref().unwrap_or("none")
            ),
            key: format!("I2/{}", c.key),
        });
    }
    out
}

/// I3: the floor per connection, the cap per environment, `Retry-After` per environment.
///
/// A token is known to no one but the replica that got it until it is written (into its
/// Secret, or at least the connection's status). A replica killed, stopped or cut off from
/// the API server in between takes it along, and the next leader asks again. Two deliveries
/// with an API server outage, or a replica going down, between them are excused from the
/// floor for that reason.
pub fn never_a_storm(requests: &[Request], bounds: &Bounds, excuses: &Excuses) -> Vec<Violation> {
    let mut out = Vec::new();
    // The floor: tokens delivered to one client, with scopes (the Management API's token for a
    // rotation asks for none and is not the connection's token).
    let mut delivered: BTreeMap<(String, String), Vec<Timestamp>> = BTreeMap::new();
    for r in requests.iter().filter(|r| r.scoped && r.delivered()) {
        if let (Some(e), Some(c)) = (&r.environment_id, &r.client_id) {
            delivered
                .entry((e.clone(), c.clone()))
                .or_default()
                .push(r.time);
        }
    }
    // The operator counts the floor from the whole second it sent a request at; the stand-in
    // stamps its arrival, a TLS handshake later on a loaded machine.
    let slack = SignedDuration::from_millis(2000);
    for ((_, client), times) in &delivered {
        for pair in times.windows(2) {
            if pair[1].duration_since(pair[0]) < bounds.floor - slack
                && !overlaps(&excuses.apiserver_down, pair[0], pair[1])
                && !overlaps(&excuses.replica_down, pair[0], pair[1])
            {
                out.push(Violation {
                    invariant: "I3",
                    subject: format!("client {client}"),
                    detail: format!(
                        "two tokens delivered {} ms apart ({} and {}), under the floor of {} s",
                        pair[1].duration_since(pair[0]).as_millis(),
                        fmt(pair[0]),
                        fmt(pair[1]),
                        bounds.floor.as_secs()
                    ),
                    key: format!("I3-floor/{client}/{}", pair[1]),
                });
            }
        }
    }
    // The cap: in every window of one second, at most cap + 2 requests (the limiter spaces
    // them 1/cap apart; two for the window's edges and the network's jitter).
    let mut per_env: BTreeMap<&str, Vec<Timestamp>> = BTreeMap::new();
    for r in requests {
        if let Some(e) = &r.environment_id {
            per_env.entry(e.as_str()).or_default().push(r.time);
        }
    }
    for (env, times) in &mut per_env {
        times.sort();
        let Some(cap) = bounds.caps.get(*env) else {
            continue;
        };
        let limit = *cap as usize + 2;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= SignedDuration::from_secs(1) {
                start += 1;
            }
            if end - start + 1 > limit {
                out.push(Violation {
                    invariant: "I3",
                    subject: format!("environment {env}"),
                    detail: format!(
                        "{} requests within one second ending {}, over the cap of {cap}/s",
                        end - start + 1,
                        fmt(times[end])
                    ),
                    key: format!("I3-cap/{env}/{}", times[end].as_second()),
                });
            }
        }
    }
    // Retry-After: during the pause, each connection waits until its validity bound and may
    // then probe once; a token it gets has a validity bound of its own. So a connection makes
    // at most one request, plus one per two-thirds of its token lifetime in the pause, plus one
    // per change a person made to its inputs (or rotation started) meanwhile, plus one retry
    // per attempt that failed (a fault, a lost answer, an error).
    for r in requests {
        let (Some(after), Some(env)) = (r.retry_after(), &r.environment_id) else {
            continue;
        };
        let pause = SignedDuration::from_secs(after as i64).min(bounds.max_pause);
        let from = r.time + SignedDuration::from_millis(500);
        let until = r.time + pause;
        if until <= from {
            continue;
        }
        let mut per_client: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for q in requests
            .iter()
            .filter(|q| q.environment_id.as_ref() == Some(env) && q.time > from && q.time < until)
        {
            if let Some(c) = q.client_id.as_deref() {
                let e = per_client.entry(c).or_default();
                e.0 += 1;
                if !q.delivered() {
                    e.1 += 1;
                }
            }
        }
        for (client, (made, failed)) in per_client {
            // Clients that are no connection's (the recovery applications) are not bounded
            // here; their requests count against the environment's cap above.
            let Some(lifetime) = bounds.lifetimes.get(client) else {
                continue;
            };
            let renewals =
                (pause.as_secs_f64() / (lifetime.as_secs_f64() * 2.0 / 3.0)).ceil() as usize;
            let touched = bounds.touched.get(client).map_or(0, |ts| {
                ts.iter().filter(|t| **t >= r.time && **t < until).count()
            });
            let allowed = 1 + renewals + touched + failed;
            if made > allowed {
                out.push(Violation {
                    invariant: "I3",
                    subject: format!("client {client}"),
                    detail: format!(
                        "{made} requests during the {} s pause after a 429 at {} (Retry-After {after}); at most {allowed} (one probe, {renewals} renewals, {touched} changes, {failed} retries of failed attempts)",
                        pause.as_secs(),
                        fmt(r.time)
                    ),
                    key: format!("I3-429/{client}/{}", r.time),
                });
            }
        }
    }
    out
}

/// I4: Secrets the soak owns are at the resourceVersion of the soak's last write.
pub fn never_a_foreign_write(
    expected: &HashMap<String, String>,
    seen: &HashMap<String, String>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (key, rv) in expected {
        if let Some(now) = seen.get(key)
            && now != rv
        {
            out.push(Violation {
                invariant: "I4",
                subject: format!("Secret {key}"),
                detail: format!(
                    "written by someone other than the soak (resourceVersion {rv} → {now})"
                ),
                key: format!("I4/{key}/{now}"),
            });
        }
    }
    out
}

/// The words of `text` that could be a secret, a token or an encoding of one.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=_.~-".contains(c)))
        .filter(|w| w.len() >= 8)
}

/// I5: no needle (secrets, tokens, key material, and their base64 forms) as a word of any
/// haystack. `needles` maps each needle to what it is (printed instead of the needle).
pub fn never_a_leak(
    haystacks: &[(String, String)],
    needles: &HashMap<String, String>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut said = HashSet::new();
    for (what, text) in haystacks {
        for word in words(text) {
            let hit = needles
                .get(word)
                .or_else(|| needles.get(word.trim_end_matches('=')))
                .or_else(|| {
                    word.split('.')
                        .find_map(|part| needles.get(part))
                        .filter(|_| word.contains('.'))
                });
            if let Some(kind) = hit
                && said.insert((what.clone(), kind.clone()))
            {
                out.push(Violation {
                    invariant: "I5",
                    subject: what.clone(),
                    detail: format!("{kind} appears in it"),
                    key: format!("I5/{what}/{kind}"),
                });
            }
        }
    }
    out
}

/// The forms of a secret the leak check looks for: as is, and base64 (standard and URL-safe,
/// with and without padding).
pub fn encodings(value: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let std = STANDARD.encode(value);
    vec![
        value.to_string(),
        std.trim_end_matches('=').to_string(),
        std,
        URL_SAFE_NO_PAD.encode(value),
    ]
}

/// I6: connections with good inputs that are not Ready with an unexpired token.
pub fn not_converged(
    now: Timestamp,
    conns: &[ConnView],
    bad_inputs: &HashSet<String>,
) -> Vec<Violation> {
    conns
        .iter()
        .filter(|c| !bad_inputs.contains(&c.key))
        .filter(|c| !c.ready || c.stalled || c.token.is_none_or(|t| t.expires_at <= now))
        .map(|c| Violation {
            invariant: "I6",
            subject: c.key.clone(),
            detail: format!(
                "not converged: Ready {}, Stalled {}, token {}",
                c.ready,
                c.stalled,
                match c.token {
                    None => "none".to_string(),
                    Some(t) if t.expires_at <= now => format!("expired at {}", fmt(t.expires_at)),
                    Some(t) => format!("valid until {}", fmt(t.expires_at)),
                }
            ),
            key: format!("I6/{}", c.key),
        })
        .collect()
}

/// I6: the operator is idle in `[from, until]`: token requests no more than the renewals due
/// in it (each connection's renewal time, from its token Secret), plus `slack`.
pub fn not_idle(
    requests: &[Request],
    from: Timestamp,
    until: Timestamp,
    renewals_due: usize,
    slack: usize,
) -> Option<Violation> {
    let made = requests
        .iter()
        .filter(|r| r.time >= from && r.time <= until)
        .count();
    (made > renewals_due + slack).then(|| Violation {
        invariant: "I6",
        subject: "the operator".into(),
        detail: format!(
            "{made} token requests from {} to {} with {renewals_due} renewals due: not idle",
            fmt(from),
            fmt(until)
        ),
        key: format!("I6-idle/{from}"),
    })
}

#[cfg(test)]
mod tests {
    //! Each invariant caught on a doctored record: a silent checker cannot pass.
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn bounds() -> Bounds {
        Bounds {
            floor: SignedDuration::from_secs(10),
            caps: HashMap::from([("env".to_string(), 5)]),
            lifetimes: (0..5)
                .map(|i| (format!("c{i}"), SignedDuration::from_secs(60)))
                .collect(),
            touched: HashMap::new(),
            grace: SignedDuration::from_secs(5),
            max_pause: SignedDuration::from_secs(300),
            settle: SignedDuration::from_secs(30),
        }
    }

    fn conn() -> ConnView {
        ConnView {
            key: "ns/c".into(),
            namespace: "ns".into(),
            environment_id: "env".into(),
            client_id: "client".into(),
            secret_based: true,
            ready: true,
            token: Some(TokenView {
                issued_at: t(0),
                expires_at: t(60),
            }),
            credentials_secret: Some("s1".into()),
            ..Default::default()
        }
    }

    fn req(at: i64, status: u16, fault: Option<&str>) -> Request {
        Request {
            time: t(at),
            environment_id: Some("env".into()),
            client_id: Some("client".into()),
            status,
            fault: fault.map(str::to_string),
            scoped: true,
        }
    }

    #[test]
    fn i1_an_expired_token_without_attempts_or_with_a_delivered_one_is_caught() {
        let mut c = conn();
        c.ready = false;
        let ex = Excuses::default();
        // Failed attempts in the last third (40..60): fine.
        let failed = [
            req(45, 503, Some("status 503")),
            req(55, 0, Some("drop connection")),
        ];
        assert!(never_stale(t(70), &[c.clone()], &failed, &ex, &bounds()).is_empty());
        // None at all: caught.
        let v = never_stale(t(70), &[c.clone()], &[req(30, 503, None)], &ex, &bounds());
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("no token request"));
        // A delivered token that never reached the Secret: caught, unless Kubernetes was down.
        let v = never_stale(t(70), &[c.clone()], &[req(50, 200, None)], &ex, &bounds());
        assert!(v[0].detail.contains("delivered"), "{v:?}");
        let mut down = Excuses::default();
        down.apiserver_down.push((t(52), Some(t(80))));
        assert!(
            never_stale(t(70), &[c.clone()], &[req(50, 200, None)], &down, &bounds()).is_empty()
        );
        // An answer lost after the token was issued is not a delivery.
        assert!(
            never_stale(
                t(70),
                &[c],
                &[req(50, 0, Some("drop after commit"))],
                &ex,
                &bounds()
            )
            .is_empty()
        );
    }

    #[test]
    fn i1_ready_over_an_expired_token_is_caught_after_the_grace() {
        let c = conn();
        let ex = Excuses::default();
        let attempts = [req(50, 503, None)];
        assert!(never_stale(t(64), std::slice::from_ref(&c), &attempts, &ex, &bounds()).is_empty());
        let v = never_stale(t(66), &[c], &attempts, &ex, &bounds());
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.starts_with("Ready is True"));
    }

    #[test]
    fn i2_a_refused_secret_is_caught_unless_unknown_before_its_deadline_or_a_persons_doing() {
        let accepts = HashMap::from([(
            ("env".to_string(), "client".to_string()),
            Accepts {
                current: Some("s2".into()),
                previous: Some("s1".into()),
            },
        )]);
        let ex = Excuses::default();
        assert!(never_locked_out(t(0), &[conn()], &accepts, &ex, &bounds()).is_empty());
        let mut c = conn();
        c.credentials_secret = Some("s0".into());
        assert_eq!(
            never_locked_out(t(0), &[c.clone()], &accepts, &ex, &bounds()).len(),
            1
        );
        c.rotation_reason = Some("RotationOutcomeUnknown".into());
        c.previous_expires_at = Some(t(100));
        assert!(never_locked_out(t(50), &[c.clone()], &accepts, &ex, &bounds()).is_empty());
        assert_eq!(
            never_locked_out(t(150), &[c.clone()], &accepts, &ex, &bounds()).len(),
            1
        );
        let mut person = Excuses::default();
        person
            .person_broken
            .insert("ns/c".into(), vec![(t(140), Some(t(145)))]);
        assert!(never_locked_out(t(150), &[c.clone()], &accepts, &person, &bounds()).is_empty());
        assert_eq!(
            never_locked_out(t(180), &[c], &accepts, &person, &bounds()).len(),
            1
        );
    }

    #[test]
    fn i3_the_floor_the_cap_and_retry_after_are_caught() {
        let b = bounds();
        // Two tokens 3 s apart.
        let v = never_a_storm(
            &[req(0, 200, None), req(3, 200, None)],
            &b,
            &Excuses::default(),
        );
        assert!(v.iter().any(|v| v.key.starts_with("I3-floor")), "{v:?}");
        // Unless the API server was down between them (the first known to no one).
        let mut down = Excuses::default();
        down.apiserver_down.push((t(1), Some(t(2))));
        assert!(never_a_storm(&[req(0, 200, None), req(3, 200, None)], &b, &down).is_empty());
        // A lost answer and its retry are not two deliveries; nor is the Management API's
        // scopeless token.
        let mut mgmt = req(3, 200, None);
        mgmt.scoped = false;
        assert!(
            never_a_storm(
                &[
                    req(0, 0, Some("drop after commit")),
                    req(1, 200, None),
                    mgmt
                ],
                &b,
                &Excuses::default()
            )
            .is_empty()
        );
        // Eight requests in one second against a cap of 5.
        let burst: Vec<Request> = (0..8)
            .map(|i| {
                let mut r = req(100, 503, None);
                r.time = t(100) + SignedDuration::from_millis(i * 100);
                r.client_id = Some(format!("c{i}"));
                r
            })
            .collect();
        let v = never_a_storm(&burst, &b, &Excuses::default());
        assert!(v.iter().any(|v| v.key.starts_with("I3-cap")), "{v:?}");
        // During a 60 s pause after a 429, a connection of 60 s tokens may probe once and
        // renew twice: a fourth request is a storm, unless a person changed its inputs or an
        // attempt failed.
        let mut paused = vec![req(200, 429, Some("status 429 retry-after 60"))];
        for i in 0..4 {
            let mut r = req(205 + i * 11, 200, None);
            r.client_id = Some("c1".into());
            paused.push(r);
        }
        let v = never_a_storm(&paused, &b, &Excuses::default());
        assert!(v.iter().any(|v| v.key.starts_with("I3-429/c1")), "{v:?}");
        let mut touched = b.clone();
        touched.touched.insert("c1".into(), vec![t(207)]);
        assert!(never_a_storm(&paused, &touched, &Excuses::default()).is_empty());
        // A failed attempt may be retried.
        let mut failed = paused.clone();
        failed[1].status = 503;
        assert!(
            never_a_storm(&failed, &b, &Excuses::default())
                .iter()
                .all(|v| !v.key.starts_with("I3-429")),
            "a retry of a failed attempt is allowed"
        );
        paused.truncate(3);
        assert!(never_a_storm(&paused, &b, &Excuses::default()).is_empty());
    }

    #[test]
    fn i4_a_changed_resource_version_is_caught() {
        let expected = HashMap::from([("ns/foreign".to_string(), "10".to_string())]);
        assert!(never_a_foreign_write(&expected, &expected).is_empty());
        let seen = HashMap::from([("ns/foreign".to_string(), "11".to_string())]);
        assert_eq!(never_a_foreign_write(&expected, &seen).len(), 1);
    }

    #[test]
    fn i5_secrets_tokens_and_their_encodings_are_caught_without_being_printed() {
        let mut needles = HashMap::new();
        for e in encodings("s3cret-value-1") {
            needles.insert(e, "client secret of ns/c".to_string());
        }
        needles.insert("sig-part-of-a-token".into(), "token #1".into());
        let clean = [("log".to_string(), "all fine: secret rotated".to_string())];
        assert!(never_a_leak(&clean, &needles).is_empty());
        for text in [
            "detail=\"s3cret-value-1\"",
            "data: czNjcmV0LXZhbHVlLTE=",
            "Bearer eyJhbGc.eyJzdWI.sig-part-of-a-token",
        ] {
            let v = never_a_leak(&[("log".to_string(), text.to_string())], &needles);
            assert_eq!(v.len(), 1, "{text}: {v:?}");
            assert!(!v[0].detail.contains("s3cret"), "the needle is not printed");
        }
    }

    #[test]
    fn i6_unready_stalled_or_expired_connections_and_a_busy_operator_are_caught() {
        let c = conn();
        assert!(not_converged(t(30), std::slice::from_ref(&c), &HashSet::new()).is_empty());
        assert_eq!(
            not_converged(t(61), std::slice::from_ref(&c), &HashSet::new()).len(),
            1
        );
        let mut stalled = c.clone();
        stalled.stalled = true;
        assert_eq!(
            not_converged(t(30), &[stalled.clone()], &HashSet::new()).len(),
            1
        );
        assert!(not_converged(t(30), &[stalled], &HashSet::from(["ns/c".to_string()])).is_empty());
        let requests: Vec<Request> = (0..6).map(|i| req(i, 200, None)).collect();
        assert!(not_idle(&requests, t(0), t(10), 5, 1).is_none());
        assert!(not_idle(&requests, t(0), t(10), 2, 1).is_some());
    }
}
