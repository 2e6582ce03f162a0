//! Chat on llama.cpp in process (`llama-cpp-2`): any GGUF model llama.cpp
//! runs, with its own chat template (Jinja, from the file), tokenizer and
//! samplers, and continuous batching as `llama-server` does it.
//!
//! Each lane is a worker thread with one llama.cpp context: a KV cache of
//! `kv_tokens` cells split evenly into `max_sequences` streams, one per
//! running sequence, so a sequence holds at most `kv_tokens /
//! max_sequences` tokens (prompt and answer). At every step the joiners'
//! prompts and one new token of every running sequence go into one batch
//! and one `llama_decode`; each sequence then samples from its own logits
//! (greedy at temperature 0, else top-k, top-p and temperature with a
//! seeded draw). Text is built token by token from the tokens' bytes, never
//! by decoding the whole answer again. A sequence that finished or whose
//! client left frees its stream at the next step.
//!
//! The model is loaded once per backend and shared by its lanes for the
//! rest of the process (a context borrows its model, and a backend lives
//! as long as the gateway).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend as Runtime;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{AddBos, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::TokenToStringError;
use serde::Deserialize;

use crate::chat_template::ChatTemplate;
use crate::pool::Pool;
use crate::reply::{step_report, Reply, Utf8Pieces};
use crate::{
    Backend, BackendError, BatchReport, Capabilities, ChatRequest, FinishReason, Generate, Item, LoadError,
    ModelInfo, Request, StepReport, Task,
};

/// `backend = { kind = "llama", ... }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// The GGUF file (`scripts/setup.sh` places the default ones in models/).
    pub model: PathBuf,
    /// Lanes: contexts, each on its own worker thread with its own running
    /// set. One lane using every core decodes faster than two halves.
    #[serde(default = "one")]
    pub lanes: usize,
    /// Threads per lane.
    #[serde(default = "cores")]
    pub threads: usize,
    /// Sequences a lane decodes together.
    #[serde(default = "default_sequences")]
    pub max_sequences: usize,
    /// KV-cache cells per lane, split evenly among its sequences.
    #[serde(default = "default_kv_tokens")]
    pub kv_tokens: usize,
    /// A Jinja chat template to use instead of the one in the GGUF file.
    #[serde(default)]
    pub chat_template: Option<PathBuf>,
}

fn one() -> usize {
    1
}
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
fn default_sequences() -> usize {
    8
}
fn default_kv_tokens() -> usize {
    16384
}

/// llama.cpp's context rounds each sequence's share to this many cells.
const CELL_ROUNDING: usize = 256;

impl LlamaConfig {
    pub(crate) fn validate(&self) -> Result<(), LoadError> {
        if self.lanes == 0 || self.threads == 0 || self.max_sequences == 0 {
            return Err(LoadError::Settings("lanes, threads and max_sequences must be at least 1"));
        }
        if self.max_sequences > 256 {
            return Err(LoadError::setting("max_sequences", "at most 256"));
        }
        let share = self.kv_tokens / self.max_sequences;
        if share < CELL_ROUNDING || !share.is_multiple_of(CELL_ROUNDING) {
            return Err(LoadError::setting(
                "kv_tokens",
                format!(
                    "each of the {} sequences gets kv_tokens / max_sequences cells, which must be a multiple of {CELL_ROUNDING}; got {}",
                    self.max_sequences, self.kv_tokens
                ),
            ));
        }
        if u32::try_from(self.kv_tokens).is_err() {
            return Err(LoadError::setting("kv_tokens", "too large"));
        }
        Ok(())
    }

    /// The most tokens one sequence holds: prompt and answer.
    fn per_sequence(&self) -> usize {
        self.kv_tokens / self.max_sequences
    }
}

/// llama.cpp's process-wide state, initialised once (its logs go to
/// `tracing`, target `llama-cpp-2`).
fn runtime() -> Result<&'static Runtime, LoadError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            Runtime::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LoadError::Runtime(format!("llama.cpp: {e}")))
}

/// What every lane shares: the model and its template.
struct Shared {
    model: &'static LlamaModel,
    template: ChatTemplate,
    config: LlamaConfig,
}

/// A chat model on llama.cpp.
pub struct LlamaBackend {
    pool: Pool<Lane>,
    config: LlamaConfig,
}

