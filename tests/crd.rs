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
