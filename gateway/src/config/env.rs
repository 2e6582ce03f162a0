//! `INFERGATE__SECTION__KEY=value` overrides.
//!
//! Segments are lower-cased keys; a numeric segment indexes an array
//! (`INFERGATE__MODELS__0__CONCURRENCY=4`). The value is read as a TOML value
//! when it parses as one (`8`, `true`, `["a"]`) and as a string otherwise.

use super::error::ConfigError;

/// Prefix of every override variable.
pub const ENV_PREFIX: &str = "INFERGATE__";

/// Why a variable's keys do not lead to a place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Misplaced {
    #[error("no key")]
    NoKey,
    #[error("no index")]
    NoIndex,
    #[error("'{at}' is an array: expected an index, got '{index}'")]
    NotAnIndex { at: String, index: String },
    #[error("'{at}' has {len} entries, no index {index}")]
    NoEntry { at: String, len: usize, index: usize },
    #[error("'{at}' is a value, not a section")]
    NotASection { at: String },
}

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
        set(table, &keys, parse_value(&raw)).map_err(|e| ConfigError::new(name, e.to_string()))?;
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), Misplaced> {
    let (first, rest) = keys.split_first().ok_or(Misplaced::NoKey)?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let child = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in(child, first, rest, value)
}

fn set_in(node: &mut toml::Value, at: &str, keys: &[String], value: toml::Value) -> Result<(), Misplaced> {
    match node {
        toml::Value::Table(t) => set(t, keys, value),
        toml::Value::Array(items) => {
            let (index, rest) = keys.split_first().ok_or(Misplaced::NoIndex)?;
            let i: usize = index
                .parse()
                .map_err(|_| Misplaced::NotAnIndex { at: at.to_owned(), index: index.clone() })?;
            let len = items.len();
            let item =
                items.get_mut(i).ok_or_else(|| Misplaced::NoEntry { at: at.to_owned(), len, index: i })?;
            if rest.is_empty() {
                *item = value;
                Ok(())
            } else {
                set_in(item, index, rest, value)
            }
        }
        _ => Err(Misplaced::NotASection { at: at.to_owned() }),
    }
}
