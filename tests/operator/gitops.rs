//! GitOps integration: Helm chart, kstatus, Argo CD health.
//!
//! The tools these tests run are built from Go modules like the control plane:
//! `tests/tools/build.sh` builds `helm`, `helm-docs` and `kstatus` (a small program of ours around
//! `sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute`, the rules Flux and kpt use) once into
//! `~/.cache/pingone-operator/tools/<go.mod+go.sum digest>/bin`. The Argo CD health check runs
//! on `lua5.4`. The chart's conventions (CRD, aggregated roles, NetworkPolicy, monitoring, values)
//! are checked in `chart_conventions.rs`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use pingone_operator::api::PingOneConnection;
use pingone_operator::metrics::Metrics;
use pingone_testbed::standin::Fault;
use serde_json::{Value, json};

use crate::process::OperatorProcess;
use sha2::{Digest, Sha256};

use crate::support::*;

pub(crate) const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub(crate) const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/pingone-operator");
pub(crate) const CRD_FILE: &str = "pingoneconnections.pingone.tokenops.dev.yaml";
/// Where the chart keeps its copy of the generated CRD (`make crds` writes it).
pub(crate) const CHART_CRD: &str = "files/crds/pingoneconnections.pingone.tokenops.dev.yaml";

/// What discovery of the test control plane (Kubernetes >= 1.30) lists beyond the API groups
/// `helm template` knows by itself: `helm install` would see these, and the chart's admission
/// policies are rendered only where they are listed.
pub(crate) const ADMISSION_POLICY_API: [&str; 2] = [
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding",
];

// ---------------------------------------------------------------------------------------------
// Tools

/// The directory with `helm`, `helm-docs` and `kstatus`: `$PINGONE_TOOLS_BIN` if set, else what
/// `tests/tools/build.sh` prints (it builds them once and caches them by go.mod+go.sum).
/// Blocking: the first call may build for a few minutes.
pub(crate) fn tools() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(dir) = std::env::var("PINGONE_TOOLS_BIN") {
            return PathBuf::from(dir);
        }
        let script = Path::new(ROOT).join("tests/tools/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({})",
            script.display(),
            out.status
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("UTF-8 path").trim())
    })
}

