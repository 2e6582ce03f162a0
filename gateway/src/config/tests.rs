use super::*;

const MINIMAL: &str = r#"
[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]

[[models]]
name = "m"
task = "chat"
backend = { kind = "synthetic" }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Vec::new())
}

fn error_path(text: &str) -> String {
    parse(text).unwrap_err().path
}

#[test]
fn shipped_examples_are_valid() {
    for file in ["synthetic.toml", "embedded.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.models[0].batch.max_size, 1);
    assert_eq!(config.tenants[0].class, Class::Interactive);
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let text = MINIMAL.replace("task = \"chat\"", "task = \"chat\"\nconcurency = 2");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.path, "models[0].concurency");
    assert!(err.message.contains("concurency"), "{err}");

    let text = format!("[server]\nlisten = \"127.0.0.1:1\"\nmax_body = 5\n{MINIMAL}");
    assert_eq!(error_path(&text), "server.max_body");
}

#[test]
fn wrong_types_name_the_key() {
    let text = MINIMAL.replace("name = \"m\"", "name = \"m\"\nconcurrency = \"four\"");
    assert_eq!(error_path(&text), "models[0].concurrency");
    let text = MINIMAL.replace("backend = { kind = \"synthetic\" }", "backend = { kind = \"tpu\" }");
    assert!(error_path(&text).starts_with("models[0].backend"));
    let text = format!("[server]\nlisten = \"nowhere\"\n{MINIMAL}");
    assert_eq!(error_path(&text), "server.listen");
}

#[test]
fn cross_field_rules_name_the_key() {
    let dup = format!(
        "{MINIMAL}\n[[models]]\nname = \"m\"\ntask = \"chat\"\nbackend = {{ kind = \"synthetic\" }}\n"
    );
    assert_eq!(error_path(&dup), "models[1].name");
    let bad_hash = MINIMAL.replace("3b978aa9", "XYZ");
    assert_eq!(error_path(&bad_hash), "tenants[0].api_key_sha256[0]");
    let anon = format!("[auth]\nanonymous_tenant = \"ghost\"\n{MINIMAL}");
    assert_eq!(error_path(&anon), "auth.anonymous_tenant");
    let zero = MINIMAL.replace("kind = \"synthetic\" }", "kind = \"synthetic\" }\nbatch = { max_size = 0 }");
    assert_eq!(error_path(&zero), "models[0].batch.max_size");
    let jitter = MINIMAL.replace("kind = \"synthetic\"", "kind = \"synthetic\", jitter = 2.0");
    assert_eq!(error_path(&jitter), "models[0].backend.jitter");
    assert_eq!(error_path("[server]\n"), "tenants");
}

#[test]
fn syntax_errors_give_a_line() {
    let err = parse("[server\nlisten = 1").unwrap_err();
    assert!(err.path.starts_with("line 1"), "{err}");
}

