//! Events people read with `kubectl describe`: each issue and renewal is an Event of its own, so
//! the latest expiry is always shown, and the first token says it is the first.

use std::time::Duration;

use pingone_testbed::standin::ClientRegistration;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn describe_shows_the_first_token_and_the_latest_renewal() {
    let mut env = TestEnv::new("describe").await;
    // Renewals every 5.7-6.7 s.
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET)
            .with_token_lifetime(Duration::from_secs(10)),
    );
    env.start_operator();
    env.create_connection("c", json!({})).await;
    env.wait_ready("c").await;

    let e = &env;
    let issued = eventually(
        Duration::from_secs(10),
        "TokenIssued Event",
        move || async move { events_for(e, "c", "TokenIssued").await.into_iter().next() },
    )
    .await;
    let note = issued.note.unwrap_or_default();
    assert!(note.starts_with("Issued the first token"), "{note}");

    // Three renewals.
    eventually(Duration::from_secs(40), "three renewals", || {
        let n = env
            .standin
            .requests()
            .iter()
            .filter(|r| r.status == 200)
            .count();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    let secrets = env.secrets();
    let ns = env.ns.clone();
    let cp = env.cp;
    let (expiry, text) = eventually(
        Duration::from_secs(10),
        "kubectl describe shows the latest expiry",
        || {
            let secrets = secrets.clone();
            let ns = ns.clone();
            async move {
                let s = secrets.get("c-token").await.ok()?;
                let expiry = data(&s, "expires_at")?;
                let mut cmd = cp.kubectl();
                cmd.args(["describe", "pingoneconnection", "c", "-n", &ns]);
                let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                    .await
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                // The Events table, not the status (which shows the expiry too).
                let events = text.split_once("\nEvents:")?.1.to_string();
                events.contains(&expiry).then_some((expiry, events))
            }
        },
    )
    .await;
    assert!(text.contains("TokenRenewed"), "{text}");
    let renewals = events_for(&env, "c", "TokenRenewed").await;
    assert!(
        renewals.len() >= 3,
        "renewals folded into {} Event(s): {:?}",
        renewals.len(),
        renewals.iter().map(|e| &e.note).collect::<Vec<_>>()
    );
    let notes: Vec<String> = renewals
        .iter()
        .map(|e| e.note.clone().unwrap_or_default())
        .collect();
    assert!(
        notes.iter().all(|n| n.starts_with("Renewed the token")),
        "{notes:#?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("valid until {expiry}"))),
        "{notes:#?}"
    );
}