/// Runs `cmd` with `input` on stdin and returns its output.
fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("command output");
    writer.join().unwrap().expect("writing stdin");
    out
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` and panics with its stderr unless it succeeds; returns stdout.
pub(crate) fn check(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `helm` against control plane `cp` (its admin kubeconfig).
pub(crate) fn helm_on(cp: &pingone_testbed::controlplane::ControlPlane) -> Command {
    let mut cmd = helm();
    cmd.arg(format!("--kubeconfig={}", cp.kubeconfig().display()));
    cmd
}

pub(crate) fn helm() -> Command {
    let home = std::env::temp_dir().join("pingone-operator-helm");
    let mut cmd = Command::new(tools().join("helm"));
    // A home of its own: no repositories, plugins or registry logins of the machine.
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// `helm template RELEASE CHART --namespace NAMESPACE --set ...` as against a cluster that
/// serves the admission policy API (as the test control plane does), as parsed documents, or
/// helm's error.
pub(crate) fn render(release: &str, namespace: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = Vec::new();
    for api in ADMISSION_POLICY_API {
        args.extend(["--api-versions", api]);
    }
    render_with(release, namespace, sets, &args)
}

/// `helm template RELEASE CHART --namespace NAMESPACE --set ... ARGS...`, as parsed documents,
/// or helm's error.
pub(crate) fn render_with(
    release: &str,
    namespace: &str,
    sets: &[&str],
    args: &[&str],
) -> Result<Vec<Value>, String> {
    let mut cmd = helm();
    cmd.args(["template", release, CHART, "--namespace", namespace]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.args(args);
    let out = cmd.output().expect("helm runs");
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(yaml_documents(&text(&out.stdout)))
}

/// The chart's CRD as helm prints it (release `release` in `namespace`, `sets` applied): the text
/// itself, which Kubernetes reads as YAML 1.1, unlike [`yaml_documents`] (YAML 1.2), so that the
/// quoting of keys such as `n` and `y` is tested and not re-done by a serializer.
pub(crate) fn rendered_crd_text(release: &str, namespace: &str, sets: &[&str]) -> String {
    let mut cmd = helm();
    cmd.args(["template", release, CHART, "--namespace", namespace])
        .args(["--show-only", "templates/crd.yaml"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    check(cmd)
}

pub(crate) fn yaml_documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn yaml_file(relative: &str) -> Vec<Value> {
    let path = Path::new(ROOT).join(relative);
    yaml_documents(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}")))
}

pub(crate) fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub(crate) fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

pub(crate) fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().expect("metadata.name")
}

/// The object of `kind` named `name`.
pub(crate) fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_tools_are_built_from_the_go_module_and_cached_by_its_digest() {
    let dir = tools();
    let tools_dir = Path::new(ROOT).join("tests/tools");
    let go_mod = std::fs::read_to_string(tools_dir.join("go.mod")).unwrap();
    if std::env::var_os("PINGONE_TOOLS_BIN").is_none() {
        let mut hash = Sha256::new();
        hash.update(go_mod.as_bytes());
        hash.update(std::fs::read(tools_dir.join("go.sum")).unwrap());
        let digest: String = hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()[..12]
            .to_string();
        assert!(
            dir.ends_with(format!("{digest}/bin")),
            "{} is not the cache dir of this go.mod+go.sum ({digest})",
            dir.display()
        );
    }
    // All are `tool` directives of the module.
    for tool in [
        "helm.sh/helm/v3/cmd/helm",
        "github.com/norwoodj/helm-docs/cmd/helm-docs",
        "github.com/tokenops/pingone-operator/tests/tools/kstatus",
    ] {
        assert!(
            go_mod
                .lines()
                .any(|l| l.trim() == tool || l.trim() == format!("tool {tool}")),
            "go.mod has no tool directive for {tool}"
        );
    }

    // helm reports the release pinned in go.mod.
    let pinned = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("helm.sh/helm/v3 "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("helm.sh/helm/v3 in go.mod")
        .to_string();
    let mut version = helm();
    version.args(["version", "--template", "{{.Version}}"]);
    assert_eq!(check(version), pinned);

    // kstatus reads objects one per line, as a JSON array and as a List.
    let in_progress = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "a", "generation": 3},
        "status": {"observedGeneration": 2},
    });
    let failed = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "b", "generation": 1},
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Stalled", "status": "True", "reason": "Broken", "message": "it broke"}
        ]},
    });
    let input = format!(
        "{in_progress}\n{}\n{}\n",
        json!([failed]),
        json!({"apiVersion": "v1", "kind": "List", "items": [in_progress, failed]})
    );
    let results = kstatus(&input);
    let got: Vec<(&str, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                r["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "a",
                "InProgress",
                "Widget generation is 3, but latest observed generation is 2"
            ),
            ("b", "Failed", "it broke"),
            (
                "a",
                "InProgress",
                "Widget generation is 3, but latest observed generation is 2"
            ),
            ("b", "Failed", "it broke"),
        ]
    );
}

/// kstatus results (one JSON object per input object, in order).
fn kstatus(input: &str) -> Vec<Value> {
    let out = run_with_stdin(Command::new(tools().join("kstatus")), input);
    assert!(out.status.success(), "kstatus: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("kstatus prints JSON lines"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Helm chart, rendered

/// One source of truth: the chart renders the CRD from a byte-for-byte copy of the generated
/// file (Helm reads no file outside the chart), which `make crds` writes with it.
#[test]
fn the_chart_crd_is_the_generated_crd() {
    let generated = std::fs::read(Path::new(ROOT).join("crds").join(CRD_FILE)).unwrap();
    let chart = std::fs::read(Path::new(CHART).join(CHART_CRD)).unwrap();
    assert!(
        generated == chart,
        "deploy/helm/pingone-operator/{CHART_CRD} differs from crds/{CRD_FILE}; run `make crds`, \
         or copy it: cp crds/{CRD_FILE} deploy/helm/pingone-operator/files/crds/"
    );
    // Nothing else in the chart carries a CRD: no crds/ directory, whose CRDs Helm would
    // install once and never upgrade.
    assert!(
        !Path::new(CHART).join("crds").exists(),
        "deploy/helm/pingone-operator/crds/ is back: the CRD is a template (templates/crd.yaml)"
    );
}

/// The container of the rendered Deployment.
pub(crate) fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_chart_lints_and_renders_what_its_values_say() {
    for sets in [
        vec![],
        vec![
            "watchNamespaces={a,b}",
            "rbac.namespaced=true",
            "metrics.serviceMonitor.enabled=true",
            "extraCA.configMap.name=corp-ca",
            "rolloutRestart.enabled=true",
        ],
        vec![
            "networkPolicy.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
            "commonLabels.team=platform",
            "topologySpreadConstraints[0].maxSkew=1",
            "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
            "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
            "concurrency=64",
            "crds.keep=false",
        ],
    ] {
        let mut lint = helm();
        lint.args(["lint", "--strict", CHART]);
        for set in sets {
            lint.args(["--set", set]);
        }
        check(lint);
    }

    let base_rules =
        one(&yaml_file("deploy/base/clusterrole.yaml"), "ClusterRole")["rules"].clone();
    let base_leader =
        one(&yaml_file("deploy/base/leader-election-role.yaml"), "Role")["rules"].clone();
    // The chart names the key Secret after the release; otherwise the rules are the same.
    let base_digest_key = |secret: &str| {
        let mut rules =
            one(&yaml_file("deploy/base/digest-key-role.yaml"), "Role")["rules"].clone();
        for rule in rules.as_array_mut().unwrap() {
            if let Some(names) = rule.get_mut("resourceNames") {
                assert_eq!(*names, json!(["pingone-operator-digest-key"]));
                *names = json!([secret]);
            }
        }
        rules
    };
    let role = |docs: &[Value], name: &str| -> Value {
        of_kind(docs, "Role")
            .into_iter()
            .find(|r| r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Role {name}"))
            .clone()
    };

    // Defaults: cluster-wide, two replicas with leader election, JSON logs, no ServiceMonitor.
    let docs = render("t", "pingone-operator", &[]).unwrap();
    assert_eq!(
        kinds(&docs),
        BTreeSet::from(
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "Deployment",
                "PodDisruptionBudget",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ]
            .map(String::from)
        ),
    );
    let cluster_scoped = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    for doc in &docs {
        if !cluster_scoped.iter().any(|k| doc["kind"] == *k) {
            assert_eq!(doc["metadata"]["namespace"], "pingone-operator", "{doc}");
        }
    }
    // The guard rails: deploy/guard-rails' policy, for the chart's ServiceAccount.
    let policy = one(&docs, "ValidatingAdmissionPolicy");
    let shipped = yaml_file("deploy/guard-rails/policy.yaml");
    let mut expected = one(&shipped, "ValidatingAdmissionPolicy")["spec"].clone();
    expected["matchConditions"][0]["expression"] = json!(
        "request.userInfo.username == 'system:serviceaccount:' + 'pingone-operator' + ':' + \
         't-pingone-operator'"
    );
    assert_eq!(policy["spec"], expected);
    assert_eq!(
        one(&docs, "ValidatingAdmissionPolicyBinding")["spec"],
        json!({"policyName": name(policy), "validationActions": ["Deny"]})
    );
    let renamed = render(
        "t",
        "pingone-operator",
        &[
            "guardRails.serviceAccountNamespace=ops",
            "guardRails.serviceAccountName=op",
        ],
    )
    .unwrap();
    assert!(
        one(&renamed, "ValidatingAdmissionPolicy")["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap()
            .ends_with("'system:serviceaccount:' + 'ops' + ':' + 'op'")
    );
    // No rolling restarts unless enabled.
    for kind in ["ValidatingAdmissionPolicy", "Role"] {
        assert!(
            of_kind(&docs, kind)
                .iter()
                .all(|d| !name(d).ends_with("-rollout-restart")),
            "a rollout-restart {kind} without rolloutRestart.enabled"
        );
    }
    assert_eq!(
        named(&docs, "ClusterRole", "t-pingone-operator")["rules"],
        base_rules
    );
    assert_eq!(
        role(&docs, "t-pingone-operator-leader-election")["rules"],
        base_leader
    );
    assert_eq!(
        role(&docs, "t-pingone-operator-digest-key")["rules"],
        base_digest_key("t-pingone-operator-digest-key")
    );
    let sa = name(one(&docs, "ServiceAccount"));
    let mut bindings = of_kind(&docs, "RoleBinding");
    assert_eq!(bindings.len(), 2);
    bindings.push(one(&docs, "ClusterRoleBinding"));
    for binding in bindings {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": "pingone-operator"}])
        );
    }
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let c = container(deployment);
    let chart: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["appVersion"], "0.1.0");
    assert_eq!(c["image"], "ghcr.io/tokenops/pingone-operator:0.1.0");
    assert_eq!(
        strings(&c["args"]),
        [
            "run",
            "--log-format=json",
            "--leader-election=true",
            "--leader-election-lease=t-pingone-operator",
            "--lease-duration=15s",
            "--digest-key-secret=t-pingone-operator-digest-key",
        ]
    );
    assert_eq!(
        c["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ])
    );
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "http");
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let pod_sc = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true);
    assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        one(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // Namespaced RBAC, watched namespaces, ServiceMonitor, extra CA, allowed domains, text logs.
    let docs = render(
        "t",
        "ops",
        &[
            "watchNamespaces={a,b}",
            "rbac.namespaced=true",
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.interval=15s",
            "metrics.serviceMonitor.labels.release=prometheus",
            "extraCA.configMap.name=corp-ca",
            "extraCA.configMap.key=bundle.pem",
            "allowedAuthDomains={login.example.com,sso.example.org}",
            "logFormat=text",
            "replicaCount=3",
            "podDisruptionBudget.minAvailable=2",
        ],
    )
    .unwrap();
    // The operator gets no ClusterRole; the aggregated roles are for users.
    assert_eq!(
        of_kind(&docs, "ClusterRole")
            .into_iter()
            .map(name)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["t-pingone-operator-edit", "t-pingone-operator-view"])
    );
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    let roles: BTreeSet<(&str, &str)> = of_kind(&docs, "Role")
        .into_iter()
        .map(|r| {
            (
                r["metadata"]["namespace"].as_str().unwrap(),
                r["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        BTreeSet::from([
            ("ops", "t-pingone-operator-leader-election"),
            ("ops", "t-pingone-operator-digest-key"),
            ("a", "t-pingone-operator"),
            ("b", "t-pingone-operator"),
        ])
    );
    for role in of_kind(&docs, "Role") {
        if role["metadata"]["namespace"] != "ops" {
            assert_eq!(role["rules"], base_rules);
        }
    }
    for binding in of_kind(&docs, "RoleBinding") {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "t-pingone-operator", "namespace": "ops"}])
        );
    }
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let c = container(deployment);
    assert_eq!(
        strings(&c["args"]),
        [
            "run",
            "--log-format=text",
            "--leader-election=true",
            "--leader-election-lease=t-pingone-operator",
            "--lease-duration=15s",
            "--digest-key-secret=t-pingone-operator-digest-key",
            "--namespaces=a,b",
            "--allowed-auth-domains=login.example.com,sso.example.org",
            "--extra-ca-file=/etc/pingone-operator/extra-ca/bundle.pem",
        ]
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "extra-ca", "mountPath": "/etc/pingone-operator/extra-ca", "readOnly": true}])
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "extra-ca", "configMap": {
            "name": "corp-ca", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]
        }}])
    );
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{
            "port": "http", "path": "/metrics", "scheme": "http", "interval": "15s",
            "honorLabels": true,
        }])
    );
    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["name"], "http");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert!(pdb["spec"].get("maxUnavailable").is_none());

    // Rolling restarts: a Role per listed namespace (default watchNamespaces), never cluster-wide,
    // and deploy/rollout-restart's admission policy for the chart's ServiceAccount.
    let shipped_rollout = yaml_file("deploy/rollout-restart/clusterrole.yaml");
    let rollout_rules = one(&shipped_rollout, "ClusterRole")["rules"].clone();
    let shipped_policy = yaml_file("deploy/rollout-restart/policy.yaml");
    let mut expected_policy = one(&shipped_policy, "ValidatingAdmissionPolicy")["spec"].clone();
    expected_policy["matchConditions"][0]["expression"] = json!(
        "request.userInfo.username == 'system:serviceaccount:' + 'ops' + ':' + 't-pingone-operator'"
    );
    for (sets, namespaces) in [
        (
            vec![
                "rolloutRestart.enabled=true",
                "rolloutRestart.namespaces={x,y}",
            ],
            ["x", "y"],
        ),
        (
            vec![
                "rolloutRestart.enabled=true",
                "watchNamespaces={a,b}",
                "rbac.namespaced=true",
            ],
            ["a", "b"],
        ),
    ] {
        let docs = render("t", "ops", &sets).unwrap();
        for cluster_role in of_kind(&docs, "ClusterRole") {
            if name(cluster_role) == "t-pingone-operator" {
                assert_eq!(cluster_role["rules"], base_rules, "{sets:?}");
            }
        }
        let rollout_roles: Vec<&Value> = of_kind(&docs, "Role")
            .into_iter()
            .filter(|r| name(r) == "t-pingone-operator-rollout-restart")
            .collect();
        let in_namespaces: Vec<&str> = rollout_roles
            .iter()
            .map(|r| r["metadata"]["namespace"].as_str().unwrap())
            .collect();
        assert_eq!(in_namespaces, namespaces, "{sets:?}");
        for role in rollout_roles {
            assert_eq!(role["rules"], rollout_rules);
        }
        let rollout_bindings: Vec<&Value> = of_kind(&docs, "RoleBinding")
            .into_iter()
            .filter(|r| name(r) == "t-pingone-operator-rollout-restart")
            .collect();
        assert_eq!(rollout_bindings.len(), 2, "{sets:?}");
        for binding in rollout_bindings {
            assert_eq!(
                binding["roleRef"],
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                       "name": "t-pingone-operator-rollout-restart"})
            );
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "name": "t-pingone-operator", "namespace": "ops"}])
            );
        }
        for binding in of_kind(&docs, "ClusterRoleBinding") {
            assert_eq!(binding["roleRef"]["name"], "t-pingone-operator");
        }
        let policy = of_kind(&docs, "ValidatingAdmissionPolicy")
            .into_iter()
            .find(|p| name(p) == "t-pingone-operator-rollout-restart")
            .expect("rollout-restart policy");
        assert_eq!(policy["spec"], expected_policy);
        let binding = of_kind(&docs, "ValidatingAdmissionPolicyBinding")
            .into_iter()
            .find(|p| name(p) == "t-pingone-operator-rollout-restart")
            .expect("rollout-restart policy binding");
        assert_eq!(
            binding["spec"],
            json!({"policyName": "t-pingone-operator-rollout-restart", "validationActions": ["Deny"]})
        );
    }
    let without_guard_rails = render(
        "t",
        "ops",
        &[
            "rolloutRestart.enabled=true",
            "rolloutRestart.namespaces={x}",
            "guardRails.enabled=false",
        ],
    )
    .unwrap();
    assert!(of_kind(&without_guard_rails, "ValidatingAdmissionPolicy").is_empty());

    // Switches off what they say.
    let docs = render(
        "t",
        "ops",
        &[
            "rbac.create=false",
            "serviceAccount.create=false",
            "serviceAccount.name=ops-sa",
            "metrics.service.enabled=false",
            "podDisruptionBudget.enabled=false",
            "replicaCount=1",
            "leaderElection.enabled=false",
            "guardRails.enabled=false",
            "crds.enabled=false",
        ],
    )
    .unwrap();
    assert_eq!(kinds(&docs), BTreeSet::from(["Deployment".to_string()]));
    let deployment = one(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "ops-sa"
    );
    assert_eq!(
        strings(&container(deployment)["args"]),
        [
            "run",
            "--log-format=json",
            "--leader-election=false",
            "--digest-key-secret=t-pingone-operator-digest-key",
        ]
    );

    // Contradictions fail with a message that says what to do.
    for (sets, needle) in [
        (vec!["rbac.namespaced=true"], "set watchNamespaces"),
        (
            vec![
                "metrics.service.enabled=false",
                "metrics.serviceMonitor.enabled=true",
            ],
            "metrics.service.enabled=true",
        ),
        (
            vec!["leaderElection.enabled=false"],
            "leaderElection.enabled=true",
        ),
        (vec!["logFormat=xml"], "logFormat"),
        (
            vec!["rolloutRestart.enabled=true"],
            "set rolloutRestart.namespaces",
        ),
    ] {
        let err = render("t", "ops", &sets).expect_err(&format!("{sets:?} renders"));
        assert!(err.contains(needle), "{sets:?}: {err}");
    }

    // Every value is documented in values.yaml and listed in the chart's README (generated from
    // values.yaml by helm-docs; `the_chart_readme_is_what_helm_docs_generates` checks it is
    // current).
    let values = std::fs::read_to_string(Path::new(CHART).join("values.yaml")).unwrap();
    let (documented, undocumented) = documented_values(&values);
    assert!(
        undocumented.is_empty(),
        "undocumented values: {undocumented:?}"
    );
    for required in [
        "image.repository",
        "image.tag",
        "image.pullPolicy",
        "replicaCount",
        "leaderElection.enabled",
        "watchNamespaces",
        "rbac.create",
        "rbac.namespaced",
        "allowedAuthDomains",
        "extraCA.configMap.name",
        "extraCA.configMap.key",
        "logFormat",
        "resources",
        "podSecurityContext",
        "securityContext",
        "nodeSelector",
        "tolerations",
        "affinity",
        "metrics.service.enabled",
        "metrics.serviceMonitor.enabled",
        "metrics.serviceMonitor.interval",
        "metrics.serviceMonitor.labels",
        "podDisruptionBudget.enabled",
        "rolloutRestart.enabled",
        "rolloutRestart.namespaces",
        "crds.enabled",
        "crds.keep",
        "commonLabels",
        "image.digest",
        "revisionHistoryLimit",
        "rbac.aggregateToDefaultRoles",
        "topologySpreadConstraints",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "credentialsSecretSelector",
        "maxRequestsPerSecond",
        "environmentMaxRequestsPerSecond",
        "concurrency",
        "minRenewalInterval",
        "backoffCap",
        "networkPolicy.enabled",
        "networkPolicy.metrics.from",
        "networkPolicy.egress.dns",
        "networkPolicy.egress.apiServer.cidrs",
        "networkPolicy.egress.apiServer.ports",
        "networkPolicy.egress.pingone",
        "metrics.prometheusRule.enabled",
        "metrics.grafanaDashboard.enabled",
    ] {
        assert!(
            documented.iter().any(|d| d == required),
            "{required} not documented"
        );
    }
    let readme = std::fs::read_to_string(Path::new(CHART).join("README.md")).unwrap();
    for value in &documented {
        assert!(
            readme.contains(&format!("\n| {value} |")),
            "deploy/helm/pingone-operator/README.md does not list {value}"
        );
    }
}

/// The dotted paths that values.yaml documents with a `# --` comment right above them, and
/// the values that have neither such a comment nor a documented parent.
fn documented_values(yaml: &str) -> (Vec<String>, Vec<String>) {
    let mut stack: Vec<(usize, String, bool)> = Vec::new();
    let mut pending = false;
    let (mut documented, mut undocumented) = (Vec::new(), Vec::new());
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            pending = false;
            continue;
        }
        if trimmed.starts_with("# --") {
            pending = true;
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
            stack.pop();
        }
        let inherited = stack.iter().any(|(_, _, d)| *d);
        let path: Vec<&str> = stack
            .iter()
            .map(|(_, k, _)| k.as_str())
            .chain([key])
            .collect();
        let path = path.join(".");
        if pending {
            documented.push(path);
        } else if !inherited && !rest.trim().is_empty() {
            undocumented.push(path);
        }
        stack.push((indent, key.to_string(), pending || inherited));
        pending = false;
    }
    (documented, undocumented)
}