#[test]
fn environment_overrides_any_key() {
    let vars = vec![
        ("INFERGATE__SERVER__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("INFERGATE__MODELS__0__CONCURRENCY".to_owned(), "3".to_owned()),
        ("INFERGATE__MODELS__0__BATCH__MAX_DELAY".to_owned(), "7ms".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let config = Config::from_toml(MINIMAL, vars).unwrap();
    assert_eq!(config.server.listen.port(), 0);
    assert_eq!(config.models[0].concurrency, 3);
    assert_eq!(config.models[0].batch.max_delay, Duration::from_millis(7));

    let bad = vec![("INFERGATE__MODELS__5__CONCURRENCY".to_owned(), "3".to_owned())];
    let err = Config::from_toml(MINIMAL, bad).unwrap_err();
    assert_eq!(err.path, "INFERGATE__MODELS__5__CONCURRENCY");
    let typed = vec![("INFERGATE__SERVER__HTTP2".to_owned(), "maybe".to_owned())];
    assert_eq!(Config::from_toml(MINIMAL, typed).unwrap_err().path, "server.http2");
}

#[test]
fn the_voice_activity_model_is_a_tensor_model_named_by_audio_vad_model() {
    let vad = "[[models]]\nname = \"vad\"\ntask = \"tensor\"\nbackend = { kind = \"synthetic\" }\n";
    let with = |value: &str| format!("[audio]\nvad_model = \"{value}\"\n{MINIMAL}{vad}");
    assert_eq!(parse(&with("vad")).unwrap().audio.vad_model.as_deref(), Some("vad"));
    let err = parse(&with("m")).unwrap_err();
    assert_eq!(err.path, "audio.vad_model");
    assert!(err.message.contains("not a tensor"), "{err}");
    assert!(parse(&with("nope")).unwrap_err().message.contains("no model is named 'nope'"));
    // A config from before, with the model's file: told how to move it.
    let err = parse(&with("models/silero_vad/silero_vad.onnx")).unwrap_err();
    assert_eq!(err.path, "audio.vad_model");
    assert!(err.message.contains("[[models]] entry") && err.message.contains("voice-activity"), "{err}");
}

#[test]
fn listener_bounds_have_defaults_and_refuse_what_cannot_work() {
    let config = parse(MINIMAL).unwrap();
    let s = &config.server;
    assert_eq!(
        (s.max_connections, s.http2_max_concurrent_streams, s.max_header_list_bytes),
        (10_000, 100, 65_536)
    );
    assert!(s.tls.is_none() && s.metrics_listen.is_none());
    let with = |server: &str| format!("[server]\n{server}\n{MINIMAL}");
    assert_eq!(error_path(&with("max_connections = 0")), "server.max_connections");
    assert_eq!(error_path(&with("http2_max_concurrent_streams = 0")), "server.http2_max_concurrent_streams");
    assert_eq!(error_path(&with("max_header_list_bytes = 4096")), "server.max_header_list_bytes");
    assert_eq!(
        error_path(&with("listen = \"127.0.0.1:9000\"\nmetrics_listen = \"127.0.0.1:9000\"")),
        "server.metrics_listen"
    );
    let tls = with("tls = { cert = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }");
    let err = parse(&tls).unwrap_err();
    assert_eq!(err.path, "server.tls.cert");
    assert!(err.message.contains("/nonexistent/cert.pem"), "{err}");
    assert_eq!(error_path(&with("tls = { cert = \"a.pem\" }")), "server.tls");
    let ca = format!("[telemetry]\notlp_ca_file = \"/nonexistent/ca.pem\"\n{MINIMAL}");
    assert_eq!(error_path(&ca), "telemetry.otlp_ca_file");
}

#[test]
fn tenant_limits_name_served_models_and_positive_amounts() {
    let with = |tenant_lines: &str, more: &str| {
        MINIMAL.replace(
            "api_key_sha256 = [\"3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4\"]",
            &format!("api_key_sha256 = [\"3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4\"]\n{tenant_lines}"),
        ) + more
    };
    let good = with(
        "rate_limits = { requests_per_minute = 60, tokens_per_day = 1000, burst = \"10s\" }\n\
         model_rate_limits = { \"m\" = { concurrent = 2 } }\nmodels = [\"m\"]",
        "[store]\nurl = \"redis://127.0.0.1:6379/0\"\non_error = \"deny\"\n",
    );
    let config = parse(&good).unwrap();
    assert_eq!(config.tenants[0].rate_limits.requests_per_minute, Some(60));
    assert_eq!(config.store.on_error, OnStoreError::Deny);
    assert_eq!(config.store.timeout, Duration::from_millis(5));

    assert_eq!(
        error_path(&with("model_rate_limits = { \"nope\" = { requests_per_minute = 1 } }", "")),
        "tenants[0].model_rate_limits.nope"
    );
    assert_eq!(error_path(&with("models = [\"m\", \"nope\"]", "")), "tenants[0].models[1]");
    assert_eq!(
        error_path(&with("rate_limits = { tokens_per_minute = 0 }", "")),
        "tenants[0].rate_limits.tokens_per_minute"
    );
    assert_eq!(error_path(&with("rate_limits = { per_hour = 3 }", "")), "tenants[0].rate_limits.per_hour");
    assert_eq!(error_path(&with("", "[store]\nurl = \"http://x\"\n")), "store.url");
    assert_eq!(error_path(&with("", "[store]\ntimeout = \"5s\"\n")), "store.timeout");
    assert_eq!(
        error_path(&with("api_key_sha256_file = \"/nonexistent/keys\"", "")),
        "tenants[0].api_key_sha256_file"
    );
}

#[test]
fn key_files_add_digests_and_are_checked_like_inline_ones() {
    let dir = std::env::temp_dir().join(format!("infergate-keyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, "# bulk\n\nefc7d0fa4cad2961037188937a43340411abb642686296bfff9ec39b07c5f661\n")
        .unwrap();
    let text =
        format!("{MINIMAL}\n[[tenants]]\nname = \"bulk\"\napi_key_sha256_file = \"{}\"\n", file.display());
    let config = parse(&text).unwrap();
    assert_eq!(config.tenants[1].key_digests().count(), 1);
    std::fs::write(&file, "not-a-digest\n").unwrap();
    assert_eq!(error_path(&text), "tenants[1].api_key_sha256_file (digest 1)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fallbacks_and_aliases_name_models_of_the_same_task() {
    let more = |extra: &str, fallback: &str| {
        MINIMAL
            .replace("name = \"m\"\ntask = \"chat\"", &format!("name = \"m\"\ntask = \"chat\"\n{fallback}"))
            + "\n[[models]]\nname = \"n\"\ntask = \"chat\"\nbackend = { kind = \"synthetic\" }\n\
               [[models]]\nname = \"e\"\ntask = \"embeddings\"\nbackend = { kind = \"synthetic\" }\n"
            + extra
    };
    let good = more(
        "[[aliases]]\nname = \"chat\"\ntargets = [{ model = \"m\", weight = 9 }, { model = \"n\" }]\n",
        "fallback = [\"n\"]",
    );
    let config = parse(&good).unwrap();
    assert_eq!(config.models[0].fallback, ["n"]);
    assert_eq!(config.aliases[0].targets[1].weight, 1.0);
    // A tenant's allow-list may name the alias.
    let allowed = good.replace("api_key_sha256 = [", "models = [\"chat\"]\napi_key_sha256 = [");
    assert!(parse(&allowed).is_ok());

    assert_eq!(error_path(&more("", "fallback = [\"nope\"]")), "models[0].fallback[0]");
    assert_eq!(error_path(&more("", "fallback = [\"m\"]")), "models[0].fallback[0]");
    assert_eq!(error_path(&more("", "fallback = [\"n\", \"e\"]")), "models[0].fallback[1]");
    let alias = |body: &str| error_path(&more(&format!("[[aliases]]\n{body}\n"), ""));
    assert_eq!(alias("name = \"m\"\ntargets = [{ model = \"n\" }]"), "aliases[0].name");
    assert_eq!(alias("name = \"a\"\ntargets = []"), "aliases[0].targets");
    assert_eq!(
        alias("name = \"a\"\ntargets = [{ model = \"m\" }, { model = \"e\" }]"),
        "aliases[0].targets[1]"
    );
    assert_eq!(alias("name = \"a\"\ntargets = [{ model = \"m\", weight = 0 }]"), "aliases[0].targets[0]");
    assert_eq!(alias("name = \"a\"\ntargets = [{ model = \"x\" }]"), "aliases[0].targets[0]");
}
