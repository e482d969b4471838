//! What a release ships: the licence text, the changelog, the krew manifest template, and
//! `tools/release/dist.sh` (`make dist`), whose archives must be the same bytes for the same
//! commit and whose krew manifest must name the archives it built with their real checksums.
//!
//! The dist test needs helm: from `PINGONE_TOOLS_BIN`, else built by `tests/tools/build.sh`.
//! It builds the plugin with `cargo build --release` (a few minutes the first time, in
//! `target/release-dist`), and skips only the image (`DIST_SKIP_IMAGE=1`), which the operator
//! tests build and run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The operator's version; dist.sh refuses any other.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const RELEASES: &str = "https://github.com/tokenops/pingone-operator/releases/download";
/// SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt.
const APACHE_2_0_SHA256: &str = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30";

fn read(rel: &str) -> String {
    let path = Path::new(ROOT).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The directory holding helm, as tests/operator/gitops.rs finds it.
fn tools() -> &'static Path {
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

/// A scratch directory of this test process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("release-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// tools/release/dist.sh VERSION with `DIST_DIR=dist_dir`; the image is skipped and a working
/// tree with changes accepted, as in development.
fn dist(version: &str, dist_dir: &Path) -> Output {
    Command::new("bash")
        .arg(Path::new(ROOT).join("tools/release/dist.sh"))
        .arg(version)
        .current_dir(ROOT)
        .env("DIST_DIR", dist_dir)
        .env("DIST_SKIP_IMAGE", "1")
        .env("DIST_ALLOW_DIRTY", "1")
        .env("PINGONE_TOOLS_BIN", tools())
        .env_remove("VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("running tools/release/dist.sh")
}

fn dist_ok(version: &str, dist_dir: &Path) -> PathBuf {
    let out = dist(version, dist_dir);
    assert!(
        out.status.success(),
        "dist.sh {version} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    dist_dir.join(version)
}

fn field<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    let mut v = value;
    for key in path {
        v = v
            .get(*key)
            .unwrap_or_else(|| panic!("the manifest has no {}", path.join(".")));
    }
    v
}

fn string<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let s = field(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")));
    assert!(!s.trim().is_empty(), "{} is empty", path.join("."));
    s
}

/// The fields krew requires of a plugin manifest (krew's `ValidatePlugin`), with the values of
/// this plugin; returns the platform entries.
fn krew_platforms(manifest: &Value) -> &Vec<Value> {
    assert_eq!(
        string(manifest, &["apiVersion"]),
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(string(manifest, &["kind"]), "Plugin");
    assert_eq!(string(manifest, &["metadata", "name"]), "pingone");
    string(manifest, &["spec", "version"]);
    string(manifest, &["spec", "shortDescription"]);
    string(manifest, &["spec", "description"]);
    string(manifest, &["spec", "homepage"]);
    let platforms = field(manifest, &["spec", "platforms"])
        .as_sequence()
        .expect("spec.platforms is a list");
    assert!(!platforms.is_empty(), "spec.platforms is empty");
    for p in platforms {
        string(p, &["selector", "matchLabels", "os"]);
        string(p, &["selector", "matchLabels", "arch"]);
        string(p, &["uri"]);
        string(p, &["sha256"]);
        assert_eq!(string(p, &["bin"]), "kubectl-pingone");
    }
    platforms
}

#[test]
fn the_licence_is_the_apache_2_0_text() {
    let licence = read("LICENSE");
    assert!(
        licence.contains("Apache License\n                           Version 2.0, January 2004")
    );
    assert!(licence.contains("END OF TERMS AND CONDITIONS"));
    assert_eq!(
        sha256_hex(licence.as_bytes()),
        APACHE_2_0_SHA256,
        "LICENSE differs from the canonical Apache License 2.0 text"
    );
    // What the manifests claim.
    assert!(read("Cargo.toml").contains("license = \"Apache-2.0\""));
    assert!(read("tools/kubectl-pingone/Cargo.toml").contains("license = \"Apache-2.0\""));
}

#[test]
fn the_changelog_keeps_an_unreleased_section_first() {
    let changelog = read("CHANGELOG.md");
    let versions: Vec<&str> = changelog.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(
        versions.first().copied(),
        Some("## [Unreleased]"),
        "the first section of CHANGELOG.md is ## [Unreleased] (Keep a Changelog)"
    );
    for heading in &versions[1..] {
        // ## [x.y.z] - YYYY-MM-DD
        let rest = heading.strip_prefix("## [").expect("## [version] - date");
        let (version, date) = rest.split_once("] - ").expect("## [version] - date");
        assert_eq!(version.split('.').count(), 3, "{heading}: not x.y.z");
        assert_eq!(date.len(), 10, "{heading}: the date is YYYY-MM-DD");
    }
    let kinds = [
        "Upgrade notes",
        "Added",
        "Changed",
        "Deprecated",
        "Removed",
        "Fixed",
        "Security",
    ];
    for line in changelog.lines().filter(|l| l.starts_with("### ")) {
        assert!(
            kinds.contains(&&line[4..]),
            "{line}: sections are one of {kinds:?}"
        );
    }
}

#[test]
fn the_krew_template_is_a_manifest_with_placeholders_to_fill() {
    let template = read("deploy/krew/pingone.yaml");
    let manifest: Value = serde_yaml_ng::from_str(&template).expect("the template is YAML");
    let platforms = krew_platforms(&manifest);
    assert_eq!(string(&manifest, &["spec", "version"]), "v{{VERSION}}");
    assert_eq!(
        platforms.len(),
        1,
        "one platform entry, repeated by dist.sh"
    );
    let p = &platforms[0];
    assert_eq!(string(p, &["selector", "matchLabels", "os"]), "{{OS}}");
    assert_eq!(string(p, &["selector", "matchLabels", "arch"]), "{{ARCH}}");
    assert_eq!(string(p, &["uri"]), "{{URI}}");
    assert_eq!(string(p, &["sha256"]), "{{SHA256}}");
    assert_eq!(template.matches("# platform-begin").count(), 1);
    assert_eq!(template.matches("# platform-end").count(), 1);
}

#[test]
fn dist_refuses_a_version_that_is_not_the_cargo_version_or_not_semver() {
    let scratch = Scratch::new("refuse");
    let major: u64 = VERSION.split('.').next().unwrap().parse().unwrap();
    for (version, says) in [
        ("1.2".to_owned(), "not a semantic version"),
        ("01.2.3".to_owned(), "not a semantic version"),
        ("1.2.3-".to_owned(), "not a semantic version"),
        (format!("v{VERSION}"), "without the leading v"),
        (format!("{VERSION}+build.1"), "build metadata"),
        (format!("{}.0.0", major + 1), "Cargo.toml"),
    ] {
        let out = dist(&version, &scratch.0);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "dist.sh accepted {version}");
        assert!(stderr.contains(says), "dist.sh {version}: {stderr}");
        assert!(
            std::fs::read_dir(&scratch.0).unwrap().next().is_none(),
            "dist.sh {version} wrote something before refusing"
        );
    }
}

#[test]
fn dist_is_reproducible_and_its_krew_manifest_names_the_archives_built() {
    let scratch = Scratch::new("dist");
    let (first, sums) = two_runs_on_the_same_inputs(&scratch.0);

    // SHA256SUMS covers every file, and says the truth about each.
    let files: BTreeSet<String> = std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f != "SHA256SUMS")
        .collect();
    let mut summed = BTreeSet::new();
    for line in sums.lines() {
        let (sum, file) = line.split_once("  ").expect("sha256sum format");
        let bytes = std::fs::read(first.join(file)).unwrap();
        assert_eq!(sha256_hex(&bytes), sum, "SHA256SUMS is wrong about {file}");
        summed.insert(file.to_owned());
    }
    assert_eq!(summed, files, "SHA256SUMS lists every file");
    let chart_yaml: Value =
        serde_yaml_ng::from_str(&read("deploy/helm/pingone-operator/Chart.yaml")).unwrap();
    let chart_version = string(&chart_yaml, &["version"]);
    let chart = format!("pingone-operator-{chart_version}.tgz");
    assert!(files.contains(&chart), "{files:?} has no {chart}");
    assert!(
        files.contains("pingone.yaml"),
        "{files:?} has no pingone.yaml"
    );

    // The krew manifest lists exactly the plugin archives built, with their real checksums.
    let manifest: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(first.join("pingone.yaml")).unwrap())
            .expect("the krew manifest is YAML");
    assert_eq!(
        string(&manifest, &["spec", "version"]),
        format!("v{VERSION}")
    );
    let archives: BTreeSet<String> = files
        .iter()
        .filter(|f| f.starts_with("kubectl-pingone-"))
        .cloned()
        .collect();
    let mut listed = BTreeSet::new();
    for p in krew_platforms(&manifest) {
        let os = string(p, &["selector", "matchLabels", "os"]);
        let arch = string(p, &["selector", "matchLabels", "arch"]);
        let file = format!("kubectl-pingone-v{VERSION}-{os}-{arch}.tar.gz");
        assert_eq!(string(p, &["uri"]), format!("{RELEASES}/v{VERSION}/{file}"));
        let bytes = std::fs::read(first.join(&file))
            .unwrap_or_else(|e| panic!("the manifest lists {file}, not built: {e}"));
        assert_eq!(string(p, &["sha256"]), sha256_hex(&bytes), "{file}");
        listed.insert(file);
    }
    assert_eq!(listed, archives, "the manifest lists every archive built");

    for archive in &archives {
        check_plugin_archive(&first.join(archive), &scratch.0.join("unpacked"));
    }

    // The repacked chart is still one helm reads, of the release's version.
    let shown = Command::new(tools().join("helm"))
        .args(["show", "chart"])
        .arg(first.join(&chart))
        .output()
        .expect("running helm show chart");
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown: Value = serde_yaml_ng::from_slice(&shown.stdout).expect("Chart.yaml");
    assert_eq!(string(&shown, &["version"]), chart_version);
    assert_eq!(string(&shown, &["appVersion"]), VERSION);
}

