//! Chat generation with a decoder-only model exported with a KV cache
//! (SmolLM2-135M-Instruct, converted by `scripts/setup.sh`): the model's
//! chat template (minijinja), tokenization, prefill and step-by-step decode
//! with the cache, greedy or sampled (temperature, top_p, reproducible
//! `seed`), stop sequences, token streaming, and cancellation checked at
//! every step.
//!
//! `model` names the directory with `model.onnx`, `tokenizer.json`,
//! `chat_template.jinja` and `generation.json`.
//!
//! Continuous batching: each worker keeps a running set. At every step the
//! joiners are prefilled one by one (each emits its first token), the set's
//! KV caches are laid out as one left-padded batch when its membership
//! changed, and one decode run advances every sequence by a token. Between
//! membership changes the model's `present` outputs are fed back as `past`
//! without copying. Finished and cancelled sequences leave at the next step.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use tokenizers::Tokenizer;

use infergate_rng::SplitMix64;

use super::config::OnnxConfig;
use super::session::session;
use super::worker::{InferError, Worker};
use crate::chat_template::ChatTemplate;
use crate::reply::{step_report, Reply};
use crate::{BackendError, ChatRequest, FinishReason, Item, LoadError, Request, StepReport};

/// What `generation.json` says about the model.
#[derive(Debug, Clone, serde::Deserialize)]
struct Generation {
    eos_token_id: u32,
    context_length: usize,
    num_hidden_layers: usize,
    num_key_value_heads: usize,
    head_dim: usize,
}

pub(crate) struct ChatWorker {
    session: Session,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    generation: Generation,
    /// The running set, in the rows of `cache`.
    running: Vec<Sequence>,
    /// The running set's KV cache, left-padded to a common width.
    cache: Option<Cache>,
}

/// `present.*` of the last run, fed back as `past_key_values.*`: one value
/// per layer and kind, each `[rows, kv_heads, width, head_dim]`. Row `r`
/// holds its sequence's `len` positions at the right end.
struct Cache {
    values: Vec<DynValue>,
    width: usize,
}

/// One request in the running set.
struct Sequence {
    item: Item,
    sampler: Sampler,
    reply: Reply,
    generated: Vec<u32>,
    /// Incremental detokenisation: `generated[prefix..read]` is the window
    /// whose text is already in `reply`; each step decodes only from
    /// `prefix` on, never the whole answer again.
    prefix: usize,
    read: usize,
    /// Positions this sequence has in the cache.
    len: usize,
    /// Its row in the cache (`None` until it joins one).
    row: Option<usize>,
    /// The prefill's cache, until the sequence is merged into the batch.
    own_cache: Option<Vec<DynValue>>,
    /// The token to feed at the next step.
    next: u32,
    /// Its terminal event is sent; it leaves at the next step.
    finished: bool,
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Unreadable {
        path: path.to_owned(),
        source,
        hint: "scripts/setup.sh converts the chat model",
    })
}

type Inputs<'v> = Vec<(Cow<'v, str>, SessionInputValue<'v>)>;

