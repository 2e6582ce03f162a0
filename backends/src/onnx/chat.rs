//! Chat generation with a decoder-only model exported with a KV cache
//! (SmolLM2-135M-Instruct, converted by `scripts/setup.sh`): the model's
//! chat template (minijinja), tokenization, prefill and step-by-step decode
//! with the cache, greedy or sampled (temperature, top_p, reproducible
//! `seed`), stop sequences, token streaming, and cancellation checked at
//! every step.
//!
//! `model` names the directory with `model.onnx`, `tokenizer.json`,
//! `chat_template.jinja` and `generation.json`. Jobs of a batch run one
//! after another on a worker for now; continuous batching across requests
//! is the next step.

use std::path::Path;

use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use tokenizers::Tokenizer;

use super::{session, OnnxConfig, Worker};
use crate::{BackendError, ChatOutput, ChatRequest, Event, FinishReason, Item, Output, Request};

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
    template: String,
    generation: Generation,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (scripts/setup.sh converts the chat model)", path.display()))
}

impl ChatWorker {
    pub(crate) fn load(config: &OnnxConfig) -> Result<Self, String> {
        let dir = &config.model;
        let generation: Generation = serde_json::from_str(&read(&dir.join("generation.json"))?)
            .map_err(|e| format!("generation.json: {e}"))?;
        let tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| format!("tokenizer.json: {e}"))?;
        Ok(ChatWorker {
            session: session(&dir.join("model.onnx"), config)?,
            tokenizer,
            template: read(&dir.join("chat_template.jinja"))?,
            generation,
        })
    }

    /// The prompt as the model's template renders it.
    pub(crate) fn prompt(&self, request: &ChatRequest) -> Result<String, BackendError> {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", &self.template)
            .map_err(|e| BackendError::Failed(format!("chat template: {e}")))?;
        let messages: Vec<minijinja::Value> = request
            .messages
            .iter()
            .map(|m| minijinja::context! { role => m.role.clone(), content => m.content.clone() })
            .collect();
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! { messages => messages, add_generation_prompt => true })
            })
            .map_err(|e| BackendError::Failed(format!("chat template: {e}")))
    }

    /// Logits of the last position, and the cache after `ids` at `position`.
    fn forward(
        &mut self,
        ids: &[u32],
        position: usize,
        cache: &mut Vec<(Vec<i64>, Vec<f32>)>,
    ) -> Result<Vec<f32>, String> {
        let g = &self.generation;
        let n = ids.len();
        let past = position;
        let e = |e: ort::Error| e.to_string();
        let mut inputs: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                "input_ids".into(),
                Tensor::from_array(([1, n], ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>()))
                    .map_err(e)?
                    .into(),
            ),
            (
                "attention_mask".into(),
                Tensor::from_array(([1, past + n], vec![1i64; past + n])).map_err(e)?.into(),
            ),
            (
                "position_ids".into(),
                Tensor::from_array(([1, n], (past..past + n).map(|p| p as i64).collect::<Vec<_>>()))
                    .map_err(e)?
                    .into(),
            ),
        ];
        for layer in 0..g.num_hidden_layers {
            for (k, kind) in ["key", "value"].iter().enumerate() {
                let (shape, data) = cache.get(layer * 2 + k).cloned().unwrap_or_else(|| {
                    (vec![1, g.num_key_value_heads as i64, 0, g.head_dim as i64], Vec::new())
                });
                inputs.push((
                    format!("past_key_values.{layer}.{kind}").into(),
                    Tensor::from_array((shape, data)).map_err(e)?.into(),
                ));
            }
        }
        let outputs = self.session.run(inputs).map_err(e)?;
        let (shape, logits) = outputs["logits"].try_extract_tensor::<f32>().map_err(e)?;
        let vocab = shape[2] as usize;
        let last = logits[(n - 1) * vocab..n * vocab].to_vec();
        cache.clear();
        for layer in 0..g.num_hidden_layers {
            for kind in ["key", "value"] {
                let (shape, data) = outputs[format!("present.{layer}.{kind}").as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(e)?;
                cache.push((shape.to_vec(), data.to_vec()));
            }
        }
        Ok(last)
    }

    fn generate(&mut self, item: &Item) -> Result<ChatOutput, BackendError> {
        let Request::Chat(request) = &item.request else {
            return Err(BackendError::InvalidInput("this model serves chat only".into()));
        };
        let prompt = self.prompt(request)?;
        let encoding =
            self.tokenizer.encode(prompt.as_str(), false).map_err(|e| BackendError::Failed(e.to_string()))?;
        let prompt_ids: Vec<u32> = encoding.get_ids().to_vec();
        let room = self.generation.context_length.saturating_sub(prompt_ids.len());
        if room == 0 {
            return Err(BackendError::InvalidInput(format!(
                "the prompt is {} tokens; this model's context is {}",
                prompt_ids.len(),
                self.generation.context_length
            )));
        }
        let max_tokens = (request.max_tokens as usize).min(room);
        let mut sampler = Sampler::new(request);
        let mut cache = Vec::new();
        let failed = |e: String| BackendError::Failed(format!("chat model: {e}"));
        let mut logits = self.forward(&prompt_ids, 0, &mut cache).map_err(failed)?;
        let mut generated: Vec<u32> = Vec::new();
        let mut sent = 0usize; // bytes of text already streamed
        let mut finish = FinishReason::Length;
        let mut text = String::new();
        while generated.len() < max_tokens {
            if item.cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            let next = sampler.pick(&logits);
            if next == self.generation.eos_token_id {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(next);
            text =
                self.tokenizer.decode(&generated, true).map_err(|e| BackendError::Failed(e.to_string()))?;
            if let Some(cut) =
                request.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
            {
                text.truncate(cut);
                finish = FinishReason::Stop;
                break;
            }
            // Stream what is settled: not a partial UTF-8 character, and not
            // the start of a stop sequence that the next token may complete.
            let hold = request.stop.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0);
            let safe = text.len().saturating_sub(hold);
            let settled = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .filter(|&i| i <= safe)
                .max()
                .unwrap_or(0);
            if request.stream && settled > sent && !text[..settled].ends_with('\u{FFFD}') {
                item.send(Event::Delta(text[sent..settled].to_owned()));
                sent = settled;
            }
            if generated.len() == max_tokens {
                break;
            }
            logits =
                self.forward(&[next], prompt_ids.len() + generated.len() - 1, &mut cache).map_err(failed)?;
        }
        if request.stream && text.len() > sent {
            item.send(Event::Delta(text[sent..].to_owned()));
        }
        Ok(ChatOutput {
            text,
            finish_reason: finish,
            prompt_tokens: prompt_ids.len() as u32,
            completion_tokens: generated.len() as u32,
        })
    }
}

/// Greedy at temperature 0, else softmax sampling with temperature and
/// nucleus (top_p) from a seeded generator: the same seed, the same tokens.
struct Sampler {
    temperature: f32,
    top_p: f32,
    state: u64,
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
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn uniform(&mut self) -> f64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
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
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
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
    fn run(&mut self, items: Vec<Item>) {
        for item in items {
            if item.cancel.is_cancelled() {
                item.fail(BackendError::Cancelled);
                continue;
            }
            match self.generate(&item) {
                Ok(output) => item.done(Output::Chat(output)),
                Err(error) => item.fail(error),
            }
        }
    }
}