/// Runs dist.sh twice, a second apart, and returns the first run's directory and its
/// SHA256SUMS after checking that the second run's is the same. helm stamps its package's
/// entries with the current second and the plugin archive is staged from fresh copies, so only
/// dist.sh's normalisation makes the runs agree. The claim is "same inputs, same bytes": when
/// the sources changed between the runs (someone editing the chart meanwhile), they run again.
fn two_runs_on_the_same_inputs(scratch: &Path) -> (PathBuf, String) {
    for attempt in 1..=3 {
        let before = inputs_digest();
        let first = dist_ok(VERSION, &scratch.join(format!("{attempt}a")));
        std::thread::sleep(Duration::from_secs(1));
        let second = dist_ok(VERSION, &scratch.join(format!("{attempt}b")));
        if inputs_digest() != before {
            eprintln!("the release's sources changed during attempt {attempt}; running again");
            continue;
        }
        let sums = std::fs::read_to_string(first.join("SHA256SUMS")).unwrap();
        assert_eq!(
            sums,
            std::fs::read_to_string(second.join("SHA256SUMS")).unwrap(),
            "two runs on the same sources gave different artifacts"
        );
        return (first, sums);
    }
    panic!("the release's sources changed during each of three attempts");
}

/// A digest of the commit and the files the artifacts dist.sh builds (the image aside) are
/// made of.
fn inputs_digest() -> String {
    fn walk(path: &Path, hasher: &mut Sha256) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for entry in entries {
                walk(&entry, hasher);
            }
        } else if let Ok(bytes) = std::fs::read(path) {
            hasher.update(path.to_string_lossy().as_bytes());
            hasher.update(Sha256::digest(&bytes));
        }
    }
    let mut hasher = Sha256::new();
    // The commit gives the archives' timestamps and the image's revision.
    let head = Command::new("git")
        .args(["log", "-1", "--format=%H %ct"])
        .current_dir(ROOT)
        .output()
        .expect("running git log");
    hasher.update(&head.stdout);
    for rel in [
        "Cargo.toml",
        "Cargo.lock",
        "LICENSE",
        // The plugin embeds the README's tables.
        "README.md",
        "tools/kubectl-pingone/Cargo.toml",
        "tools/kubectl-pingone/src",
        "tools/release",
        "deploy/helm",
        "deploy/krew",
    ] {
        walk(&Path::new(ROOT).join(rel), &mut hasher);
    }
    sha256_hex(&hasher.finalize())
}

/// The binary and LICENSE at the archive's root, nothing else; the binary runs, reports the
/// release's version and carries no path of the machine that built it.
fn check_plugin_archive(archive: &Path, scratch: &Path) {
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert_eq!(text(&list.stdout), "LICENSE\nkubectl-pingone\n");

    std::fs::create_dir_all(scratch).unwrap();
    let unpack = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(scratch)
        .status()
        .unwrap();
    assert!(unpack.success());
    assert_eq!(
        std::fs::read(scratch.join("LICENSE")).unwrap(),
        read("LICENSE").as_bytes()
    );
    let bin = scratch.join("kubectl-pingone");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert_eq!(
        text(&version.stdout).trim(),
        format!("kubectl-pingone {VERSION}")
    );

    let bytes = std::fs::read(&bin).unwrap();
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap()));
    for path in [ROOT, cargo_home.as_str()] {
        assert!(
            !bytes.windows(path.len()).any(|w| w == path.as_bytes()),
            "the plugin binary contains the build path {path}"
        );
    }
}
