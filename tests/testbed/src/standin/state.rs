//! The stand-in's mutable state, shared by the handle and the server tasks.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::assertion::LEEWAY_SECS;
use super::keys::SigningKeys;
use super::{
    AuthMethod, ClientRegistration, Fault, RecordedManagementRequest, RecordedRequest, lock,
};

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signing keys, the current one first; the JWKS publishes them all.
    keys: Mutex<Vec<std::sync::Arc<SigningKeys>>>,
    pub(crate) connections: AtomicUsize,
    pub(crate) org_id: String,
    /// Bumped by every release of held requests; a parked request waits for a change.
    release: watch::Sender<u64>,
    held: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(state: State, keys: SigningKeys, org_id: String) -> Self {
        Shared {
            state: Mutex::new(state),
            keys: Mutex::new(vec![std::sync::Arc::new(keys)]),
            connections: AtomicUsize::new(0),
            org_id,
            release: watch::Sender::new(0),
            held: AtomicUsize::new(0),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The key that signs new tokens.
    pub(crate) fn signing(&self) -> std::sync::Arc<SigningKeys> {
        lock(&self.keys)[0].clone()
    }

    /// Makes `keys` the signing key; the previous ones stay in the JWKS.
    pub(crate) fn rotate_keys(&self, keys: SigningKeys) {
        lock(&self.keys).insert(0, std::sync::Arc::new(keys));
    }

    /// The JWKS: every key, the current one first.
    pub(crate) fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = lock(&self.keys)
            .iter()
            .flat_map(|k| k.jwks()["keys"].as_array().cloned().unwrap_or_default())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The claims of a token one of the keys signed.
    pub(crate) fn verify(&self, token: &str) -> Result<serde_json::Value, super::VerifyError> {
        let keys = lock(&self.keys).clone();
        let mut last = Err(super::VerifyError::Signature);
        for k in keys {
            last = super::verify_rs256_jwt(token, k.public_key());
            if last.is_ok() {
                break;
            }
        }
        last
    }

    /// Waits until the next [`Shared::release_held`]. Counted in [`Shared::held_requests`]
    /// while waiting, also if the future is dropped on the way (the connection was closed).
    pub(crate) async fn park(&self) {
        struct Parked<'a>(&'a AtomicUsize);
        impl Drop for Parked<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // Subscribe before counting, so a release seen by a test that polled the count
        // cannot slip in unnoticed.
        let mut rx = self.release.subscribe();
        let generation = *rx.borrow_and_update();
        self.held.fetch_add(1, Ordering::SeqCst);
        let _parked = Parked(&self.held);
        // The sender lives as long as `self`, so this only ends by a release.
        let _ = rx.wait_for(|g| *g != generation).await;
    }

    pub(crate) fn release_held(&self) {
        self.release.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub(crate) fn held_requests(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// Which secret of a client a presented secret matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SecretMatch {
    Current,
    /// The previous secret, before its expiry.
    Previous,
    None,
}

/// A registered client. The secrets are kept in memory (HMAC needs them) and never logged;
/// the type has no `Debug` on purpose.
pub(crate) struct Client {
    secret: Option<String>,
    /// The secret before the last rotation and when it stops working.
    previous: Option<(String, SystemTime)>,
    pub(crate) auth_method: AuthMethod,
    pub(crate) allowed_scopes: Vec<String>,
    pub(crate) token_lifetime: Option<Duration>,
    pub(crate) jwks: Option<serde_json::Value>,
    pub(crate) can_rotate_secret: bool,
    pub(crate) can_read_secrets: bool,
    /// `jti` of accepted assertions and until when each could be replayed (its `exp` plus
    /// the leeway), pruned after that.
    seen_jtis: HashMap<String, f64>,
}

impl Client {
    /// Compares `presented` with the current secret, then with the previous one unless it
    /// expired by `now` (the stand-in's clock).
    pub(crate) fn match_secret(&self, presented: &str, now: SystemTime) -> SecretMatch {
        if self.secret.as_deref().is_some_and(|s| same(s, presented)) {
            SecretMatch::Current
        } else if self
            .previous_secret(now)
            .is_some_and(|(s, _)| same(s, presented))
        {
            SecretMatch::Previous
        } else {
            SecretMatch::None
        }
    }

    pub(crate) fn current_secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// The previous secret while it is still accepted at `now`.
    pub(crate) fn previous_secret(&self, now: SystemTime) -> Option<(&str, SystemTime)> {
        self.previous
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(s, until)| (s.as_str(), *until))
    }

    /// Makes `new` the current secret; the old one stays accepted until `keep_until`, or
    /// stops at once without it. Only one previous secret is kept.
    pub(crate) fn rotate(&mut self, new: String, keep_until: Option<SystemTime>) {
        let old = self.secret.replace(new);
        self.previous = match (old, keep_until) {
            (Some(old), Some(until)) => Some((old, until)),
            _ => None,
        };
    }

    /// Whether `jti` was accepted before in an assertion still acceptable at `now` (seconds).
    pub(crate) fn jti_replayed(&self, jti: &str, now: f64) -> bool {
        self.seen_jtis.get(jti).is_some_and(|until| *until >= now)
    }

    /// Remembers an accepted `jti` for as long as its assertion is accepted: until `exp` plus
    /// the clock leeway. Forgets the ones past that.
    pub(crate) fn remember_jti(&mut self, jti: String, exp: f64, now: f64) {
        self.seen_jtis.retain(|_, until| *until >= now);
        self.seen_jtis.insert(jti, exp + LEEWAY_SECS);
    }
}

/// Constant-time comparison (of digests, so lengths leak nothing either), for form's sake.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (digest(a), digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub(crate) struct RateLimit {
    requests: u32,
    window: Duration,
    admitted: VecDeque<Instant>,
}