impl LlamaBackend {
    pub fn load(model: &str, config: &LlamaConfig) -> Result<Self, LoadError> {
        config.validate()?;
        let path = &config.model;
        if !path.is_file() {
            return Err(LoadError::Missing {
                path: path.clone(),
                hint: "scripts/setup.sh fetches the GGUF models",
            });
        }
        let runtime = runtime()?;
        let loaded =
            LlamaModel::load_from_file(runtime, path, &LlamaModelParams::default()).map_err(|e| {
                LoadError::Model(format!("{}: not a model llama.cpp can load ({e})", path.display()))
            })?;
        // Shared by the lanes for the rest of the process: see the module's
        // documentation.
        let loaded: &'static LlamaModel = Box::leak(Box::new(loaded));
        let source = match &config.chat_template {
            Some(file) => std::fs::read_to_string(file).map_err(|source| LoadError::Unreadable {
                path: file.clone(),
                source,
                hint: "chat_template names a Jinja file",
            })?,
            None => loaded
                .chat_template(None)
                .map_err(|e| e.to_string())
                .and_then(|t| t.to_string().map_err(|e| e.to_string()))
                .map_err(|e| {
                    LoadError::Model(format!(
                        "{}: no chat template in the file ({e}); set chat_template",
                        path.display()
                    ))
                })?,
        };
        let text = |token: LlamaToken| {
            if token.0 < 0 {
                return String::new();
            }
            piece(loaded, token, true).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        };
        let template = ChatTemplate::new(source, text(loaded.token_bos()), text(loaded.token_eos()))?;
        let shared = Arc::new(Shared { model: loaded, template, config: config.clone() });
        let pool = Pool::start(&format!("llama-{model}"), config.lanes, move || Lane::new(shared.clone()))?;
        Ok(LlamaBackend { pool, config: config.clone() })
    }
}

/// A token's bytes (`special`: control tokens as their text, else none).
fn piece(model: &LlamaModel, token: LlamaToken, special: bool) -> Result<Vec<u8>, TokenToStringError> {
    match model.token_to_piece_bytes(token, 32, special, None) {
        Err(TokenToStringError::InsufficientBufferSpace(needed)) => {
            model.token_to_piece_bytes(token, needed.unsigned_abs() as usize, special, None)
        }
        // llama.cpp renders control tokens as nothing, which the crate
        // reports as an unknown token type.
        Err(TokenToStringError::UnknownTokenType) => Ok(Vec::new()),
        other => other,
    }
}

/// One worker thread's context and running set.
struct Lane {
    shared: Arc<Shared>,
    context: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    running: Vec<Sequence>,
    /// Streams of the KV cache no sequence holds.
    free: Vec<i32>,
    /// The tokens whose keys and values each stream holds, at positions
    /// 0.. — kept after its sequence leaves, so that a prompt starting the
    /// same way (a conversation's next turn, a shared system prompt) is
    /// decoded only from where it differs, as llama-server's prompt cache
    /// does.
    cached: Vec<Vec<LlamaToken>>,
}

/// One request in the running set.
struct Sequence {
    item: Item,
    sampler: LlamaSampler,
    reply: Reply,
    bytes: Utf8Pieces,
    /// Its stream in the KV cache.
    stream: i32,
    /// Positions it holds in the cache.
    len: usize,
    /// The token to feed at the next step.
    next: LlamaToken,
    /// The prompt tokens still to decode (from `len` on), at its first step.
    prompt: Vec<LlamaToken>,
    /// Where its logits are in the step's batch.
    logits: i32,
    /// Its terminal event is sent; it leaves at the next step.
    finished: bool,
}

