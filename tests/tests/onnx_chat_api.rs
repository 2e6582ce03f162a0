//! The official OpenAI Python SDK streams a completion from the in-process
//! SmolLM2 model (`make run`'s `smollm2-135m-instruct`) through the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use infergate_e2e::{repo_root, Gateway};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_from_the_in_process_model() {
    let gw = Gateway::start("examples/embedded.toml");
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/openai_sdk_chat_stream.py"))
        .args([
            "--base-url",
            &gw.url("/v1"),
            "--api-key",
            "sk-infergate-dev",
            "--model",
            "smollm2-135m-instruct",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result["pieces"].as_array().unwrap().len() > 3, "token by token: {result}");
    assert!(result["text"].as_str().unwrap().contains("Paris"), "{result}");
    assert_eq!(result["finish_reason"], "stop", "{result}");
    assert!(result["usage"]["completion_tokens"].as_u64().unwrap() > 3, "{result}");
}
