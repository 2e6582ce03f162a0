//! `INFERGATE__SECTION__KEY=value` overrides.
//!
//! Segments are lower-cased keys; a numeric segment indexes an array
//! (`INFERGATE__MODELS__0__CONCURRENCY=4`). The value is read as a TOML value
//! when it parses as one (`8`, `true`, `["a"]`) and as a string otherwise.

use super::error::ConfigError;

/// Prefix of every override variable.
pub const ENV_PREFIX: &str = "INFERGATE__";

/// Apply every `INFERGATE__*` variable to the parsed file.
pub fn apply(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> =
        vars.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    vars.sort();
    for (name, raw) in vars {
        let keys: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::new(name, "empty key segment"));
        }
        set(table, &keys, parse_value(&raw)).map_err(|message| ConfigError::new(name, message))?;
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (first, rest) = keys.split_first().ok_or("no key")?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let child = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in(child, first, rest, value)
}

fn set_in(node: &mut toml::Value, at: &str, keys: &[String], value: toml::Value) -> Result<(), String> {
    match node {
        toml::Value::Table(t) => set(t, keys, value),
        toml::Value::Array(items) => {
            let (index, rest) = keys.split_first().ok_or("no index")?;
            let i: usize =
                index.parse().map_err(|_| format!("'{at}' is an array: expected an index, got '{index}'"))?;
            let len = items.len();
            let item = items.get_mut(i).ok_or_else(|| format!("'{at}' has {len} entries, no index {i}"))?;
            if rest.is_empty() {
                *item = value;
                Ok(())
            } else {
                set_in(item, index, rest, value)
            }
        }
        _ => Err(format!("'{at}' is a value, not a section")),
    }
}