impl Lane {
    fn new(shared: Arc<Shared>) -> Result<Self, LoadError> {
        let c = &shared.config;
        let runtime = runtime()?;
        let cells =
            NonZeroU32::new(c.kv_tokens as u32).ok_or(LoadError::Settings("kv_tokens must be positive"))?;
        let threads = i32::try_from(c.threads).unwrap_or(i32::MAX);
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(cells))
            .with_n_seq_max(c.max_sequences as u32)
            // A step's batch holds every joiner's whole prompt.
            .with_n_batch(cells.get())
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let context = shared
            .model
            .new_context(runtime, params)
            .map_err(|e| LoadError::Model(format!("{}: llama.cpp context: {e}", c.model.display())))?;
        Ok(Lane {
            batch: LlamaBatch::new(c.kv_tokens, 1),
            context,
            running: Vec::new(),
            free: (0..c.max_sequences as i32).collect(),
            cached: vec![Vec::new(); c.max_sequences],
            shared,
        })
    }

    /// Tokenize a joiner's prompt and give it a stream: the free one whose
    /// cache shares the longest start with the prompt (the lowest if none
    /// does, which keeps the streams in use together: llama.cpp decodes a
    /// batch in one pass only over consecutive streams). A request that
    /// cannot run gets its error here.
    fn admit(&mut self, item: Item) -> Option<Sequence> {
        let result = (|| {
            let Request::Chat(request) = &item.request else {
                return Err(BackendError::InvalidInput("this model serves chat only".into()));
            };
            let prompt = self.shared.template.render(request)?;
            let bos = self.shared.template.bos();
            let add_bos =
                if !bos.is_empty() && prompt.starts_with(bos) { AddBos::Never } else { AddBos::Always };
            let tokens =
                self.shared.model.str_to_token(&prompt, add_bos).map_err(|e| {
                    BackendError::InvalidInput(format!("the prompt cannot be tokenized: {e}"))
                })?;
            let context = self.shared.config.per_sequence();
            if tokens.len() >= context {
                return Err(BackendError::InvalidInput(format!(
                    "the prompt is {} tokens; this model holds {context} per request (prompt and answer)",
                    tokens.len()
                )));
            }
            let max_tokens = (request.max_tokens as usize).min(context - tokens.len());
            let sampler = sampler(self.shared.model, request)?;
            let shared = |stream: i32| {
                let cached = &self.cached[stream as usize];
                cached.iter().zip(&tokens).take_while(|(a, b)| a == b).count()
            };
            let Some(&stream) = self.free.iter().max_by_key(|&&s| (shared(s), std::cmp::Reverse(s))) else {
                return Err(BackendError::Failed("no free sequence in the KV cache".into()));
            };
            self.free.retain(|&s| s != stream);
            // At least the prompt's last token is decoded: its logits pick
            // the first answer token. A seeded draw decodes its whole
            // prompt: logits from a reused cache differ in the last bits
            // from a fresh prefill's, and the same seed is to give the same
            // answer every time the request runs alone.
            let seeded = request.seed.is_some() && request.temperature > 0.0;
            let kept = if seeded { 0 } else { shared(stream).min(tokens.len() - 1) };
            Ok((Reply::new(request, tokens.len(), max_tokens), sampler, stream, kept, tokens))
        })();
        match result {
            Ok((reply, sampler, stream, kept, tokens)) => {
                if let Err(error) = self.forget(stream, kept) {
                    item.fail(BackendError::Failed(format!("llama.cpp: {error}")));
                    self.free.push(stream);
                    return None;
                }
                Some(Sequence {
                    item,
                    sampler,
                    reply,
                    bytes: Utf8Pieces::default(),
                    stream,
                    len: kept,
                    next: LlamaToken(0),
                    prompt: tokens[kept..].to_vec(),
                    logits: 0,
                    finished: false,
                })
            }
            Err(error) => {
                item.fail(error);
                None
            }
        }
    }

    /// Free the streams of sequences that finished or whose client left
    /// (their caches stay, for prompts that start the same way).
    fn leave(&mut self) {
        let free = &mut self.free;
        self.running.retain(|s| {
            let stays = !s.finished && !s.item.cancel.is_cancelled();
            if !stays {
                if !s.finished {
                    s.item.fail(BackendError::Cancelled);
                }
                free.push(s.stream);
            }
            stays
        });
    }

    /// Drop `stream`'s cache from position `from` on.
    fn forget(&mut self, stream: i32, from: usize) -> Result<(), String> {
        self.cached[stream as usize].truncate(from);
        match self.context.clear_kv_cache_seq(Some(stream as u32), Some(from as u32), None) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("cannot clear stream {stream} from position {from}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Let `join` in, then decode one token for every running sequence.
    fn step(&mut self, join: Vec<Item>) -> StepReport {
        let start = Instant::now();
        self.leave();
        for item in join {
            if item.cancel.is_cancelled() {
                item.fail(BackendError::Cancelled);
                continue;
            }
            if let Some(seq) = self.admit(item) {
                self.running.push(seq);
            }
        }
        // In stream order: llama.cpp splits a batch wherever the streams
        // are not consecutive.
        self.running.sort_by_key(|s| s.stream);
        self.batch.clear();
        let mut added = Ok(());
        for seq in &mut self.running {
            let cached = &mut self.cached[seq.stream as usize];
            let feed = if seq.prompt.is_empty() { vec![seq.next] } else { std::mem::take(&mut seq.prompt) };
            for (i, &token) in feed.iter().enumerate() {
                let last = i + 1 == feed.len();
                added = added.and(self.batch.add(token, (seq.len + i) as i32, &[seq.stream], last));
            }
            seq.len += feed.len();
            seq.logits = self.batch.n_tokens() - 1;
            cached.extend_from_slice(&feed);
        }
        let tokens = self.batch.n_tokens() as usize;
        let sequences = self.running.len();
        let decoded = match added {
            Err(error) => Err(format!("batch: {error}")),
            Ok(()) if self.batch.n_tokens() == 0 => Ok(()),
            Ok(()) => self.context.decode(&mut self.batch).map_err(|e| e.to_string()),
        };
        let prefill = start.elapsed();
        match decoded {
            Ok(()) => {
                let model = self.shared.model;
                for seq in &mut self.running {
                    let token = seq.sampler.sample(&self.context, seq.logits);
                    seq.advance(model, token);
                }
            }
            Err(error) => {
                tracing::error!(%error, "llama.cpp decoding step failed");
                for seq in &mut self.running {
                    seq.item.fail(BackendError::Failed(format!("llama.cpp: {error}")));
                    seq.finished = true;
                }
                // What the caches hold is no longer known.
                let streams: Vec<i32> = self.running.iter().map(|s| s.stream).collect();
                for stream in streams {
                    if let Err(error) = self.forget(stream, 0) {
                        tracing::error!(%error, "cannot clear the KV cache");
                    }
                }
            }
        }
        let live = self.running.iter().filter(|s| !s.finished).map(|s| &s.reply);
        step_report(live, tokens, sequences, start, prefill)
    }
}

impl Sequence {
    /// Take the sampled token: end at an end-of-generation token, else add
    /// its text (and end at a stop sequence or the token limit).
    fn advance(&mut self, model: &LlamaModel, token: LlamaToken) {
        let finish = if model.is_eog_token(token) {
            Some(FinishReason::Stop)
        } else {
            self.next = token;
            match piece(model, token, false) {
                Ok(bytes) => {
                    let text = self.bytes.push(&bytes);
                    self.reply.push(&text, &self.item)
                }
                Err(error) => {
                    self.item.fail(BackendError::Failed(format!("llama.cpp: token {}: {error}", token.0)));
                    self.finished = true;
                    return;
                }
            }
        };
        if let Some(reason) = finish {
            self.reply.finish(&self.item, reason);
            self.finished = true;
        }
    }
}

/// JSON, for `response_format` `json_object`: one object, whitespace
/// bounded (llama.cpp's grammars/json.gbnf, less unbounded runs of
/// whitespace and digits, which a small model can loop on).
const JSON_GRAMMAR: &str = r#"
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"#;

/// Greedy at temperature 0; else top-k, top-p, temperature and a draw
/// seeded from the request's `seed` (the same seed, the same tokens). A
/// JSON answer is constrained by [`JSON_GRAMMAR`] first.
fn sampler(model: &LlamaModel, request: &ChatRequest) -> Result<LlamaSampler, BackendError> {
    let mut chain = Vec::new();
    if request.json {
        let grammar = LlamaSampler::grammar(model, JSON_GRAMMAR, "root")
            .map_err(|e| BackendError::Failed(format!("JSON grammar: {e}")))?;
        chain.push(grammar);
    }
    if request.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return Ok(LlamaSampler::chain_simple(chain));
    }
    let seed = request.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let top_k = request.top_k.map_or(0, |k| i32::try_from(k).unwrap_or(i32::MAX));
    chain.extend([
        LlamaSampler::top_k(top_k),
        LlamaSampler::top_p(request.top_p.clamp(0.0, 1.0), 1),
        LlamaSampler::temp(request.temperature),
        LlamaSampler::dist((seed ^ (seed >> 32)) as u32),
    ]);
    Ok(LlamaSampler::chain_simple(chain))
}

