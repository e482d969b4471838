//! The committed CRD under crds/ is exactly what the binary generates.

#[test]
fn committed_crd_matches_the_generated_one() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/pingoneconnections.pingone.tokenops.dev.yaml"
    ))
    .expect("crds/pingoneconnections.pingone.tokenops.dev.yaml exists");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pingone-operator"))
        .arg("crd")
        .output()
        .expect("pingone-operator crd runs");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        committed == generated,
        "crds/ is stale: run `make crds` (cargo run -- crd > crds/pingoneconnections.pingone.tokenops.dev.yaml) and commit"
    );
}

/// What kubectl reads from crds/ is the CRD: kubectl (like Helm) reads YAML 1.1, where an
/// unquoted `n:` or `y:` key is a boolean, and the JWK schema's `n` and `y` would become
/// properties "false" and "true".
#[test]
fn kubectl_reads_the_committed_crd_as_generated() {
    let bin = match std::env::var("PINGONE_CONTROLPLANE_BIN") {
        Ok(dir) => std::path::PathBuf::from(dir),
        Err(_) => {
            let out = std::process::Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/controlplane/build.sh"
                ))
                .output()
                .expect("tests/controlplane/build.sh runs");
            assert!(out.status.success(), "tests/controlplane/build.sh failed");
            String::from_utf8(out.stdout).unwrap().trim().into()
        }
    };
    let out = std::process::Command::new(bin.join("kubectl"))
        // --local: read and print, no cluster (no discovery).
        .args(["label", "--local", "-o", "json", "read=by-kubectl", "-f"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crds/pingoneconnections.pingone.tokenops.dev.yaml"
        ))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let generated = serde_json::to_value(pingone_operator::api::crd()).unwrap();
    assert_eq!(
        numbers_as_floats(read["spec"].clone()),
        numbers_as_floats(generated["spec"].clone()),
        "kubectl reads another schema"
    );
}

/// kubectl prints `maximum: 90.0` as 90: the same number.
fn numbers_as_floats(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_floats).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}
