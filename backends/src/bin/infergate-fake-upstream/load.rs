//! The fake server's load, as a GPU server has it: at most `--max-running`
//! requests run at once and the rest wait in its queue; the running ones
//! hold KV-cache tokens (prompt plus allowed output) out of `--kv-tokens`;
//! a prefix cache of `--prefix-cache-tokens` remembers prompts in blocks, as
//! vLLM's automatic prefix caching does, so that a prompt whose beginning was
//! seen costs only its new tokens before the first token. `GET /metrics`
//! shows it all under vLLM's metric names.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of prompt per cached block (about 16 tokens at 4 bytes a token).
const BLOCK_BYTES: usize = 64;

pub struct Load {
    slots: Option<Arc<Semaphore>>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    kv_used: Arc<AtomicUsize>,
    kv_tokens: usize,
    prefix: Mutex<PrefixCache>,
    /// Prompt tokens looked up in the prefix cache, and those found.
    queried: AtomicU64,
    hits: AtomicU64,
}

/// A request's place: counted as waiting until it runs, then as running
/// (with its KV-cache tokens) until dropped.
pub struct Place {
    _permit: Option<OwnedSemaphorePermit>,
    running: Arc<AtomicUsize>,
    kv_used: Arc<AtomicUsize>,
    kv: usize,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        self.kv_used.fetch_sub(self.kv, Ordering::Relaxed);
    }
}

/// Decrements a counter when dropped (a waiter whose client left).
struct Count(Arc<AtomicUsize>);

impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    /// `max_running` 0: no limit; `prefix_tokens` 0: no prefix cache.
    pub fn new(max_running: usize, kv_tokens: usize, prefix_tokens: usize) -> Self {
        Load {
            slots: (max_running > 0).then(|| Arc::new(Semaphore::new(max_running))),
            waiting: Arc::default(),
            running: Arc::default(),
            kv_used: Arc::default(),
            kv_tokens: kv_tokens.max(1),
            prefix: Mutex::new(PrefixCache::new(prefix_tokens * 4 / BLOCK_BYTES)),
            queried: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Wait for a slot; the request holds `kv` tokens while it runs.
    pub async fn enter(&self, kv: usize) -> Place {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Count(self.waiting.clone());
        let permit = match &self.slots {
            Some(slots) => slots.clone().acquire_owned().await.ok(),
            None => None,
        };
        drop(waiting);
        self.running.fetch_add(1, Ordering::Relaxed);
        self.kv_used.fetch_add(kv, Ordering::Relaxed);
        Place { _permit: permit, running: self.running.clone(), kv_used: self.kv_used.clone(), kv }
    }

    /// How many of `prompt`'s `tokens` the prefix cache holds (then it holds
    /// all of them).
    pub fn cached(&self, prompt: &str, tokens: u32) -> u32 {
        let bytes = self.prefix.lock().unwrap_or_else(std::sync::PoisonError::into_inner).look_up(prompt);
        let cached = ((bytes / 4) as u32).min(tokens);
        self.queried.fetch_add(u64::from(tokens), Ordering::Relaxed);
        self.hits.fetch_add(u64::from(cached), Ordering::Relaxed);
        cached
    }

    /// The gauges and counters in Prometheus text, labelled as vLLM labels them.
    pub fn metrics(&self, model: &str) -> String {
        let label = format!("{{model_name=\"{}\"}}", model.replace('\\', "\\\\").replace('"', "\\\""));
        let kv = self.kv_used.load(Ordering::Relaxed) as f64 / self.kv_tokens as f64;
        let mut page = String::new();
        let mut put = |name: &str, kind: &str, value: String| {
            page.push_str(&format!("# TYPE {name} {kind}\n{name}{label} {value}\n"));
        };
        put("vllm:num_requests_running", "gauge", self.running.load(Ordering::Relaxed).to_string());
        put("vllm:num_requests_waiting", "gauge", self.waiting.load(Ordering::Relaxed).to_string());
        put("vllm:kv_cache_usage_perc", "gauge", format!("{:.4}", kv.min(1.0)));
        put("vllm:prefix_cache_queries_total", "counter", self.queried.load(Ordering::Relaxed).to_string());
        put("vllm:prefix_cache_hits_total", "counter", self.hits.load(Ordering::Relaxed).to_string());
        page
    }
}

/// Blocks of prompts, each keyed by a hash of everything up to its end, least
/// recently used evicted first.
struct PrefixCache {
    capacity: usize,
    used: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
    clock: u64,
}

impl PrefixCache {
    fn new(capacity: usize) -> Self {
        PrefixCache { capacity, used: HashMap::new(), by_age: BTreeMap::new(), clock: 0 }
    }

    /// Bytes of `prompt`'s beginning already cached, in whole blocks; every
    /// whole block of it is cached afterwards.
    fn look_up(&mut self, prompt: &str) -> usize {
        if self.capacity == 0 {
            return 0;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let (mut cached, mut matching) = (0, true);
        for block in prompt.as_bytes().chunks_exact(BLOCK_BYTES) {
            hasher.write(block);
            let key = hasher.finish();
            matching = matching && self.used.contains_key(&key);
            if matching {
                cached += BLOCK_BYTES;
            }
            self.touch(key);
        }
        cached
    }

    fn touch(&mut self, key: u64) {
        self.clock += 1;
        if let Some(age) = self.used.insert(key, self.clock) {
            self.by_age.remove(&age);
        } else if self.used.len() > self.capacity {
            if let Some((_, oldest)) = self.by_age.pop_first() {
                self.used.remove(&oldest);
            }
        }
        self.by_age.insert(self.clock, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seen_beginning_is_cached_in_whole_blocks_and_the_oldest_go_first() {
        let load = Load::new(0, 1000, 64);
        let system = "s".repeat(200);
        assert_eq!(load.cached(&format!("{system}first question"), 60), 0);
        // 200 bytes of shared beginning: 3 whole blocks of 64 bytes, 48 tokens.
        assert_eq!(load.cached(&format!("{system}another one here"), 60), 48);
        // The cache holds 64 tokens = 4 blocks: a new long prompt pushes the old ones out.
        assert_eq!(load.cached(&"x".repeat(320), 80), 0);
        assert_eq!(load.cached(&format!("{system}again"), 60), 0);
        assert!(load.metrics("m").contains("vllm:prefix_cache_hits_total{model_name=\"m\"} 48\n"));
    }

    #[tokio::test]
    async fn requests_past_the_slots_wait_and_the_gauges_say_so() {
        let load = Arc::new(Load::new(1, 100, 0));
        let first = load.enter(40).await;
        let second = tokio::spawn({
            let load = load.clone();
            async move { load.enter(30).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let page = load.metrics("m");
        assert!(page.contains("vllm:num_requests_running{model_name=\"m\"} 1\n"), "{page}");
        assert!(page.contains("vllm:num_requests_waiting{model_name=\"m\"} 1\n"), "{page}");
        assert!(page.contains("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.4000\n"), "{page}");
        drop(first);
        let second = second.await.unwrap();
        assert!(load.metrics("m").contains("vllm:num_requests_waiting{model_name=\"m\"} 0\n"));
        drop(second);
        assert!(load.metrics("m").contains("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.0000\n"));
    }
}
