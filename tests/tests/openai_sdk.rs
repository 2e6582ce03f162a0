//! The official OpenAI Python SDK against the real binary.
//!
//! `scripts/setup.sh` (run by `make test`) installs the pinned SDK into the
//! venv linked at `.venv`; the checks live in `tests/python/openai_sdk_check.py`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use infergate_e2e::{repo_root, Gateway, TEST_KEY};

#[test]
fn official_openai_sdk_works_against_the_gateway() {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh (make test does)", python.display());
    let gw = Gateway::start("examples/synthetic.toml");
    let out = Command::new(python)
        .arg(repo_root().join("tests/python/openai_sdk_check.py"))
        .args(["--base-url", &gw.url("/v1"), "--api-key", TEST_KEY])
        .output()
        .expect("run the SDK check");
    infergate_e2e::assert_passed(&out, "SDK checks");
}

/// Triton's official HTTP client (binary tensor data in both directions by
/// default) against the KServe v2 routes of the synthetic identity model.
#[test]
fn official_triton_client_works_against_the_gateway() {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh (make test does)", python.display());
    let gw = Gateway::start("examples/synthetic.toml");
    let host = gw.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let out = Command::new(python)
        .arg(repo_root().join("tests/python/triton_client_check.py"))
        .args(["--url", &host, "--api-key", TEST_KEY, "--model", "synthetic-tensor"])
        .output()
        .expect("run the Triton client check");
    infergate_e2e::assert_passed(&out, "Triton client checks");
}