impl ChatWorker {
    pub(crate) fn load(config: &OnnxConfig) -> Result<Self, LoadError> {
        let dir = &config.model;
        let generation: Generation = serde_json::from_str(&read(&dir.join("generation.json"))?)
            .map_err(|e| LoadError::Model(format!("generation.json: {e}")))?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| LoadError::Model(format!("tokenizer.json: {e}")))?;
        Ok(ChatWorker {
            session: session(&dir.join("model.onnx"), config)?,
            tokenizer,
            template: ChatTemplate::new(
                read(&dir.join("chat_template.jinja"))?,
                String::new(),
                String::new(),
            )?,
            generation,
            running: Vec::new(),
            cache: None,
        })
    }

    fn cache_names(&self) -> impl Iterator<Item = (String, String)> {
        (0..self.generation.num_hidden_layers).flat_map(|layer| {
            ["key", "value"]
                .map(|kind| (format!("past_key_values.{layer}.{kind}"), format!("present.{layer}.{kind}")))
        })
    }

    /// One run over `rows` sequences of `width` new tokens each: the logits
    /// of each row's last position, and the cache after it.
    fn run(
        &mut self,
        rows: usize,
        ids: Vec<i64>,
        mask: Vec<i64>,
        positions: Vec<i64>,
        past: Vec<SessionInputValue<'_>>,
    ) -> Result<(Vec<f32>, Vec<DynValue>), InferError> {
        let width = ids.len() / rows;
        let names: Vec<(String, String)> = self.cache_names().collect();
        let mut inputs: Inputs<'_> = vec![
            ("input_ids".into(), Tensor::from_array(([rows, width], ids))?.into()),
            ("attention_mask".into(), Tensor::from_array(([rows, mask.len() / rows], mask))?.into()),
            ("position_ids".into(), Tensor::from_array(([rows, width], positions))?.into()),
        ];
        inputs.extend(names.iter().map(|(past_name, _)| Cow::Owned(past_name.clone())).zip(past));
        let mut outputs = self.session.run(inputs)?;
        let (shape, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
        let vocab = shape[2] as usize;
        let last: Vec<f32> = (0..rows)
            .flat_map(|r| {
                let at = (r * width + width - 1) * vocab;
                logits[at..at + vocab].iter().copied()
            })
            .collect();
        let present = names
            .iter()
            .map(|(_, name)| {
                outputs
                    .remove(name)
                    .ok_or_else(|| InferError::Unexpected(format!("the model has no output {name}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((last, present))
    }

    /// Tokenize a joiner and run its prompt; it emits its first token. A
    /// request that cannot run gets its error here and does not join.
    fn prefill(&mut self, item: Item) -> Option<Sequence> {
        let result = (|| {
            let Request::Chat(request) = &item.request else {
                return Err(BackendError::InvalidInput("this model serves chat only".into()));
            };
            let prompt = self.template.render(request)?;
            let encoding = self
                .tokenizer
                .encode(prompt.as_str(), false)
                .map_err(|e| BackendError::Failed(e.to_string()))?;
            let ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
            let context = self.generation.context_length;
            let room = context.saturating_sub(ids.len());
            if room == 0 {
                return Err(BackendError::InvalidInput(format!(
                    "the prompt is {} tokens; this model's context is {context}",
                    ids.len()
                )));
            }
            let n = ids.len();
            let g = &self.generation;
            let empty = [1, g.num_key_value_heads, 0, g.head_dim];
            let past = (0..g.num_hidden_layers * 2)
                .map(|_| Tensor::from_array((empty, Vec::<f32>::new())).map(SessionInputValue::from))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BackendError::Failed(e.to_string()))?;
            let (logits, cache) = self
                .run(1, ids, vec![1; n], (0..n as i64).collect(), past)
                .map_err(|e| BackendError::Failed(format!("chat model: {e}")))?;
            let request = request.clone();
            let max_tokens = (request.max_tokens as usize).min(room);
            Ok((request, n, max_tokens, logits, cache))
        })();
        let (request, prompt_tokens, max_tokens, logits, cache) = match result {
            Ok(prefilled) => prefilled,
            Err(error) => {
                item.fail(error);
                return None;
            }
        };
        let mut sequence = Sequence {
            item,
            sampler: Sampler::new(&request),
            reply: Reply::new(&request, prompt_tokens, max_tokens),
            generated: Vec::new(),
            prefix: 0,
            read: 0,
            len: prompt_tokens,
            row: None,
            own_cache: Some(cache),
            next: 0,
            finished: false,
        };
        match sequence.advance(&logits, &self.tokenizer, self.generation.eos_token_id) {
            Ok(true) => None,
            Ok(false) => Some(sequence),
            Err(error) => {
                sequence.item.fail(error);
                None
            }
        }
    }

    /// Lay the running set's caches out as one batch: the rows that stay,
    /// then the joiners, each right-aligned to the longest.
    fn rebuild(&mut self) -> Result<(), InferError> {
        let g = &self.generation;
        let (heads, dim) = (g.num_key_value_heads, g.head_dim);
        let width = self.running.iter().map(|s| s.len).max().unwrap_or(0);
        let rows = self.running.len();
        let mut values = Vec::with_capacity(g.num_hidden_layers * 2);
        for k in 0..g.num_hidden_layers * 2 {
            let mut data = vec![0f32; rows * heads * width * dim];
            for (row, seq) in self.running.iter().enumerate() {
                let (source, source_row, source_width) = match (&seq.own_cache, seq.row, &self.cache) {
                    (Some(own), _, _) => (&own[k], 0, seq.len),
                    (None, Some(r), Some(cache)) => (&cache.values[k], r, cache.width),
                    _ => return Err(InferError::Unexpected("a running sequence lost its cache".into())),
                };
                let (_, src) = source.try_extract_tensor::<f32>()?;
                for h in 0..heads {
                    let from = ((source_row * heads + h) * source_width + source_width - seq.len) * dim;
                    let to = ((row * heads + h) * width + width - seq.len) * dim;
                    data[to..to + seq.len * dim].copy_from_slice(&src[from..from + seq.len * dim]);
                }
            }
            let tensor = Tensor::from_array(([rows, heads, width, dim], data))?;
            values.push(tensor.into_dyn());
        }
        for (row, seq) in self.running.iter_mut().enumerate() {
            seq.row = Some(row);
            seq.own_cache = None;
        }
        self.cache = Some(Cache { values, width });
        Ok(())
    }

    /// One decoding step over the running set.
    fn decode(&mut self) -> Result<(), InferError> {
        let Some(cache) = self.cache.take() else {
            return Err(InferError::Unexpected("no cache to decode from".into()));
        };
        let rows = self.running.len();
        let width = cache.width;
        let ids = self.running.iter().map(|s| i64::from(s.next)).collect();
        let positions = self.running.iter().map(|s| s.len as i64).collect();
        let mask = self
            .running
            .iter()
            .flat_map(|s| (0..=width).map(move |p| i64::from(p >= width - s.len)))
            .collect();
        let past = cache.values.iter().map(SessionInputValue::from).collect();
        let (logits, values) = self.run(rows, ids, mask, positions, past)?;
        drop(cache);
        self.cache = Some(Cache { values, width: width + 1 });
        let vocab = logits.len() / rows;
        let (tokenizer, eos) = (&self.tokenizer, self.generation.eos_token_id);
        for (row, seq) in self.running.iter_mut().enumerate() {
            seq.len += 1;
            match seq.advance(&logits[row * vocab..(row + 1) * vocab], tokenizer, eos) {
                Ok(finished) => seq.finished = finished,
                Err(error) => {
                    seq.item.fail(error);
                    seq.finished = true;
                }
            }
        }
        Ok(())
    }

    /// Let `join` in, then decode one token for every running sequence.
    pub(crate) fn step(&mut self, join: Vec<Item>) -> StepReport {
        let start = Instant::now();
        // Leave: finished or cancelled.
        let before = self.running.len();
        self.running.retain(|s| {
            if s.finished {
                return false;
            }
            if s.item.cancel.is_cancelled() {
                s.item.fail(BackendError::Cancelled);
                return false;
            }
            true
        });
        let mut changed = self.running.len() != before;
        let mut tokens = 0;
        for item in join {
            if item.cancel.is_cancelled() {
                item.fail(BackendError::Cancelled);
                continue;
            }
            if let Some(sequence) = self.prefill(item) {
                tokens += sequence.reply.prompt_tokens();
                self.running.push(sequence);
                changed = true;
            }
        }
        let prefill = start.elapsed();
        let sequences = self.running.len();
        if changed {
            if let Err(error) = self.rebuild() {
                self.fail_running(&error);
            }
        }
        if !self.running.is_empty() {
            tokens += self.running.len();
            if let Err(error) = self.decode() {
                self.fail_running(&error);
            }
        }
        let live = self.running.iter().filter(|s| !s.finished).map(|s| &s.reply);
        step_report(live, tokens, sequences, start, prefill)
    }

    fn fail_running(&mut self, error: &InferError) {
        tracing::error!(%error, "chat decoding step failed");
        for seq in self.running.drain(..) {
            seq.item.fail(BackendError::Failed(format!("chat model: {error}")));
        }
        self.cache = None;
    }
}

impl Sequence {
    /// Pick the next token from `logits`, stream what is settled, and tell
    /// whether the sequence finished (its terminal event sent).
    fn advance(&mut self, logits: &[f32], tokenizer: &Tokenizer, eos: u32) -> Result<bool, BackendError> {
        let next = self.sampler.pick(logits);
        let finish = if next == eos {
            Some(FinishReason::Stop)
        } else {
            self.generated.push(next);
            self.next = next;
            let piece = self.new_text(tokenizer)?;
            self.reply.push(&piece, &self.item)
        };
        let Some(finish_reason) = finish else { return Ok(false) };
        self.reply.finish(&self.item, finish_reason);
        Ok(true)
    }

    /// The text the newest token completes: the window's text now, less
    /// what it was before the token; nothing while it ends in a partial
    /// character (byte-level tokens).
    fn new_text(&mut self, tokenizer: &Tokenizer) -> Result<String, BackendError> {
        let decode =
            |ids: &[u32]| tokenizer.decode(ids, true).map_err(|e| BackendError::Failed(e.to_string()));
        let before = decode(&self.generated[self.prefix..self.read])?;
        let now = decode(&self.generated[self.prefix..])?;
        match now.get(before.len()..) {
            Some(piece) if now.len() > before.len() && !now.ends_with('\u{FFFD}') => {
                let piece = piece.to_owned();
                self.prefix = self.read;
                self.read = self.generated.len();
                Ok(piece)
            }
            _ => Ok(String::new()),
        }
    }
}

/// Greedy at temperature 0, else softmax sampling with temperature, top_k
/// and nucleus (top_p) from a seeded generator: the same seed, the same tokens.
struct Sampler {
    temperature: f32,
    top_p: f32,
    top_k: usize,
    rng: SplitMix64,
}

impl Sampler {
    fn new(request: &ChatRequest) -> Self {
        let seed = request.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        Sampler {
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.top_k.map_or(usize::MAX, |k| k.max(1) as usize),
            rng: SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15),
        }
    }

    /// A draw in [0, 1], as the sampler has always drawn (the same seed, the
    /// same tokens across releases).
    fn uniform(&mut self) -> f64 {
        self.rng.next_u64() as f64 / u64::MAX as f64
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        let argmax =
            logits.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        if self.temperature <= 0.0 {
            return argmax as u32;
        }
        let max = logits[argmax];
        let mut probs: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, f64::from((l - max) / self.temperature).exp()))
            .collect();
        let likelier = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1);
        if self.top_k < probs.len() {
            probs.select_nth_unstable_by(self.top_k - 1, likelier);
            probs.truncate(self.top_k);
        }
        probs.sort_by(likelier);
        let total: f64 = probs.iter().map(|p| p.1).sum();
        let (mut kept, mut mass) = (0, 0.0);
        for (_, p) in &probs {
            kept += 1;
            mass += p / total;
            if mass >= f64::from(self.top_p.clamp(0.0, 1.0)) {
                break;
            }
        }
        let nucleus = &probs[..kept.max(1)];
        let sum: f64 = nucleus.iter().map(|p| p.1).sum();
        let mut target = self.uniform() * sum;
        for (i, p) in nucleus {
            target -= p;
            if target <= 0.0 {
                return *i as u32;
            }
        }
        nucleus[nucleus.len() - 1].0 as u32
    }
}

impl Worker for ChatWorker {
    /// A whole batch: join them all, then step until every one has finished.
    fn run(&mut self, items: Vec<Item>) {
        let mut report = self.step(items);
        while report.running > 0 {
            report = self.step(Vec::new());
        }
    }

    fn step(&mut self, join: Vec<Item>) -> StepReport {
        ChatWorker::step(self, join)
    }
}
