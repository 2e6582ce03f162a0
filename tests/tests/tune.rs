//! `infergate-load tune`: the HPA it writes validates against Kubernetes' own schemas
//! (kubernetes-validate, strict), the KEDA ScaledObject against KEDA's documented fields,
//! and the replay over a trace predicts scaling; both checkers refuse broken manifests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use infergate_e2e::repo_root;
use serde_json::{json, Value};

fn load_tool() -> std::path::PathBuf {
    let path = repo_root().join("target/debug/infergate-load");
    assert!(path.exists(), "{} is missing: run `cargo build --bins`", path.display());
    path
}

fn python(script: &str, args: &[&Path]) -> Output {
    Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .unwrap()
}

fn validate(files: &[&Path]) -> Output {
    Command::new(repo_root().join(".venv/bin/kubernetes-validate"))
        .args(["--strict", "-k", "1.30.0"])
        .args(files)
        .output()
        .unwrap()
}

/// A capacity report as `infergate-load capacity --json` writes it: 100 req/s, 200 ms.
fn capacity_report() -> Value {
    let latency =
        json!({"mean": 200.0, "p50": 180.0, "p90": 260.0, "p99": 400.0, "p999": 450.0, "max": 480.0});
    let step = |rate: f64, passed: bool| {
        json!({"rate": rate, "achieved_per_s": rate, "latency_ms": latency, "slo_latency_ms": 400.0,
               "goodput": 1.0, "passed": passed, "because": []})
    };
    json!({
        "url": "http://127.0.0.1:8080/v1/embeddings",
        "slo": {"quantile": 0.99, "latency_ms": 500.0, "min_goodput": 0.99},
        "searches": [{"steps": [step(50.0, true), step(100.0, true), step(200.0, false)],
                      "capacity": 100.0, "knee": 50.0, "limited_by_generator": false}],
        "capacity": 100.0, "ci95": null,
    })
}

#[test]
fn tune_writes_manifests_that_kubernetes_and_keda_accept() {
    let dir = std::env::temp_dir().join(format!("infergate-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let capacity = dir.join("capacity.json");
    std::fs::write(&capacity, capacity_report().to_string()).unwrap();
    let trace = dir.join("trace.csv");
    std::fs::write(&trace, "seconds,rate\n0,50\n600,50\n660,700\n1800,700\n1860,50\n3600,50\n").unwrap();
    let out = Command::new(load_tool())
        .arg("tune")
        .args(["--capacity", capacity.to_str().unwrap(), "--trace", trace.to_str().unwrap()])
        .args([
            "--baseline-rate",
            "50",
            "--peak-rate",
            "900",
            "--name",
            "gateway",
            "--namespace",
            "inference",
        ])
        .args(["--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("20.0 in flight"), "100 req/s × 0.2 s: {stdout}");

    let hpa = dir.join("hpa.yaml");
    let checked = validate(&[&hpa]);
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let text = std::fs::read_to_string(&hpa).unwrap();
    assert!(text.contains("averageValue: \"16000m\""), "Little's law × 0.8 headroom: {text}");
    assert!(text.contains("minReplicas: 1") && text.contains("maxReplicas: 12"), "{text}");

    let keda = dir.join("scaledobject.yaml");
    let checked = python("tests/python/keda_check.py", &[&keda]);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tune.json")).unwrap()).unwrap();
    let replay = &summary["replay"];
    assert!(replay["peak_replicas"].as_u64().unwrap() >= 9, "{replay}");
    let attainment = replay["slo_attainment"].as_f64().unwrap();
    assert!(attainment > 0.9 && attainment < 1.0, "{replay}");

    // The checkers can fail: a string where Kubernetes wants an integer, an unknown KEDA field.
    let broken = dir.join("broken-hpa.yaml");
    std::fs::write(&broken, text.replace("minReplicas: 1", "minReplicas: \"one\"")).unwrap();
    assert!(!validate(&[&broken]).status.success(), "kubernetes-validate refuses a string minReplicas");
    let broken = dir.join("broken-keda.yaml");
    let keda_text = std::fs::read_to_string(&keda).unwrap();
    std::fs::write(&broken, keda_text.replace("pollingInterval", "pollInterval")).unwrap();
    let checked = python("tests/python/keda_check.py", &[&broken]);
    assert!(!checked.status.success());
    assert!(String::from_utf8_lossy(&checked.stdout).contains("pollInterval: not a documented field"));
    let _ = std::fs::remove_dir_all(&dir);
}