pub(crate) struct State {
    clients: HashMap<(String, String), Client>,
    environments: BTreeSet<String>,
    custom_domains: HashMap<String, String>,
    pub(crate) token_lifetime: Duration,
    pub(crate) faults: VecDeque<(Fault, usize)>,
    pub(crate) persistent_fault: Option<Fault>,
    rate_limit: Option<RateLimit>,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) issued_tokens: Vec<String>,
    /// GET requests of the JWKS served.
    pub(crate) jwks_requests: usize,
    /// The JWKS answers 503 (an unreachable JWKS).
    pub(crate) jwks_down: bool,
    /// The JWKS answers this late (a slow JWKS).
    pub(crate) jwks_delay: std::time::Duration,
    pub(crate) management_faults: VecDeque<(Fault, usize)>,
    pub(crate) management_requests: Vec<RecordedManagementRequest>,
    /// Added to the real clock to judge previous-secret expiry (`StandIn::advance_clock`).
    pub(crate) clock_offset: Duration,
}

impl State {
    pub(crate) fn new(token_lifetime: Duration) -> Self {
        State {
            clients: HashMap::new(),
            environments: BTreeSet::new(),
            custom_domains: HashMap::new(),
            token_lifetime,
            faults: VecDeque::new(),
            persistent_fault: None,
            rate_limit: None,
            requests: Vec::new(),
            issued_tokens: Vec::new(),
            jwks_requests: 0,
            jwks_down: false,
            jwks_delay: std::time::Duration::ZERO,
            management_faults: VecDeque::new(),
            management_requests: Vec::new(),
            clock_offset: Duration::ZERO,
        }
    }

    /// The stand-in's clock for previous-secret expiry.
    pub(crate) fn now(&self) -> SystemTime {
        SystemTime::now() + self.clock_offset
    }

    pub(crate) fn add_client(&mut self, c: ClientRegistration) {
        self.environments.insert(c.environment_id.clone());
        self.clients.insert(
            (c.environment_id, c.client_id),
            Client {
                secret: Some(c.client_secret).filter(|s| !s.is_empty()),
                previous: None,
                auth_method: c.auth_method,
                allowed_scopes: c.allowed_scopes,
                token_lifetime: c.token_lifetime,
                jwks: c.jwks,
                can_rotate_secret: c.can_rotate_secret,
                can_read_secrets: c.can_read_secrets,
                seen_jtis: HashMap::new(),
            },
        );
    }

    pub(crate) fn remove_client(&mut self, env: &str, client_id: &str) -> bool {
        self.clients
            .remove(&(env.to_string(), client_id.to_string()))
            .is_some()
    }

    pub(crate) fn client(&self, env: &str, client_id: &str) -> Option<&Client> {
        self.clients.get(&(env.to_string(), client_id.to_string()))
    }

    pub(crate) fn client_mut(&mut self, env: &str, client_id: &str) -> Option<&mut Client> {
        self.clients
            .get_mut(&(env.to_string(), client_id.to_string()))
    }

    pub(crate) fn add_environment(&mut self, env: &str) {
        self.environments.insert(env.to_string());
    }

