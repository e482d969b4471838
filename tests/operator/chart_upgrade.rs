//! The CRD through Helm (issue 25): `helm upgrade` from the previous chart version updates the
//! CRD, the connections stay Ready and no new token is requested; `helm uninstall` keeps the
//! CRD and the connections. On a control plane of the test's own: the CRD changes under it.
//!
//! The previous version is made from this chart: version 0.1.0 and a CRD without
//! `spec.rolloutRestartTargets`, so the upgrade has a real schema change to carry: under the old
//! CRD the API server prunes that field, after the upgrade it keeps it. (Not a status field:
//! the operator of this version could not write its status under a CRD without one of its
//! status fields, as an operator newer than its CRD cannot; the chart applies the CRD first.)

use std::path::Path;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use pingone_testbed::controlplane::ControlPlane;

use crate::gitops::helm_on;
use crate::support::*;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/pingone-operator");
const CRD_NAME: &str = "pingoneconnections.pingone.tokenops.dev";
const CRD_FILE: &str = "files/crds/pingoneconnections.pingone.tokenops.dev.yaml";
const NEW_FIELD: &str = "rolloutRestartTargets";

/// Copies the chart to `to` as version 0.1.0 without the status field this version added.
fn previous_chart(to: &Path) {
    let copy = Command::new("cp")
        .args(["-r", CHART])
        .arg(to)
        .status()
        .unwrap();
    assert!(copy.success());
    let chart_yaml = to.join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml).unwrap();
    let version = text
        .lines()
        .find(|l| l.starts_with("version: "))
        .expect("chart version");
    assert_ne!(version, "version: 0.1.0", "the chart is still 0.1.0");
    std::fs::write(&chart_yaml, text.replace(version, "version: 0.1.0")).unwrap();
    let crd_path = to.join(CRD_FILE);
    let crd = std::fs::read_to_string(&crd_path).unwrap();
    // The property and its indented body.
    let mut out = Vec::new();
    let mut skipping: Option<usize> = None;
    for line in crd.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = skipping {
            if indent > at {
                continue;
            }
            skipping = None;
        }
        if line.trim_start() == format!("{NEW_FIELD}:") {
            skipping = Some(indent);
            continue;
        }
        out.push(line);
    }
    assert!(
        out.len() < crd.lines().count(),
        "{NEW_FIELD} not in the CRD"
    );
    std::fs::write(&crd_path, out.join("\n") + "\n").unwrap();
}

/// Sets the new field on connection `name`; whether the API server kept it.
async fn set_new_field(env: &TestEnv, name: &str) -> bool {
    let patch = serde_json::json!({"spec": {NEW_FIELD: [{"kind": "Deployment", "name": "app"}]}});
    let patched = env
        .connections()
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("connection patched");
    serde_json::to_value(&patched.spec).unwrap()[NEW_FIELD]
        .as_array()
        .is_some_and(|targets| !targets.is_empty())
}

async fn crd_has_new_field(crds: &Api<CustomResourceDefinition>) -> bool {
    let crd = crds.get(CRD_NAME).await.expect("CRD");
    serde_json::to_string(&crd.spec)
        .unwrap()
        .contains(NEW_FIELD)
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_upgrade_from_the_previous_chart_updates_the_crd_and_keeps_every_connection() {
    let cp: &'static ControlPlane = Box::leak(Box::new(
        tokio::task::spawn_blocking(ControlPlane::start_blocking)
            .await
            .unwrap()
            .expect("control plane starts"),
    ));
    let work = cp.dir().join("chart-upgrade");
    std::fs::create_dir_all(&work).unwrap();
    let previous = work.join("previous");
    previous_chart(&previous);
    let release_ns = "pingone-operator";
    // The Deployment's pods stay Pending here (no node); the operator runs in the test.
    let mut install = helm_on(cp);
    install
        .args([
            "install",
            "pingone",
            "--namespace",
            release_ns,
            "--create-namespace",
        ])
        .arg(&previous)
        .args(["--set", "replicaCount=0"]);
    run_ok(install, "helm install of the previous chart").await;

    let client = cp.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(
        !crd_has_new_field(&crds).await,
        "the previous chart installed the new CRD"
    );
    let mut env = TestEnv::on_without_crd(cp, "upgrade").await;
    let names = ["upgrade-a", "upgrade-b", "upgrade-c"];
    for name in names {
        env.create_connection(name, serde_json::json!({})).await;
    }
    env.start_operator();
    for name in names {
        env.wait_ready(name).await;
    }
    // Pruned by the previous CRD.
    assert!(
        !set_new_field(&env, names[2]).await,
        "{NEW_FIELD} kept before the upgrade"
    );
    let requests_before = env.standin.requests().len();
    assert_eq!(requests_before, names.len());
    // The upgrade rolls the operator: the old one stops, the upgrade, a new one starts.
    env.stop_operator().await;

    let mut upgrade = helm_on(cp);
    upgrade
        .args(["upgrade", "pingone", CHART, "--namespace", release_ns])
        .args(["--set", "replicaCount=0"]);
    run_ok(upgrade, "helm upgrade to this chart").await;
    assert!(
        crd_has_new_field(&crds).await,
        "helm upgrade left the previous CRD in place"
    );
    let crd = crds.get(CRD_NAME).await.unwrap();
    let annotations = crd.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );

    env.start_operator();
    for name in names {
        env.reconciled_to_the_end(name).await;
        env.wait_ready(name).await;
    }
    assert_eq!(
        env.standin.requests().len(),
        requests_before,
        "a new token was requested after the upgrade"
    );
    env.stop_operator().await;
    assert!(
        set_new_field(&env, names[2]).await,
        "{NEW_FIELD} pruned after the upgrade"
    );

    // helm uninstall keeps the CRD and every connection.
    let mut uninstall = helm_on(cp);
    uninstall.args(["uninstall", "pingone", "--namespace", release_ns, "--wait"]);
    run_ok(uninstall, "helm uninstall").await;
    assert!(
        crds.get_opt(CRD_NAME).await.unwrap().is_some(),
        "CRD deleted"
    );
    for name in names {
        assert!(env.connections().get_opt(name).await.unwrap().is_some());
        assert!(env.token_secret(&format!("{name}-token")).await.is_some());
    }
}
