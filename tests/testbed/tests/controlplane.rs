//! Tests of the local control plane itself: it starts, serves CRDs, enforces RBAC, collects
//! garbage, deletes namespaces, and leaves nothing behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use pingone_testbed::controlplane::{ControlPlane, client_from_kubeconfig};

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testbed.example.com
spec:
  group: testbed.example.com
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
"#;

/// Polls `check` until it returns true or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not within {timeout:?}");
}

#[tokio::test]
async fn api_server_is_ready_and_reports_the_built_release() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.36.3");
    let out = cp
        .kubectl()
        .args(["get", "--raw", "/readyz"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[tokio::test]
async fn a_crd_installs_serves_and_validates() {
    let cp = ControlPlane::shared();
    let names = cp.install_crds(WIDGET_CRD).await.unwrap();
    assert_eq!(names, vec!["widgets.testbed.example.com".to_string()]);
    let ns = cp.namespace("crd").await.unwrap();
    let client = cp.client().await.unwrap();
    let gvk = GroupVersionKind::gvk("testbed.example.com", "v1", "Widget");
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ApiResource::from_gvk(&gvk));

    let good: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "testbed.example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}
    }))
    .unwrap();
    api.create(&PostParams::default(), &good).await.unwrap();
    let got = api.get("w1").await.unwrap();
    assert_eq!(got.data["spec"]["size"], 3);

    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "testbed.example.com/v1", "kind": "Widget",
        "metadata": {"name": "w2"}, "spec": {"size": 0}
    }))
    .unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("spec.size"), "{err}");
}

#[tokio::test]
async fn rbac_denies_a_serviceaccount_until_a_role_allows_it() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("rbac").await.unwrap();
    let admin = cp.client().await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    sas.create(&PostParams::default(), &sa).await.unwrap();

    let kubeconfig = cp.serviceaccount_kubeconfig(&ns, "reader").await.unwrap();
    let as_sa = client_from_kubeconfig(&kubeconfig).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(as_sa.clone(), &ns);
    let err = secrets.list(&ListParams::default()).await.unwrap_err();
    match &err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{err}"),
        other => panic!("expected 403, got {other}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("secret-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("secret-reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "secret-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "list allowed after binding",
        || {
            let secrets = secrets.clone();
            async move { secrets.list(&ListParams::default()).await.is_ok() }
        },
    )
    .await;
    // Still denied in another namespace, and still denied to write.
    let other: Api<Secret> = Api::namespaced(as_sa, "default");
    assert!(other.list(&ListParams::default()).await.is_err());
    let s = Secret {
        metadata: ObjectMeta {
            name: Some("x".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(secrets.create(&PostParams::default(), &s).await.is_err());
}

#[tokio::test]
async fn owned_secret_is_garbage_collected_after_its_owner_is_deleted() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("gc").await.unwrap();
    let client = cp.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let owned = Secret {
        metadata: ObjectMeta {
            name: Some("owned".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().unwrap(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    let unowned = Secret {
        metadata: ObjectMeta {
            name: Some("unowned".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &unowned)
        .await
        .unwrap();

    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "owned secret collected", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("owned").await.unwrap().is_none() }
    })
    .await;
    assert!(secrets.get_opt("unowned").await.unwrap().is_some());
}

#[tokio::test]
async fn a_deleted_namespace_is_emptied_and_removed() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("nsdel").await.unwrap();
    let client = cp.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("c".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "namespace removed", || {
        let namespaces = namespaces.clone();
        let ns = ns.clone();
        async move { namespaces.get_opt(&ns).await.unwrap().is_none() }
    })
    .await;
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); read its state to tell.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn process_ids(dir: &std::path::Path) -> Vec<i32> {
    // Children of this process whose command line names the control plane's directory.
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn an_owned_control_plane_stops_everything_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let cp = ControlPlane::start_blocking().unwrap();
        let pids = process_ids(cp.dir());
        tx.send((cp.dir().to_path_buf(), pids)).unwrap();
        panic!("simulated test failure");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let (dir, pids): (PathBuf, Vec<i32>) = rx.recv().unwrap();
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Run only as a child of the next test: starts the shared control plane, reports it, panics.
#[test]
#[ignore = "helper for shared_control_plane_is_torn_down_when_the_process_exits"]
fn child_starts_shared_control_plane_and_panics() {
    let cp = ControlPlane::shared();
    let pids: Vec<String> = process_ids(cp.dir())
        .iter()
        .map(|p| p.to_string())
        .collect();
    println!("CP-DIR={}", cp.dir().display());
    println!("CP-PIDS={}", pids.join(","));
    panic!("simulated test failure with a shared control plane");
}

#[test]
fn shared_control_plane_is_torn_down_when_the_process_exits() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_starts_shared_control_plane_and_panics",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the child test should fail");
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CP-DIR="))
        .unwrap_or_else(|| panic!("no CP-DIR in child output:\n{stdout}"));
    let pids: Vec<i32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CP-PIDS="))
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived its test process");
    }
    assert!(
        !std::path::Path::new(dir).exists(),
        "{dir} left behind by the exited test process"
    );
}
