//! The stand-in's mutable state, shared by the handle and the server tasks.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::keys::SigningKeys;
use super::{AuthMethod, ClientRegistration, Fault, RecordedRequest, lock};

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) keys: SigningKeys,
    pub(crate) connections: AtomicUsize,
    pub(crate) org_id: String,
}

impl Shared {
    pub(crate) fn new(state: State, keys: SigningKeys, org_id: String) -> Self {
        Shared {
            state: Mutex::new(state),
            keys,
            connections: AtomicUsize::new(0),
            org_id,
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// A registered client; the secret is kept only as a digest.
pub(crate) struct Client {
    pub(crate) secret_digest: [u8; 32],
    pub(crate) auth_method: AuthMethod,
    pub(crate) allowed_scopes: Vec<String>,
    pub(crate) token_lifetime: Option<Duration>,
}

impl Client {
    pub(crate) fn secret_matches(&self, secret: &str) -> bool {
        let digest = digest(secret);
        // Constant time, for form's sake.
        digest
            .iter()
            .zip(self.secret_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
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
        }
    }

    pub(crate) fn add_client(&mut self, c: ClientRegistration) {
        self.environments.insert(c.environment_id.clone());
        self.clients.insert(
            (c.environment_id, c.client_id),
            Client {
                secret_digest: digest(&c.client_secret),
                auth_method: c.auth_method,
                allowed_scopes: c.allowed_scopes,
                token_lifetime: c.token_lifetime,
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
