//! Configuration loading: TOML, then `INFERGATE__*` overrides (the lines
//! after a `%%` line, `NAME=value` each), then validation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (toml, env) = text.split_once("\n%%\n").unwrap_or((text, ""));
    let vars = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    infergate_gateway::fuzzing::config(toml, vars);
});