    pub(crate) fn environment_known(&self, env: &str) -> bool {
        self.environments.contains(env)
    }

    pub(crate) fn add_custom_domain(&mut self, host: &str, env: &str) {
        self.environments.insert(env.to_string());
        self.custom_domains
            .insert(host.to_ascii_lowercase(), env.to_string());
    }

    pub(crate) fn custom_domain_environment(&self, host: &str) -> Option<&str> {
        self.custom_domains.get(host).map(String::as_str)
    }

    pub(crate) fn push_fault(&mut self, fault: Fault, times: usize) {
        if times > 0 {
            self.faults.push_back((fault, times));
        }
    }

    /// The fault for the next token request, consuming one queued application.
    pub(crate) fn take_fault(&mut self) -> Option<Fault> {
        if let Some(f) = &self.persistent_fault {
            return Some(f.clone());
        }
        let (fault, left) = self.faults.front_mut()?;
        let fault = fault.clone();
        *left -= 1;
        if *left == 0 {
            self.faults.pop_front();
        }
        Some(fault)
    }

    pub(crate) fn push_management_fault(&mut self, fault: Fault, times: usize) {
        if times > 0 {
            self.management_faults.push_back((fault, times));
        }
    }

    /// The fault for the next Management API request, consuming one queued application.
    pub(crate) fn take_management_fault(&mut self) -> Option<Fault> {
        let (fault, left) = self.management_faults.front_mut()?;
        let fault = fault.clone();
        *left -= 1;
        if *left == 0 {
            self.management_faults.pop_front();
        }
        Some(fault)
    }

    pub(crate) fn set_rate_limit(&mut self, limit: Option<(u32, Duration)>) {
        self.rate_limit = limit.map(|(requests, window)| RateLimit {
            requests,
            window,
            admitted: VecDeque::new(),
        });
    }

    /// Admits a request under the rate limit, or returns the `Retry-After` seconds (≥ 1).
    pub(crate) fn rate_limit_check(&mut self, now: Instant) -> Result<(), u64> {
        let Some(limit) = &mut self.rate_limit else {
            return Ok(());
        };
        while let Some(first) = limit.admitted.front() {
            if now.duration_since(*first) >= limit.window {
                limit.admitted.pop_front();
            } else {
                break;
            }
        }
        if limit.admitted.len() < limit.requests as usize {
            limit.admitted.push_back(now);
            return Ok(());
        }
        let wait = match limit.admitted.front() {
            Some(first) => limit.window.saturating_sub(now.duration_since(*first)),
            None => limit.window,
        };
        // Round up to whole seconds, never below 1.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_remembered_while_its_assertion_is_accepted_then_forgotten() {
        let mut state = State::new(Duration::from_secs(3600));
        state.add_client(ClientRegistration::new("env", "c", "s"));
        let client = state.client_mut("env", "c").expect("client");
        client.remember_jti("a".into(), 1000.0, 990.0);
        assert!(client.jti_replayed("a", 1000.0));
        // Still inside the leeway after exp: a replay must not pass.
        assert!(client.jti_replayed("a", 1000.0 + LEEWAY_SECS));
        assert!(!client.jti_replayed("a", 1000.0 + LEEWAY_SECS + 1.0));
        assert!(!client.jti_replayed("b", 1000.0));
        client.remember_jti("b".into(), 2000.0, 1010.0);
        assert_eq!(client.seen_jtis.len(), 1, "pruned");
    }

    #[test]
    fn a_previous_secret_works_until_it_expires_and_only_one_is_kept() {
        let mut state = State::new(Duration::from_secs(3600));
        state.add_client(ClientRegistration::new("env", "c", "s0"));
        let t0 = SystemTime::now();
        let client = state.client_mut("env", "c").expect("client");
        client.rotate("s1".into(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(client.match_secret("s1", t0), SecretMatch::Current);
        assert_eq!(client.match_secret("s0", t0), SecretMatch::Previous);
        assert_eq!(
            client.match_secret("s0", t0 + Duration::from_secs(60)),
            SecretMatch::None
        );
        client.rotate("s2".into(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(client.match_secret("s0", t0), SecretMatch::None);
        assert_eq!(client.match_secret("s1", t0), SecretMatch::Previous);
        client.rotate("s3".into(), None);
        assert_eq!(client.match_secret("s2", t0), SecretMatch::None);
        assert_eq!(client.match_secret("s3", t0), SecretMatch::Current);
    }
}
