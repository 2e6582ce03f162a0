//! `infergate check-config` and `--help`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use infergate_e2e::{binary, repo_root};

#[test]
fn check_config_accepts_the_examples() {
    for file in ["examples/synthetic.toml", "examples/embedded.toml"] {
        let out = Command::new(binary()).arg("check-config").arg(repo_root().join(file)).output().unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
}

#[test]
fn check_config_names_the_key_path_and_fails() {
    let path = std::env::temp_dir().join(format!("infergate-broken-{}.toml", std::process::id()));
    let text = std::fs::read_to_string(repo_root().join("examples/synthetic.toml")).unwrap().replace(
        "batch = { max_size = 32, max_delay = \"2ms\" }",
        "batch = { max_size = \"lots\", max_delay = \"2ms\" }",
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("models[1].batch.max_size"), "{stderr}");

    let out = Command::new(binary()).args(["check-config", "/nonexistent/infergate.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn environment_overrides_are_validated_too() {
    let out = Command::new(binary())
        .arg("check-config")
        .arg(repo_root().join("examples/synthetic.toml"))
        .env("INFERGATE__MODELS__0__CONCURRENCY", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("models[0].concurrency"));
}

#[test]
fn help_describes_the_commands() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("serve") && help.contains("check-config"), "{help}");
    let out = Command::new(binary()).args(["serve", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("INFERGATE__"));
}