#[async_trait]
impl Backend for LlamaBackend {
    fn info(&self) -> ModelInfo {
        let capabilities = Capabilities { json_output: true, ..Capabilities::default() };
        ModelInfo { owned_by: "infergate", platform: "llama.cpp", capabilities }
    }

    fn supports(&self, task: Task) -> bool {
        task == Task::Chat
    }

    async fn execute(&self, batch: Vec<Item>) -> BatchReport {
        let start = Instant::now();
        let items = batch.len();
        let result = self
            .pool
            .run(move |lane| {
                let mut report = lane.step(batch);
                while report.running > 0 {
                    report = lane.step(Vec::new());
                }
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "llama.cpp batch failed");
        }
        BatchReport { items, elapsed: start.elapsed() }
    }

    fn generator(&self) -> Option<&dyn Generate> {
        Some(self)
    }
}

#[async_trait]
impl Generate for LlamaBackend {
    fn lanes(&self) -> usize {
        self.pool.workers()
    }

    fn max_sequences(&self) -> usize {
        self.config.max_sequences
    }

    fn kv_budget(&self) -> usize {
        self.config.kv_tokens
    }

    async fn step(&self, lane: usize, join: Vec<Item>) -> StepReport {
        let start = Instant::now();
        match self.pool.run_on(lane, move |l| l.step(join)).await {
            Ok(report) => report,
            Err(error) => {
                tracing::error!(%error, "llama.cpp decoding step failed");
                let elapsed = start.elapsed();
                StepReport { running: 0, reserved: 0, tokens: 0, sequences: 0, elapsed, prefill: elapsed }
            }
        }
    }
}
