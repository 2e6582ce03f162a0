//! Hot reload of tenants: on SIGHUP, and when the config file or a key
//! file (`api_key_sha256_file`) changes, the file is read again (with the
//! environment overrides), and tenants, keys, classes, limits and
//! allow-lists are replaced at once. A file that fails validation, or that
//! changes a section that needs a restart (anything but `[[tenants]]` and
//! `[auth]`), is refused whole with one log line naming the key; the
//! running configuration stays. Requests in flight keep the policy they
//! were admitted with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::state::SharedState;

/// Top-level keys a reload may change.
const RELOADABLE: [&str; 2] = ["tenants", "auth"];

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(500);

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigError),
    #[error("{key} changed, which needs a restart (only [[tenants]] and [auth] reload)")]
    NeedsRestart { key: String },
}

/// Read `path` again and, if it may, replace the tenants; the key files
/// the new tenants name.
pub fn reload(state: &SharedState, path: &Path) -> Result<Vec<PathBuf>, ReloadError> {
    let config = Config::load(path)?;
    if let Some(key) = restart_needed(&state.config.source, &config.source) {
        return Err(ReloadError::NeedsRestart { key });
    }
    state.replace_tenants(&config);
    Ok(key_files(&config))
}

/// The first key outside [`RELOADABLE`] whose value differs, as a dotted path.
pub fn restart_needed(old: &toml::Table, new: &toml::Table) -> Option<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !RELOADABLE.contains(&k.as_str()))
        .find_map(|k| differs(k.clone(), old.get(k.as_str()), new.get(k.as_str())))
}

fn differs(at: String, old: Option<&toml::Value>, new: Option<&toml::Value>) -> Option<String> {
    use toml::Value::{Array, Table};
    match (old, new) {
        (Some(Table(a)), Some(Table(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| differs(format!("{at}.{k}"), a.get(k.as_str()), b.get(k.as_str())))
        }
        (Some(Array(a)), Some(Array(b))) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| differs(format!("{at}[{i}]"), Some(x), Some(y))),
        (a, b) if a == b => None,
        _ => Some(at),
    }
}

/// A fingerprint of the config file and every key file it names.
fn fingerprint(path: &Path, key_files: &[PathBuf]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for file in std::iter::once(path).chain(key_files.iter().map(PathBuf::as_path)) {
        match std::fs::read(file) {
            Ok(bytes) => hash.update(&bytes),
            Err(_) => hash.update(b"\0missing"),
        }
        hash.update(b"\0");
    }
    hash.finalize().into()
}

fn key_files(config: &Config) -> Vec<PathBuf> {
    config.tenants.iter().filter_map(|t| t.api_key_sha256_file.clone()).collect()
}

/// Reload on SIGHUP and whenever the files change; runs until the process ends.
pub fn spawn(state: SharedState, path: PathBuf) {
    tokio::spawn(async move {
        let mut files = key_files(&state.config);
        let mut seen = fingerprint(&path, &files);
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let signalled = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signalled = std::future::pending::<bool>();
            let why = tokio::select! {
                true = signalled => "SIGHUP",
                _ = tick.tick() => {
                    let now = fingerprint(&path, &files);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "file change"
                }
            };
            // Taken before the files are read: a change made while the
            // reload reads them (or after) then shows at the next look. Taken
            // after, it could include a change the reload never read, which
            // would then go unseen.
            let before = fingerprint(&path, &files);
            match reload(&state, &path) {
                Ok(new_files) => {
                    // Other key files: no fingerprint of them was taken before,
                    // so the next look reloads once more to be sure.
                    seen = if new_files == files { before } else { [0; 32] };
                    files = new_files;
                    tracing::info!(trigger = why, path = %path.display(), "tenants reloaded");
                }
                Err(error) => {
                    tracing::error!(trigger = why, path = %path.display(), %error, "reload refused; the running configuration stays");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn only_tenants_and_auth_reload() {
        let old = table("[server]\nlisten = \"127.0.0.1:1\"\n[[tenants]]\nname = \"a\"\n[[models]]\nname = \"m\"\ntask = \"chat\"");
        let tenants = table("[server]\nlisten = \"127.0.0.1:1\"\n[[tenants]]\nname = \"b\"\n[auth]\nanonymous_tenant = \"b\"\n[[models]]\nname = \"m\"\ntask = \"chat\"");
        assert_eq!(restart_needed(&old, &tenants), None);
        let server = table("[server]\nlisten = \"127.0.0.1:2\"\n[[models]]\nname = \"m\"\ntask = \"chat\"");
        assert_eq!(restart_needed(&old, &server).as_deref(), Some("server.listen"));
        let model = table("[server]\nlisten = \"127.0.0.1:1\"\n[[models]]\nname = \"n\"\ntask = \"chat\"");
        assert_eq!(restart_needed(&old, &model).as_deref(), Some("models[0].name"));
        let store = table("[server]\nlisten = \"127.0.0.1:1\"\n[store]\nurl = \"redis://x\"\n[[models]]\nname = \"m\"\ntask = \"chat\"");
        assert_eq!(restart_needed(&old, &store).as_deref(), Some("store"));
    }
}
