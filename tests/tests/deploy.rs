//! `deploy/`: every kustomization renders (`kubectl kustomize`), its Kubernetes objects pass
//! Kubernetes' own schemas (kubernetes-validate, strict), its custom resources (InferencePool,
//! ScaledObject, ServiceMonitor, PodMonitor) the committed CRD schemas, and the gateway
//! configuration it ships passes `infergate check-config`. The committed autoscalers are what
//! `infergate-load tune` writes, and the image carries every model file the configuration
//! reads. Each checker is shown to refuse a broken copy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use infergate_e2e::repo_root;

/// Kubernetes version of the schemas kubernetes-validate checks against (the newest it bundles).
const KUBERNETES: &str = "1.37.0";
/// Kinds whose schemas are CRDs (deploy/schemas), not Kubernetes' own.
const CUSTOM: [&str; 4] = ["InferencePool", "ScaledObject", "ServiceMonitor", "PodMonitor"];

fn venv(tool: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(tool);
    assert!(path.exists(), "{} is missing: run scripts/setup.sh", path.display());
    path
}

fn binary(name: &str) -> PathBuf {
    let path = repo_root().join("target/debug").join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins`", path.display());
    path
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infergate-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kubectl kustomize deploy/DIR`.
fn render(dir: &str) -> String {
    let out = Command::new(venv("kubectl"))
        .arg("kustomize")
        .arg(repo_root().join("deploy").join(dir))
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl kustomize deploy/{dir}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of kubectl's output, which separates them with `---` lines.
fn documents(yaml: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().unwrap();
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|d| !d.trim().is_empty());
    docs
}

/// A document's top-level `kind`.
fn kind(doc: &str) -> &str {
    doc.lines().find_map(|l| l.strip_prefix("kind: ")).expect("a document without kind").trim()
}

fn kubernetes_validate(file: &Path) -> Output {
    Command::new(venv("kubernetes-validate")).args(["--strict", "-k", KUBERNETES]).arg(file).output().unwrap()
}

fn crd_validate(file: &Path) -> Output {
    Command::new(venv("python"))
        .arg(repo_root().join("deploy/schemas/validate.py"))
        .arg(file)
        .output()
        .unwrap()
}

/// Render `dir`, validate every document with the checker its kind needs, and return the kinds.
fn check(dir: &str) -> (Vec<String>, String) {
    let rendered = render(dir);
    let work = scratch(&dir.replace('/', "-"));
    let (custom, core): (Vec<String>, Vec<String>) =
        documents(&rendered).into_iter().partition(|d| CUSTOM.contains(&kind(d)));
    let kinds = core.iter().chain(&custom).map(|d| kind(d).to_owned()).collect();
    let core_file = work.join("core.yaml");
    std::fs::write(&core_file, core.join("---\n")).unwrap();
    let out = kubernetes_validate(&core_file);
    assert!(out.status.success(), "deploy/{dir}: {}", text(&out));
    assert!(!text(&out).contains("ERROR"), "deploy/{dir}: {}", text(&out));
    if !custom.is_empty() {
        let custom_file = work.join("custom.yaml");
        std::fs::write(&custom_file, custom.join("---\n")).unwrap();
        let out = crd_validate(&custom_file);
        assert!(out.status.success(), "deploy/{dir}: {}", text(&out));
    }
    let _ = std::fs::remove_dir_all(&work);
    (kinds, rendered)
}

/// From rendered manifests: the gateway's TOML (the ConfigMap's `infergate.toml`), the key
/// digests (the Secret's `dev`) and the Deployment's grace period, written into `dir`.
fn extract(rendered: &str, dir: &Path) -> u64 {
    const SCRIPT: &str = r#"
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def one(kind, prefix):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, (kind, prefix, len(found))
    return found[0]
open(sys.argv[2] + "/infergate.toml", "w").write(one("ConfigMap", "infergate-config-")["data"]["infergate.toml"])
key = one("Secret", "infergate-api-keys-")["data"]["dev"]
open(sys.argv[2] + "/dev", "wb").write(base64.b64decode(key))
print(one("Deployment", "infergate")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
"#;
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap();
    let out = Command::new(venv("python")).arg("-c").arg(SCRIPT).arg(&file).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `infergate check-config`, the tenant's key file pointed at the rendered Secret's copy.
fn check_config(toml: &Path, keys: &Path) -> Output {
    Command::new(binary("infergate"))
        .arg("check-config")
        .arg(toml)
        .env("INFERGATE__TENANTS__0__API_KEY_SHA256_FILE", keys)
        .output()
        .unwrap()
}

/// Seconds of a `key = "Ns"` line in the TOML.
fn seconds(toml: &str, key: &str) -> u64 {
    let line =
        toml.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("no {key}"));
    line.split('"').nth(1).and_then(|v| v.strip_suffix('s')).unwrap().parse().unwrap()
}

fn assert_has(kinds: &[String], wanted: &[&str], dir: &str) {
    for want in wanted {
        assert!(kinds.iter().any(|k| k == want), "deploy/{dir} renders no {want}: {kinds:?}");
    }
}

#[test]
fn every_kustomization_renders_objects_that_kubernetes_and_the_crds_accept() {
    let (kinds, base) = check("base");
    assert_has(
        &kinds,
        &[
            "Namespace",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "ConfigMap",
            "Secret",
            "ServiceMonitor",
        ],
        "base",
    );
    assert!(base.contains("readOnlyRootFilesystem: true") && base.contains("runAsNonRoot: true"));
    let (kinds, gpu) = check("overlays/gpu");
    assert_has(&kinds, &["PodMonitor", "Deployment"], "overlays/gpu");
    assert!(gpu.contains("nvidia.com/gpu: 1") && gpu.contains("clusterIP: None"));
    let (kinds, _) = check("overlays/autoscaling");
    assert_has(&kinds, &["HorizontalPodAutoscaler", "ConfigMap", "Deployment"], "overlays/autoscaling");
    let (kinds, _) = check("overlays/keda");
    assert_has(&kinds, &["ScaledObject", "Deployment"], "overlays/keda");
    let (kinds, _) = check("inference-pool");
    assert_has(&kinds, &["InferencePool", "Deployment", "Service", "Role"], "inference-pool");
    // The load generator's shards: an Indexed Job whose pods each send their share.
    let (kinds, load) = check("load");
    assert_has(&kinds, &["Job"], "load");
    // (The rendered command is folded over lines; the file has it whole.)
    let job = std::fs::read_to_string(repo_root().join("deploy/load/job.yaml")).unwrap();
    assert!(load.contains("completionMode: Indexed"));
    assert!(job.contains("--shard \"$JOB_COMPLETION_INDEX/$SHARDS\""));
    let completions = load.lines().find_map(|l| l.trim().strip_prefix("completions: ")).unwrap();
    let shards = load.split("name: SHARDS").nth(1).and_then(|rest| rest.lines().nth(1)).unwrap();
    assert_eq!(shards.trim(), format!("value: \"{completions}\""), "SHARDS is the Job's completions");
}

#[test]
fn the_checkers_refuse_broken_manifests() {
    let work = scratch("broken");
    // A misspelt field in the gateway's Deployment: strict Kubernetes validation refuses it.
    let base = render("base");
    assert!(base.contains("readOnlyRootFilesystem"));
    let core: Vec<String> = documents(&base).into_iter().filter(|d| !CUSTOM.contains(&kind(d))).collect();
    let broken = work.join("core.yaml");
    std::fs::write(&broken, core.join("---\n").replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
        .unwrap();
    let out = kubernetes_validate(&broken);
    assert!(!out.status.success(), "kubernetes-validate accepted readOnlyRootFileSystem: {}", text(&out));

    // The InferencePool's v1alpha2 field name under v1, and a misspelt KEDA field.
    let pool = render("inference-pool");
    let pool_doc = documents(&pool).into_iter().find(|d| kind(d) == "InferencePool").unwrap();
    let broken = work.join("pool.yaml");
    std::fs::write(&broken, pool_doc.replace("endpointPickerRef:", "extensionRef:")).unwrap();
    let out = crd_validate(&broken);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("extensionRef"), "{}", text(&out));
    let keda = std::fs::read_to_string(repo_root().join("deploy/overlays/keda/scaledobject.yaml")).unwrap();
    let broken = work.join("keda.yaml");
    std::fs::write(&broken, keda.replace("pollingInterval", "pollInterval")).unwrap();
    let out = crd_validate(&broken);
    assert!(!out.status.success() && text(&out).contains("pollInterval"), "{}", text(&out));
    // A kind without a committed schema is an error, not a silent pass.
    std::fs::write(&broken, keda.replace("keda.sh/v1alpha1", "keda.sh/v1beta9")).unwrap();
    assert!(!crd_validate(&broken).status.success());
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_shipped_configuration_is_valid_and_its_drain_fits_the_grace_period() {
    for dir in ["base", "overlays/gpu"] {
        let work = scratch(&format!("config-{}", dir.replace('/', "-")));
        let grace = extract(&render(dir), &work);
        let toml_file = work.join("infergate.toml");
        let keys = work.join("dev");
        let out = check_config(&toml_file, &keys);
        assert!(out.status.success(), "deploy/{dir}: {}", text(&out));
        let toml = std::fs::read_to_string(&toml_file).unwrap();
        assert!(toml.contains("listen = \"0.0.0.0:8080\"") && toml.contains("url = \"redis://redis:6379\""));
        // SIGTERM → drain_delay → shutdown_grace must end before the kubelet's SIGKILL.
        let (drain, shutdown) = (seconds(&toml, "drain_delay"), seconds(&toml, "shutdown_grace"));
        assert!(
            drain >= 5 && grace >= drain + shutdown + 5,
            "deploy/{dir}: {grace} s < {drain} + {shutdown} + 5"
        );

        // The checker can fail: an unknown key, and a key file with no digest the
        // environment override can reach.
        std::fs::write(&toml_file, toml.replace("drain_delay", "drain_dalay")).unwrap();
        let out = check_config(&toml_file, &keys);
        assert!(!out.status.success() && text(&out).contains("drain_dalay"), "{}", text(&out));
        std::fs::write(&toml_file, &toml).unwrap();
        let out = check_config(&toml_file, &work.join("missing"));
        assert!(!out.status.success() && text(&out).contains("api_key_sha256_file"), "{}", text(&out));
        let _ = std::fs::remove_dir_all(&work);
    }
    // The GPU overlay's configuration is the base's with the vLLM model appended.
    let read = |p: &str| std::fs::read_to_string(repo_root().join("deploy").join(p)).unwrap();
    assert_eq!(
        read("overlays/gpu/infergate.toml"),
        read("base/infergate.toml") + &read("overlays/gpu/vllm-model.toml"),
        "regenerate deploy/overlays/gpu/infergate.toml (its kustomization.yaml says how)"
    );
    assert!(read("overlays/gpu/vllm-model.toml").contains("dns://vllm.infergate.svc.cluster.local:8000"));
}

#[test]
fn the_committed_autoscalers_are_what_tune_writes() {
    let work = scratch("tune");
    let dir = repo_root().join("deploy/overlays/autoscaling");
    let out = Command::new(binary("infergate-load"))
        .arg("tune")
        .arg("--capacity")
        .arg(dir.join("capacity.json"))
        .args([
            "--baseline-rate",
            "200",
            "--peak-rate",
            "2000",
            "--name",
            "infergate",
            "--namespace",
            "infergate",
        ])
        .args(["--prometheus", "http://prometheus-operated.monitoring.svc:9090"])
        .arg("--out")
        .arg(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for (file, committed) in [
        ("hpa.yaml", "overlays/autoscaling/hpa.yaml"),
        ("scaledobject.yaml", "overlays/autoscaling/scaledobject.yaml"),
        ("scaledobject.yaml", "overlays/keda/scaledobject.yaml"),
        ("tune.json", "overlays/autoscaling/tune.json"),
    ] {
        let fresh = std::fs::read_to_string(work.join(file)).unwrap();
        let kept = std::fs::read_to_string(repo_root().join("deploy").join(committed)).unwrap();
        assert_eq!(fresh, kept, "deploy/{committed} differs from what tune writes (deploy/README.md)");
    }
    // The adapter serves the metric the HPA names.
    let rules = std::fs::read_to_string(dir.join("prometheus-adapter-rules.yaml")).unwrap();
    assert!(rules.contains("seriesQuery: 'infergate_requests_in_flight{"), "{rules}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_image_carries_what_the_configuration_reads_and_the_picker_reads_real_gauges() {
    let read = |p: &str| std::fs::read_to_string(repo_root().join(p)).unwrap();
    let containerfile = read("deploy/Containerfile");
    let toml = read("deploy/base/infergate.toml");
    let paths: Vec<&str> = toml.split('"').filter(|s| s.starts_with("models/")).collect();
    assert!(paths.len() >= 10, "{paths:?}");
    for path in paths {
        assert!(containerfile.contains(path), "deploy/Containerfile does not copy {path}");
    }
    for line in ["USER 10001", "EXPOSE 8080", "ENTRYPOINT [\"/usr/local/bin/infergate\"]"] {
        assert!(containerfile.contains(line), "{line}");
    }
    let ort = containerfile.lines().find_map(|l| l.strip_prefix("ENV ORT_DYLIB_PATH=")).unwrap();
    let lib = Path::new(ort).file_name().unwrap().to_str().unwrap();
    assert!(containerfile.contains(&format!(".ort/lib/{lib}")), "ORT_DYLIB_PATH names a library not copied");

    // The endpoint picker's metric flags name gauges the gateway exports.
    let epp = read("deploy/inference-pool/epp.yaml");
    let names = read("otel/src/names.rs");
    for flag in [
        "--total-queued-requests-metric",
        "--total-running-requests-metric",
        "--kv-cache-usage-percentage-metric",
    ] {
        let mut lines = epp.lines().skip_while(|l| !l.trim_end().ends_with(flag));
        assert!(lines.next().is_some(), "epp.yaml sets no {flag}");
        let spec = lines.next().unwrap().trim().trim_start_matches("- ");
        let metric = spec.split('{').next().unwrap();
        assert!(spec.contains("{model="), "{flag} {spec}: one model's series");
        assert!(names.contains(&format!("\"{metric}\"")), "{metric} is not among otel's metric names");
    }
}