// ---------------------------------------------------------------------------------------------
// Helm chart, running

/// A minimal ServiceMonitor CRD (the fields the chart uses, typed as in the Prometheus
/// Operator's), so that the rendered ServiceMonitor is validated strictly by the API server.
const SERVICEMONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names:
    kind: ServiceMonitor
    listKind: ServiceMonitorList
    plural: servicemonitors
    singular: servicemonitor
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
              required: [selector, endpoints]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels:
                      type: object
                      additionalProperties: {type: string}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames:
                      type: array
                      items: {type: string}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      scheme: {type: string, enum: [http, https]}
                      honorLabels: {type: boolean}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
"#;

pub(crate) fn kubectl_can_i(env: &TestEnv, user: &str, args: &[&str]) -> bool {
    let mut cmd = env.cp.kubectl();
    cmd.args(["auth", "can-i", &format!("--as={user}")])
        .args(args);
    let out = cmd.output().unwrap();
    text(&out.stdout).trim() == "yes"
}

fn to_yaml_stream(docs: &[&Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", serde_yaml_ng::to_string(d).unwrap()))
        .collect()
}

/// Renders the chart into a release namespace of its own, applies its ServiceAccount, RBAC,
/// Service, PodDisruptionBudget and ServiceMonitor to the control plane, validates its
/// Deployment with a server-side dry run, then runs the operator binary with the
/// ServiceAccount's token and the Deployment's args and env, and waits for a connection to
/// become Ready.
async fn the_operator_runs_from_the_chart(namespaced: bool) {
    let env = TestEnv::new(if namespaced {
        "helm-ns"
    } else {
        "helm-cluster"
    })
    .await;
    let release_ns = env.cp.namespace("gitops-release").await.unwrap();
    let release = release_ns.clone();
    let work = env.cp.dir().join(format!("gitops-{release}"));
    std::fs::create_dir_all(&work).unwrap();
    // The restricted Pod Security Standard: workloads that would violate it get warnings.
    let mut label = env.cp.kubectl();
    label.args([
        "label",
        "namespace",
        &release_ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    tokio::task::block_in_place(|| check(label));
    env.cp
        .install_crds(SERVICEMONITOR_CRD)
        .await
        .expect("ServiceMonitor CRD installs");
    // The CA bundle the chart mounts (the stand-in's CA plays the corporate CA).
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &release_ns);
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "pingone-ca"},
                "data": {"ca.crt": env.standin.ca_pem()},
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let watch = format!("watchNamespaces={{{}}}", env.ns);
    let namespaced_set = format!("rbac.namespaced={namespaced}");
    let docs = tokio::task::block_in_place(|| {
        render(
            &release,
            &release_ns,
            &[
                &watch,
                &namespaced_set,
                "metrics.serviceMonitor.enabled=true",
                "extraCA.configMap.name=pingone-ca",
                "allowedAuthDomains={login.example.com}",
                "rolloutRestart.enabled=true",
            ],
        )
    })
    .unwrap();
    let operator_role = format!("{release}-pingone-operator");
    assert_eq!(
        of_kind(&docs, "ClusterRole")
            .iter()
            .filter(|r| name(r) == operator_role)
            .count(),
        usize::from(!namespaced),
        "the operator's ClusterRole only with cluster-wide RBAC"
    );
    // The CRD is the one the control plane already has (the generated file): validated, not
    // applied, so that this test does not change what the other tests run against. As helm
    // printed it: re-serialized, its keys `n` and `y` would lose their quotes.
    let (crds, others): (Vec<&Value>, Vec<&Value>) = docs
        .iter()
        .partition(|d| d["kind"] == "CustomResourceDefinition");
    assert_eq!(crds.len(), 1);
    let crd_text = tokio::task::block_in_place(|| rendered_crd_text(&release, &release_ns, &[]));
    let (deployments, others): (Vec<&Value>, Vec<&Value>) =
        others.into_iter().partition(|d| d["kind"] == "Deployment");
    assert_eq!(deployments.len(), 1);
    let deployment = deployments[0];

    let apply_text = |file: &str, yaml: &str, dry_run: bool| {
        let path = work.join(file);
        std::fs::write(&path, yaml).unwrap();
        let mut cmd = env.cp.kubectl();
        cmd.args(["apply", "--server-side", "--field-manager=helm-test"]);
        if dry_run {
            cmd.arg("--dry-run=server");
        }
        cmd.arg("-f").arg(&path);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply {file}: {}",
            text(&out.stderr)
        );
        text(&out.stderr)
    };
    let apply = |file: &str, docs: &[&Value], dry_run: bool| {
        apply_text(file, &to_yaml_stream(docs), dry_run)
    };
    // Server-side apply conflicts with the control plane's copy at any difference of content.
    tokio::task::block_in_place(|| apply_text("crd.yaml", &crd_text, true));
    tokio::task::block_in_place(|| apply("objects.yaml", &others, false));
    let warnings = tokio::task::block_in_place(|| apply("deployment.yaml", &[deployment], true));
    assert!(
        !warnings.contains("PodSecurity"),
        "the Deployment violates the restricted Pod Security Standard:\n{warnings}"
    );
    // The check bites: a container that may escalate privileges gets a warning.
    let lax = tokio::task::block_in_place(|| {
        render(
            &release,
            &release_ns,
            &["securityContext.allowPrivilegeEscalation=true"],
        )
    })
    .unwrap();
    let warnings = tokio::task::block_in_place(|| {
        apply("lax-deployment.yaml", &[one(&lax, "Deployment")], true)
    });
    assert!(warnings.contains("PodSecurity"), "no warning: {warnings:?}");

    let sa = name(one(&docs, "ServiceAccount")).to_string();
    let user = format!("system:serviceaccount:{release_ns}:{sa}");
    tokio::task::block_in_place(|| {
        let in_watched = ["-n", env.ns.as_str()];
        for verb in ["watch", "create", "patch"] {
            let args = [verb, "secrets", in_watched[0], in_watched[1]];
            assert!(kubectl_can_i(&env, &user, &args), "cannot {args:?}");
        }
        let args = ["create", "leases.coordination.k8s.io", "-n", &release_ns];
        assert!(kubectl_can_i(&env, &user, &args), "cannot {args:?}");
        let key_secret = format!("secrets/{release}-pingone-operator-digest-key");
        for args in [
            ["get", key_secret.as_str(), "-n", &release_ns],
            ["create", "secrets", "-n", &release_ns],
        ] {
            assert!(kubectl_can_i(&env, &user, &args), "cannot {args:?}");
        }
        // With namespaced RBAC, the key Secret is the only one it may read in its namespace.
        assert_eq!(
            kubectl_can_i(&env, &user, &["get", "secrets/other", "-n", &release_ns]),
            !namespaced
        );
        assert_eq!(
            kubectl_can_i(&env, &user, &["list", "secrets", "-A"]),
            !namespaced,
            "cluster-wide Secret access with rbac.namespaced={namespaced}"
        );
        // Rolling restarts: workloads in the watched namespace only.
        let args = ["patch", "deployments", "-n", env.ns.as_str()];
        assert!(kubectl_can_i(&env, &user, &args), "cannot {args:?}");
        for denied in [
            vec!["patch", "deployments", "-n", "default"],
            vec!["patch", "deployments", "-A"],
            vec!["delete", "secrets", "-n", env.ns.as_str()],
            vec!["get", "configmaps", "-n", env.ns.as_str()],
            vec![
                "create",
                "leases.coordination.k8s.io",
                "-n",
                env.ns.as_str(),
            ],
        ] {
            assert!(!kubectl_can_i(&env, &user, &denied), "may {denied:?}");
        }
    });
    let kubeconfig = env
        .cp
        .serviceaccount_kubeconfig(&release_ns, &sa)
        .await
        .unwrap();

    // The container as the kubelet would start it: the rendered args and env, the ConfigMap's
    // key as a file at the mount path; the cluster reached through the ServiceAccount's token.
    let c = container(deployment);
    let args = strings(&c["args"]);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "extra-ca")
        .expect("extra CA mount");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "extra-ca")
        .expect("extra CA volume");
    assert_eq!(volume["configMap"]["name"], "pingone-ca");
    let item = &volume["configMap"]["items"][0];
    let mounted = format!(
        "{}/{}",
        mount["mountPath"].as_str().unwrap(),
        item["path"].as_str().unwrap()
    );
    let cm = configmaps.get("pingone-ca").await.unwrap();
    let pem = &cm.data.unwrap()[item["key"].as_str().unwrap()];
    let local_ca = work.join("extra-ca.pem");
    std::fs::write(&local_ca, pem).unwrap();

    let pod_name = format!("{release}-7d9c5b-x2k4q");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pingone-operator"));
    cmd.env_clear();
    let mut replaced = 0;
    for arg in &args {
        if *arg == format!("--extra-ca-file={mounted}") {
            cmd.arg(format!("--extra-ca-file={}", local_ca.display()));
            replaced += 1;
        } else {
            cmd.arg(arg);
        }
    }
    assert_eq!(replaced, 1, "--extra-ca-file={mounted} not in {args:?}");
    for var in c["env"].as_array().unwrap() {
        let key = var["name"].as_str().unwrap();
        let value = match (
            var["value"].as_str(),
            var["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(v), _) => v.to_string(),
            (None, Some("metadata.name")) => pod_name.clone(),
            (None, Some("metadata.namespace")) => release_ns.clone(),
            _ => panic!("env {var} has no value the test can supply"),
        };
        cmd.env(key, value);
    }
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!(
            "--host-override=auth.pingone.eu={}",
            env.standin.addr()
        ));
    let operator = OperatorProcess::launch(cmd);

    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let url = operator.url(path);
        eventually(
            Duration::from_secs(20),
            &format!("{path} answers 200"),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let r = http.get(url).send().await.ok()?;
                    (r.status() == 200).then_some(())
                }
            },
        )
        .await;
    }

    env.create_connection("from-chart", json!({})).await;
    let ready = env.wait_ready("from-chart").await;
    assert_eq!(
        TestEnv::condition(&ready, "Ready").reason,
        "TokenIssued",
        "{}",
        operator.output()
    );
    assert!(env.token_secret("from-chart-token").await.is_some());

    // The digest key Secret the chart names, created by the operator in the release namespace.
    let key_name = args
        .iter()
        .find_map(|a| a.strip_prefix("--digest-key-secret="))
        .expect("digest key flag");
    let release_secrets: Api<Secret> = Api::namespaced(env.client.clone(), &release_ns);
    let key = release_secrets
        .get(key_name)
        .await
        .expect("digest key Secret in the release namespace");
    assert_eq!(key.data.as_ref().unwrap()["key"].0.len(), 32);

    // The Lease in the release namespace (POD_NAMESPACE), held by this pod (POD_NAME).
    let lease_name = args
        .iter()
        .find_map(|a| a.strip_prefix("--leader-election-lease="))
        .expect("lease flag");
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &release_ns);
    let lease = leases
        .get(lease_name)
        .await
        .expect("Lease in the release namespace");
    let holder = lease.spec.unwrap().holder_identity.unwrap_or_default();
    assert!(holder.starts_with(&pod_name), "Lease held by {holder:?}");

    let metrics = reqwest::get(operator.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "pingone_operator_ready_status{{namespace=\"{}\",name=\"from-chart\"}} 1",
            env.ns
        )),
        "{metrics}"
    );

    let output = operator.output();
    assert!(
        !output.to_lowercase().contains("forbidden"),
        "RBAC denial in logs:\n{output}"
    );
    assert!(!output.contains(CLIENT_SECRET), "client secret in logs");
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Map<String, Value>>(line).is_ok(),
            "not a JSON log line (logFormat=json): {line}"
        );
    }

    let status = operator.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    // The chart's roles for people: the default `view`, `edit` and `admin` ClusterRoles of this
    // API server select them by label (their aggregationRule), and what they grant is what the
    // default roles then grant a user in a namespace. (The aggregation controller, which copies
    // the rules over, is not among the test control plane's controllers: the roles are bound
    // directly, as `edit` would hold both of them and `view` the first.)
    let view = format!("{release}-pingone-operator-view");
    let edit = format!("{release}-pingone-operator-edit");
    let aggregated = |docs: &[Value], default_role: &str| -> BTreeSet<String> {
        let mut get = env.cp.kubectl();
        get.args(["get", "clusterrole", default_role, "-o", "json"]);
        let role: Value = serde_json::from_str(&check(get)).unwrap();
        let selectors = role["aggregationRule"]["clusterRoleSelectors"]
            .as_array()
            .unwrap_or_else(|| panic!("{default_role} aggregates nothing: {role}"));
        of_kind(docs, "ClusterRole")
            .into_iter()
            .filter(|r| {
                let labels = &r["metadata"]["labels"];
                selectors.iter().any(|s| {
                    s["matchLabels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| &labels[k] == v)
                })
            })
            .map(|r| name(r).to_string())
            .collect()
    };
    tokio::task::block_in_place(|| {
        assert_eq!(aggregated(&docs, "view"), BTreeSet::from([view.clone()]));
        for default_role in ["edit", "admin"] {
            assert_eq!(
                aggregated(&docs, default_role),
                BTreeSet::from([view.clone(), edit.clone()]),
                "{default_role}"
            );
        }
    });
    for (role, user) in [
        (&view, "pingone-viewer"),
        (&view, "pingone-editor"),
        (&edit, "pingone-editor"),
    ] {
        let mut bind = env.cp.kubectl();
        bind.args([
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
            "-n",
            &env.ns,
        ]);
        tokio::task::block_in_place(|| check(bind));
    }
    let can = |user: &str, verb: &str, resource: &str| {
        kubectl_can_i(&env, user, &[verb, resource, "-n", env.ns.as_str()])
    };
    for (user, verb, resource) in [
        (
            "pingone-editor",
            "create",
            "pingoneconnections.pingone.tokenops.dev",
        ),
        (
            "pingone-editor",
            "deletecollection",
            "pingoneconnections.pingone.tokenops.dev",
        ),
        (
            "pingone-editor",
            "watch",
            "pingoneconnections.pingone.tokenops.dev",
        ),
        (
            "pingone-viewer",
            "list",
            "pingoneconnections.pingone.tokenops.dev",
        ),
    ] {
        // The bindings reach the authorizer through its informers; each check runs kubectl:
        // polled at a pace the shared API server does not notice.
        eventually_every(
            Duration::from_millis(500),
            Duration::from_secs(30),
            &format!("{user} may {verb} {resource}"),
            || {
                let allowed = tokio::task::block_in_place(|| can(user, verb, resource));
                async move { allowed.then_some(()) }
            },
        )
        .await;
    }
    tokio::task::block_in_place(|| {
        let connections = "pingoneconnections.pingone.tokenops.dev";
        assert!(!can("pingone-viewer", "create", connections));
        assert!(!can("pingone-viewer", "delete", connections));
        // Status is the operator's to write.
        for user in ["pingone-viewer", "pingone-editor"] {
            for verb in ["patch", "update"] {
                let args = [
                    verb,
                    connections,
                    "--subresource=status",
                    "-n",
                    env.ns.as_str(),
                ];
                assert!(!kubectl_can_i(&env, user, &args), "{user} may {args:?}");
            }
        }
        // The check bites: the operator itself may patch status.
        let operator = format!("system:serviceaccount:{release_ns}:{sa}");
        let args = [
            "patch",
            connections,
            "--subresource=status",
            "-n",
            env.ns.as_str(),
        ];
        assert!(
            kubectl_can_i(&env, &operator, &args),
            "{operator} may not {args:?}"
        );
    });

    // The cluster-scoped objects are the release's own (named after it): removed.
    let mut delete = env.cp.kubectl();
    delete.args([
        "delete",
        "--ignore-not-found",
        "clusterrole",
        &format!("{release}-pingone-operator-view"),
        &format!("{release}-pingone-operator-edit"),
    ]);
    if !namespaced {
        delete.arg(format!("{release}-pingone-operator"));
    }
    tokio::task::block_in_place(|| check(delete));
    if !namespaced {
        let mut delete = env.cp.kubectl();
        delete.args([
            "delete",
            "--ignore-not-found",
            "clusterrolebinding",
            &format!("{release}-pingone-operator"),
        ]);
        tokio::task::block_in_place(|| check(delete));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_from_the_chart_with_cluster_rbac() {
    the_operator_runs_from_the_chart(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_from_the_chart_with_namespaced_rbac() {
    the_operator_runs_from_the_chart(true).await;
}

// ---------------------------------------------------------------------------------------------
// Monitoring

/// Names of the samples the operator exports, after one sample of each metric.
pub(crate) fn exported_metric_names() -> BTreeSet<String> {
    let metrics = Metrics::new();
    metrics.token_request("ns", "conn", "success", Duration::from_millis(20));
    metrics.token_request("ns", "conn", "InvalidClient", Duration::from_millis(20));
    metrics.error("ns", "conn", "InvalidClient");
    metrics.kubernetes_error("ns", "conn", "KubernetesConflict");
    metrics.write("secret");
    metrics.connection("ns", "conn", true, Some(1.8e9), Some(1.7e9));
    metrics.token_expiry_skew("ns", "conn", 0.5);
    metrics.secret_rotation("ns", "conn", "RotationFailed");
    metrics.rollout_restart("ns", "conn", "Deployment");
    metrics.watch_error("secrets");
    metrics.reconciled();
    metrics.set_connections(1);
    metrics.throttled.inc();
    metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Metrics the alerts and the dashboard may read besides the operator's: Prometheus' own `up`
/// of each scrape target, and the kubelet's cAdvisor memory of a container (the operator
/// exports no process metrics).
pub(crate) const EXTERNAL_METRICS: [&str; 2] = ["up", "container_memory_working_set_bytes"];

/// Every metric name a PromQL expression reads: the identifiers that are neither functions,
/// aggregations, keywords nor label names (inside `{...}`, `by (...)`, `without (...)`,
/// `on (...)`, `ignoring (...)`, `group_left (...)`, `group_right (...)`), nor in strings,
/// ranges, numbers or Grafana variables.
pub(crate) fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 22] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        // Aggregations, which may stand before `by (...)` rather than before their `(`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    // Index just past the bracket that closes the one at `i` (strings inside skipped).
    let skip_group = |mut i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    let quote = chars[i];
                    i += 1;
                    while i < chars.len() && chars[i] != quote {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        panic!("unbalanced {open}{close} in {expr}");
    };
    let next_non_space = |i: usize| chars[i..].iter().find(|c| !c.is_whitespace()).copied();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c.is_ascii_digit() || c == '$' {
            // A number, a duration after `offset`, or a Grafana variable.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "._".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let followed_by_paren = next_non_space(i) == Some('(');
            if LABEL_LISTS.contains(&word.as_str()) && followed_by_paren {
                let open = i + chars[i..].iter().position(|c| *c == '(').unwrap();
                i = skip_group(open, '(', ')');
            } else if !followed_by_paren && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_metric_name_reader_skips_what_is_not_a_metric() {
    let names = |expr: &str| promql_metric_names(expr).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (namespace, name) (rate(a_total{result!="x}", job=~"$job"}[$__rate_interval] offset 5m)) > bool 0.5 or on (job) vector(0) unless b"#
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        names(r#"histogram_quantile(0.99, sum(rate(c_bucket[5m])) without (pod)) * 1e3"#),
        ["c_bucket"]
    );
    assert_eq!(
        names(r#"absent(up{job="x"} == 1) and min(d - time()) < 600"#),
        ["d", "up"]
    );
}

/// Every alert of a PrometheusRule's groups.
pub(crate) fn alerts_of(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect()
}

#[test]
fn the_alerts_use_metrics_the_operator_exports() {
    let exported = exported_metric_names();
    for name in [
        "pingone_operator_token_expiration_timestamp_seconds",
        "pingone_operator_ready_status",
        "pingone_operator_token_requests_total",
        "pingone_operator_client_secret_rotations_total",
        "pingone_operator_leader",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:?}");
    }

    // The kustomize rules, and the chart's rendered from its copy of them.
    let shipped = yaml_file("deploy/monitoring/prometheusrule.yaml");
    let chart = render("t", "ops", &["metrics.prometheusRule.enabled=true"]).unwrap();
    for (source, rule) in [
        ("deploy/monitoring", one(&shipped, "PrometheusRule")),
        ("the chart", one(&chart, "PrometheusRule")),
    ] {
        assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
        let alerts = alerts_of(rule);
        for a in &alerts {
            let expr = a["expr"].as_str().expect("expr");
            let used = promql_metric_names(expr);
            assert!(!used.is_empty(), "{expr} reads no metric");
            for name in used {
                assert!(
                    exported.contains(&name) || EXTERNAL_METRICS.contains(&name.as_str()),
                    "alert {} of {source} uses {name}, which the operator does not export \
                     ({exported:?})",
                    a["alert"]
                );
            }
            // The old, narrower reader agrees on the operator's own names.
            for name in metric_names_in(expr) {
                assert!(exported.contains(&name), "{name}");
            }
            assert!(a["labels"]["severity"].is_string(), "{a}");
            assert!(a["annotations"]["summary"].is_string(), "{a}");
            assert!(a["annotations"]["description"].is_string(), "{a}");
        }
        let alert = |name: &str| {
            *alerts
                .iter()
                .find(|a| a["alert"] == name)
                .unwrap_or_else(|| panic!("{source} has no alert {name}"))
        };
        assert_eq!(
            alert("PingOneTokenExpiringSoon")["expr"],
            "pingone_operator_token_expiration_timestamp_seconds - time() < 600"
        );
        let not_ready = alert("PingOneConnectionNotReady");
        assert_eq!(not_ready["expr"], "pingone_operator_ready_status == 0");
        assert_eq!(not_ready["for"], "5m");
        assert!(
            alert("PingOneTokenRequestsFailing")["expr"]
                .as_str()
                .unwrap()
                .contains(
                    r#"rate(pingone_operator_token_requests_total{result!="success"}[5m])) > 0"#
                )
        );
        assert!(
            alert("PingOneClientSecretRotationFailed")["expr"]
                .as_str()
                .unwrap()
                .contains(r#"pingone_operator_client_secret_rotations_total{result!="success"}"#)
        );
        assert_eq!(
            alert("PingOneOperatorNoLeader")["expr"],
            "max by (namespace, job) (pingone_operator_leader) == 0"
        );
        assert_eq!(
            alert("PingOneOperatorDown")["labels"]["severity"],
            "critical"
        );
    }
    // The operator-down alert names each install's own job (the metrics Service a ServiceMonitor
    // scrapes) and namespace.
    let down = |rule: &Value| -> String {
        alerts_of(rule)
            .into_iter()
            .find(|a| a["alert"] == "PingOneOperatorDown")
            .unwrap()["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let base_service = one(&yaml_file("deploy/base/service.yaml"), "Service").clone();
    assert_eq!(
        down(one(&shipped, "PrometheusRule")),
        format!(
            r#"absent(up{{job="{}", namespace="{}"}} == 1)"#,
            name(&base_service),
            base_service["metadata"]["namespace"].as_str().unwrap()
        )
    );
    let chart_service = one(&chart, "Service");
    assert_eq!(
        down(one(&chart, "PrometheusRule")),
        format!(
            r#"absent(up{{job="{}", namespace="ops"}} == 1)"#,
            name(chart_service)
        )
    );

    // The kustomize ServiceMonitor selects deploy/base's metrics Service by its labels and port.
    let monitor = one(
        &yaml_file("deploy/monitoring/servicemonitor.yaml"),
        "ServiceMonitor",
    )
    .clone();
    let service = base_service;
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([service["metadata"]["namespace"]])
    );
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k], v);
    }
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| &p["name"] == port),
        "the Service has no port {port}"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // The series' own `namespace` (a connection's) is kept, not replaced by the target's.
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
}

/// Every `pingone_operator_*` name in a PromQL expression.
pub(crate) fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pingone_operator_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Connections in each state, as read from the control plane

/// A connection as the API server returns it.
async fn live(env: &TestEnv, name: &str) -> Value {
    let resource = ApiResource::erase::<PingOneConnection>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &resource);
    serde_json::to_value(api.get(name).await.expect("get connection")).unwrap()
}

fn condition_of<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {obj}"))
}

/// The real objects, in the states the health checks tell apart.
struct States {
    /// Created while no operator runs: no status at all.
    fresh: Value,
    /// Ready=True, generation observed.
    ready: Value,
    /// The Ready connection after a spec change the stopped operator has not seen.
    new_generation: Value,
    /// Reconciling=True: the token endpoint answers 503 and the operator retries.
    retrying: Value,
    /// Stalled=True, reason CredentialsNotFound.
    stalled: Value,
}

impl States {
    fn all(&self) -> [(&'static str, &Value); 5] {
        [
            ("fresh", &self.fresh),
            ("ready", &self.ready),
            ("new_generation", &self.new_generation),
            ("retrying", &self.retrying),
            ("stalled", &self.stalled),
        ]
    }
}

async fn connection_states(prefix: &str) -> States {
    let mut env = TestEnv::new(prefix).await;
    env.create_connection("fresh", json!({})).await;
    let fresh = live(&env, "fresh").await;
    assert!(fresh.get("status").is_none(), "{fresh}");

    env.start_operator();
    env.create_connection("ready", json!({})).await;
    env.wait_ready("ready").await;
    let ready = live(&env, "ready").await;

    env.create_connection(
        "stalled",
        json!({"credentialsSecretRef": {"name": "no-such-secret"}}),
    )
    .await;
    env.wait_stalled("stalled", "CredentialsNotFound", Duration::from_secs(30))
        .await;
    let stalled = live(&env, "stalled").await;

    env.standin.set_persistent_fault(Some(Fault::status(503)));
    env.create_connection("retrying", json!({})).await;
    env.wait_reconciling(
        "retrying",
        "TokenEndpointUnavailable",
        Duration::from_secs(30),
    )
    .await;
    let retrying = live(&env, "retrying").await;
    env.standin.set_persistent_fault(None);

    env.stop_operator().await;
    env.connections()
        .patch(
            "ready",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewal": {"renewBeforePercentage": 40}}})),
        )
        .await
        .expect("spec patched");
    let new_generation = live(&env, "ready").await;
    assert_eq!(new_generation["metadata"]["generation"], 2);
    assert_eq!(new_generation["status"]["observedGeneration"], 1);

    States {
        fresh,
        ready,
        new_generation,
        retrying,
        stalled,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kstatus_reads_the_connection_conditions() {
    let states = connection_states("kstatus").await;
    let input: String = states
        .all()
        .iter()
        .map(|(_, obj)| format!("{obj}\n"))
        .collect();
    let results = tokio::task::block_in_place(|| kstatus(&input));
    assert_eq!(results.len(), 5, "{results:?}");
    let got: Vec<(&str, &str, &str)> = states
        .all()
        .iter()
        .zip(&results)
        .map(|((state, _), r)| {
            (
                *state,
                r["status"].as_str().unwrap(),
                r["message"].as_str().unwrap(),
            )
        })
        .collect();
    let stalled_message = condition_of(&states.stalled, "Stalled")["message"]
        .as_str()
        .unwrap();
    let retrying_message = condition_of(&states.retrying, "Reconciling")["message"]
        .as_str()
        .unwrap();
    assert_eq!(
        got,
        vec![
            // kstatus cannot tell a custom resource without status from a finished one.
            ("fresh", "Current", "Resource is current"),
            ("ready", "Current", "Resource is Ready"),
            (
                "new_generation",
                "InProgress",
                "PingOneConnection generation is 2, but latest observed generation is 1"
            ),
            ("retrying", "InProgress", retrying_message),
            ("stalled", "Failed", stalled_message),
        ]
    );
    assert!(
        stalled_message.contains("no-such-secret"),
        "{stalled_message}"
    );

    // Ready=False with neither Reconciling nor Stalled: kstatus reads it as in progress.
    let expired = expired(&states.ready);
    let result = tokio::task::block_in_place(|| kstatus(&expired.to_string()));
    assert_eq!(
        (result[0]["status"].as_str(), result[0]["message"].as_str()),
        (
            Some("InProgress"),
            Some("The token in Secret ready-token has expired")
        )
    );
}

/// `ready` turned into a connection whose token expired without any failure: Ready=False,
/// Reconciling=False, Stalled=False.
fn expired(ready: &Value) -> Value {
    let mut expired = ready.clone();
    for c in expired["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Ready" {
            c["status"] = json!("False");
            c["reason"] = json!("TokenExpired");
            c["message"] = json!("The token in Secret ready-token has expired");
        }
        // TokenVerified says the token was genuine, not that it is valid: it stays True.
        if c["type"] != "TokenVerified" {
            assert_ne!(c["status"], "True", "{c}");
        }
    }
    expired
}

// ---------------------------------------------------------------------------------------------
// Argo CD health check

const HEALTH_LUA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/argocd/health.lua");

/// A Lua table constructor for a JSON value (null becomes nil, as in Argo CD).
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs deploy/argocd/health.lua on `obj` with lua5.4 as Argo CD would (with `obj` set) and
/// returns hs.status and hs.message.
fn argocd_health(obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(HEALTH_LUA).unwrap();
    let program = format!(
        "local obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, \"\\n\", hs.message)\n",
        lua_literal(obj)
    );
    let mut lua = Command::new("lua5.4");
    lua.arg("-");
    let out = run_with_stdin(lua, &program);
    assert!(
        out.status.success(),
        "lua5.4 (apt-get install lua5.4): {}",
        text(&out.stderr)
    );
    let out = text(&out.stdout);
    let (status, message) = out.split_once('\n').expect("status and message");
    (status.to_string(), message.to_string())
}

#[test]
fn the_lua_literal_round_trips_awkward_strings() {
    let obj = json!({"status": "a \"quoted\" \\ back\nline\t€", "n": [1, -2.5, null, true]});
    let program = format!(
        "local obj = {}\nio.write(obj.status, \"|\", #obj.n, \"|\", obj.n[2], \"|\", tostring(obj.n[4]))",
        lua_literal(&obj)
    );
    let mut lua = Command::new("lua5.4");
    lua.arg("-");
    let out = run_with_stdin(lua, &program);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = text(&out.stdout);
    assert!(
        got == "a \"quoted\" \\ back\nline\t€|4|-2.5|true"
            || got == "a \"quoted\" \\ back\nline\t€|2|-2.5|true",
        "{got:?}"
    );
}

#[test]
fn the_argocd_config_map_patch_carries_the_health_check_verbatim() {
    let script = std::fs::read_to_string(HEALTH_LUA).unwrap();
    let patch = yaml_file("deploy/argocd/argocd-cm-patch.yaml");
    let cm = one(&patch, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    assert_eq!(
        cm["data"]["resource.customizations.health.pingone.tokenops.dev_PingOneConnection"]
            .as_str()
            .expect("health key"),
        script,
        "argocd-cm-patch.yaml and health.lua differ"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_argocd_health_check_reads_the_connection_conditions() {
    let states = connection_states("argocd").await;
    let got: Vec<(&str, String, String)> = tokio::task::block_in_place(|| {
        states
            .all()
            .iter()
            .map(|(state, obj)| {
                let (status, message) = argocd_health(obj);
                (*state, status, message)
            })
            .collect()
    });
    let describe = |obj: &Value, type_: &str| {
        let c = condition_of(obj, type_);
        format!(
            "{}: {}",
            c["reason"].as_str().unwrap(),
            c["message"].as_str().unwrap()
        )
    };
    let expected: Vec<(&str, String, String)> = vec![
        (
            "fresh",
            "Progressing".into(),
            "Waiting for the operator to report status".into(),
        ),
        ("ready", "Healthy".into(), describe(&states.ready, "Ready")),
        (
            "new_generation",
            "Progressing".into(),
            "Waiting for the operator to observe generation 2 (observed 1)".into(),
        ),
        (
            "retrying",
            "Progressing".into(),
            describe(&states.retrying, "Reconciling"),
        ),
        (
            "stalled",
            "Degraded".into(),
            describe(&states.stalled, "Stalled"),
        ),
    ];
    assert_eq!(got, expected);
    assert!(got[1].2.starts_with("TokenIssued: "), "{}", got[1].2);
    assert!(
        got[3].2.starts_with("TokenEndpointUnavailable: "),
        "{}",
        got[3].2
    );
    assert!(
        got[4].2.starts_with("CredentialsNotFound: "),
        "{}",
        got[4].2
    );

    // Neither Reconciling nor Stalled nor Ready: Progressing, with the Ready condition's reason.
    let expired = expired(&states.ready);
    assert_eq!(
        tokio::task::block_in_place(|| argocd_health(&expired)),
        (
            "Progressing".to_string(),
            "TokenExpired: The token in Secret ready-token has expired".to_string()
        )
    );
}
