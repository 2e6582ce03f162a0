//! Text embeddings with a BERT-style encoder: tokenize, pad the batch to its
//! longest sequence, one run, mean-pool `last_hidden_state` over the
//! attention mask, L2-normalise (sentence-transformers' recipe).

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;
use tokenizers::Tokenizer;

use super::config::OnnxConfig;
use super::runs::{next_run, RunLimits};
use super::session::session;
use super::worker::{fail_all, InferError, Worker};
use crate::{BackendError, EmbeddingInput, EmbeddingsOutput, Item, LoadError, Output, Request};

pub(crate) struct EmbeddingsWorker {
    session: Session,
    tokenizer: Tokenizer,
    /// What the tokenizer's post-processor puts around a sequence.
    specials: Specials,
    vocab: usize,
    max_tokens: usize,
    truncate: bool,
    limits: RunLimits,
    /// The model takes `token_type_ids` (most BERT exports do).
    token_types: bool,
}

/// The special tokens a tokenizer's post-processor puts before and after one
/// sequence (`[CLS]`…`[SEP]` for BERT, `<s>`…`</s>` for XLM-R models such
/// as e5 and bge-m3, none for some), and the id that pads a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Specials {
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    pad: u32,
}

impl Specials {
    /// Read from the tokenizer, with its padding and truncation switched off
    /// (a padded probe would show pads as specials): a probe text's encoding
    /// with special tokens shows them around its content. The pad id is
    /// `pad` (the tokenizer's padding setting), else its `[PAD]` or `<pad>`
    /// token (any id will do: padded positions are masked).
    fn of(tokenizer: &Tokenizer, pad: Option<u32>) -> Result<Specials, String> {
        let probe = tokenizer.encode("a", true).map_err(|e| e.to_string())?;
        let (ids, mask) = (probe.get_ids(), probe.get_special_tokens_mask());
        let lead = mask.iter().take_while(|&&m| m == 1).count();
        let trail = mask[lead..].iter().rev().take_while(|&&m| m == 1).count();
        if lead + trail >= ids.len() {
            return Err("the tokenizer turns text into special tokens only".into());
        }
        let pad =
            pad.or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| tokenizer.token_to_id(t))).unwrap_or(0);
        Ok(Specials { prefix: ids[..lead].to_vec(), suffix: ids[ids.len() - trail..].to_vec(), pad })
    }
}

fn load_tokenizer(path: &Path) -> Result<(Tokenizer, Specials), LoadError> {
    let tokenizer =
        Tokenizer::from_file(path).map_err(|e| LoadError::Model(format!("{}: {e}", path.display())))?;
    prepare(tokenizer).map_err(|e| LoadError::Model(format!("{}: {e}", path.display())))
}

/// Truncation and padding are done here, per batch, not by the tokenizer:
/// both are switched off, and the special tokens read.
fn prepare(mut tokenizer: Tokenizer) -> Result<(Tokenizer, Specials), String> {
    let pad = tokenizer.get_padding().map(|p| p.pad_id);
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| e.to_string())?;
    let specials = Specials::of(&tokenizer, pad)?;
    Ok((tokenizer, specials))
}

impl EmbeddingsWorker {
    pub(crate) fn load(config: &OnnxConfig) -> Result<Self, LoadError> {
        let path =
            config.tokenizer.as_deref().ok_or(LoadError::Settings("text-embeddings needs a tokenizer"))?;
        let (tokenizer, specials) = load_tokenizer(path)?;
        let session = session(&config.model, config)?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if !names.contains(&"input_ids") || !names.contains(&"attention_mask") {
            return Err(LoadError::Model(format!(
                "{}: expected inputs input_ids and attention_mask, found {names:?}",
                config.model.display()
            )));
        }
        let token_types = names.contains(&"token_type_ids");
        Ok(EmbeddingsWorker {
            vocab: tokenizer.get_vocab_size(true),
            session,
            tokenizer,
            specials,
            max_tokens: config.max_tokens,
            truncate: config.truncate,
            limits: RunLimits {
                inputs: config.max_run_inputs,
                cells: config.max_run_tokens,
                padding: config.max_run_padding,
            },
            token_types,
        })
    }

    /// One input as the model's token ids, special tokens included.
    fn tokens(&self, index: usize, input: &EmbeddingInput) -> Result<Vec<u32>, BackendError> {
        let encoded;
        let content: &[u32] = match input {
            EmbeddingInput::Text(text) => {
                encoded = self.tokenizer.encode(text.as_str(), false).map_err(|e| {
                    BackendError::InvalidInput(format!("input {index} cannot be tokenized: {e}"))
                })?;
                encoded.get_ids()
            }
            EmbeddingInput::Tokens(content) => {
                // Clients may send another tokenizer's ids: check every one.
                if let Some(bad) = content.iter().find(|&&t| t as usize >= self.vocab) {
                    return Err(BackendError::InvalidInput(format!(
                        "input {index}: token id {bad} is outside this model's vocabulary (0..{})",
                        self.vocab
                    )));
                }
                content
            }
        };
        let Specials { prefix, suffix, .. } = &self.specials;
        let room = self.max_tokens.saturating_sub(prefix.len() + suffix.len());
        if content.len() > room && !self.truncate {
            return Err(BackendError::InvalidInput(format!(
                "input {index} is {} tokens long; this model takes at most {}",
                content.len() + prefix.len() + suffix.len(),
                self.max_tokens
            )));
        }
        let content = &content[..content.len().min(room)];
        let mut ids = Vec::with_capacity(prefix.len() + content.len() + suffix.len());
        ids.extend_from_slice(prefix);
        ids.extend_from_slice(content);
        ids.extend_from_slice(suffix);
        Ok(ids)
    }

    /// Embed sequences (already tokenized) in runs of similar length: at
    /// most `max_run_inputs` sequences, `max_run_tokens` padded tokens and
    /// `max_run_padding` padding (one sequence at least). Before each run, sequences whose owner (an index
    /// into `items`, per sequence) has [stopped](Item::stopped) are dropped:
    /// their vectors stay empty.
    fn embed(
        &mut self,
        sequences: &[&[u32]],
        owners: &[usize],
        items: &[&Item],
    ) -> Result<Vec<Vec<f32>>, InferError> {
        // Similar lengths together: less padding per run.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| sequences[i].len());
        let mut vectors = vec![Vec::new(); sequences.len()];
        let mut stopped: Vec<bool> = items.iter().map(|item| item.stopped()).collect();
        let mut rest = order.as_slice();
        while !rest.is_empty() {
            for (flag, item) in stopped.iter_mut().zip(items.iter()) {
                *flag = *flag || item.stopped();
            }
            let live: Vec<usize> = rest.iter().copied().filter(|&i| !stopped[owners[i]]).collect();
            let take = next_run(live.iter().map(|&i| sequences[i].len()), self.limits);
            let Some(&last) = live.get(take.saturating_sub(1)) else { break };
            let batch: Vec<&[u32]> = live[..take].iter().map(|&i| sequences[i]).collect();
            for (vector, &i) in self.run(&batch)?.into_iter().zip(&live) {
                vectors[i] = vector;
            }
            let done = rest.iter().position(|&i| i == last).map_or(rest.len(), |at| at + 1);
            rest = &rest[done..];
        }
        Ok(vectors)
    }

    fn run(&mut self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, InferError> {
        let rows = batch.len();
        let width = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![i64::from(self.specials.pad); rows * width];
        let mut mask = vec![0i64; rows * width];
        for (row, sequence) in batch.iter().enumerate() {
            for (col, &id) in sequence.iter().enumerate() {
                ids[row * width + col] = i64::from(id);
                mask[row * width + col] = 1;
            }
        }
        let shape = [rows, width];
        let tensor = |data: Vec<i64>| Tensor::from_array((shape, data));
        let mut inputs = ort::inputs![
            "input_ids" => tensor(ids)?,
            "attention_mask" => tensor(mask.clone())?,
        ];
        if self.token_types {
            inputs.push(("token_type_ids".into(), tensor(vec![0; rows * width])?.into()));
        }
        let outputs = self.session.run(inputs)?;
        let hidden = outputs.get("last_hidden_state").unwrap_or(&outputs[0]);
        let (dims, values) = hidden.try_extract_tensor::<f32>()?;
        let [r, t, d] = dims[..] else {
            return Err(InferError::Unexpected(format!(
                "expected last_hidden_state [batch, tokens, dim], got {dims:?}"
            )));
        };
        if r as usize != rows || t as usize != width {
            return Err(InferError::Unexpected(format!(
                "output shape {dims:?} does not match the batch [{rows}, {width}]"
            )));
        }
        let d = d as usize;
        Ok((0..rows)
            .map(|row| {
                pool(
                    &values[row * width * d..(row + 1) * width * d],
                    &mask[row * width..(row + 1) * width],
                    d,
                )
            })
            .collect())
    }
}

/// Mean over the unmasked tokens, then L2 normalisation.
fn pool(hidden: &[f32], mask: &[i64], dim: usize) -> Vec<f32> {
    let mut sum = vec![0f32; dim];
    let mut count = 0f32;
    for (token, &m) in hidden.chunks_exact(dim).zip(mask) {
        if m != 0 {
            count += 1.0;
            for (s, h) in sum.iter_mut().zip(token) {
                *s += h;
            }
        }
    }
    let count = count.max(1e-9);
    sum.iter_mut().for_each(|s| *s /= count);
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    sum.iter_mut().for_each(|s| *s /= norm);
    sum
}

impl Worker for EmbeddingsWorker {
    fn run(&mut self, items: Vec<Item>) {
        // Tokenize every item; a bad item fails alone.
        let mut accepted: Vec<(Item, Vec<Vec<u32>>, Option<u32>)> = Vec::with_capacity(items.len());
        for item in items {
            let Request::Embeddings(request) = &item.request else {
                item.fail(BackendError::InvalidInput("this model serves embeddings only".into()));
                continue;
            };
            // Long texts take a while to tokenize: stop between inputs too.
            let tokens: Result<Vec<Vec<u32>>, BackendError> = request
                .inputs
                .iter()
                .enumerate()
                .map(|(i, input)| {
                    if item.stopped() {
                        return Err(BackendError::Cancelled);
                    }
                    self.tokens(i, input)
                })
                .collect();
            match tokens {
                Ok(tokens) => {
                    let dimensions = request.dimensions;
                    accepted.push((item, tokens, dimensions));
                }
                Err(error) => item.fail(error),
            }
        }
        let sequences: Vec<&[u32]> =
            accepted.iter().flat_map(|(_, tokens, _)| tokens.iter().map(Vec::as_slice)).collect();
        if sequences.is_empty() {
            return;
        }
        let owners: Vec<usize> = accepted
            .iter()
            .enumerate()
            .flat_map(|(i, (_, tokens, _))| std::iter::repeat_n(i, tokens.len()))
            .collect();
        let members: Vec<&Item> = accepted.iter().map(|(item, _, _)| item).collect();
        let vectors = match self.embed(&sequences, &owners, &members) {
            Ok(vectors) => vectors,
            Err(error) => {
                let items: Vec<Item> = accepted.into_iter().map(|(item, _, _)| item).collect();
                return fail_all(&items, &error);
            }
        };
        let mut vectors = vectors.into_iter();
        for (item, tokens, dimensions) in accepted {
            let mine: Vec<Vec<f32>> = vectors.by_ref().take(tokens.len()).collect();
            if mine.iter().any(Vec::is_empty) {
                item.fail(BackendError::Cancelled);
                continue;
            }
            let native = mine.first().map_or(0, Vec::len);
            if let Some(d) = dimensions.filter(|&d| d as usize != native) {
                item.fail(BackendError::InvalidInput(format!(
                    "this model makes {native}-dimensional vectors and cannot shorten them (dimensions = {d})"
                )));
                continue;
            }
            let prompt_tokens = tokens.iter().map(|t| t.len() as u32).sum();
            item.done(Output::Embeddings(EmbeddingsOutput { vectors: mine, prompt_tokens }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{prepare, Specials};
    use tokenizers::Tokenizer;

    /// A word-level tokenizer with the post-processor `post` (JSON).
    fn tokenizer(vocab: &str, post: &str) -> Tokenizer {
        padded(vocab, post, "null")
    }

    /// The same with the padding setting `padding` (JSON).
    fn padded(vocab: &str, post: &str, padding: &str) -> Tokenizer {
        let json = format!(
            r#"{{"version":"1.0","truncation":null,"padding":{padding},"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{{"type":"Whitespace"}},"post_processor":{post},"decoder":null,
            "model":{{"type":"WordLevel","vocab":{vocab},"unk_token":"<unk>"}}}}"#
        );
        Tokenizer::from_bytes(json.as_bytes()).unwrap()
    }

    #[test]
    fn special_tokens_come_from_the_tokenizers_post_processor() {
        // XLM-R style (e5, bge-m3, multilingual MiniLM): <s> … </s>, <pad>.
        let xlmr = tokenizer(
            r#"{"<s>":0,"<pad>":1,"</s>":2,"<unk>":3,"a":4,"b":5}"#,
            r#"{"type":"RobertaProcessing","sep":["</s>",2],"cls":["<s>",0],"trim_offsets":true,"add_prefix_space":true}"#,
        );
        assert_eq!(Specials::of(&xlmr, None).unwrap(), Specials { prefix: vec![0], suffix: vec![2], pad: 1 });
        // BERT style: [CLS] … [SEP], [PAD].
        let bert = tokenizer(
            r#"{"[PAD]":0,"<unk>":1,"[CLS]":2,"[SEP]":3,"a":4}"#,
            r#"{"type":"BertProcessing","sep":["[SEP]",3],"cls":["[CLS]",2]}"#,
        );
        assert_eq!(Specials::of(&bert, None).unwrap(), Specials { prefix: vec![2], suffix: vec![3], pad: 0 });
        // The padding setting's id wins.
        assert_eq!(Specials::of(&bert, Some(4)).unwrap().pad, 4);
        // A tokenizer file that pads to a fixed length (all-MiniLM-L6-v2's
        // does, to 128): the pads are not taken for specials.
        let fixed = padded(
            r#"{"[PAD]":0,"<unk>":1,"[CLS]":2,"[SEP]":3,"a":4}"#,
            r#"{"type":"BertProcessing","sep":["[SEP]",3],"cls":["[CLS]",2]}"#,
            r#"{"strategy":{"Fixed":8},"direction":"Right","pad_to_multiple_of":null,"pad_id":0,"pad_type_id":0,"pad_token":"[PAD]"}"#,
        );
        let (fixed, specials) = prepare(fixed).unwrap();
        assert_eq!(specials, Specials { prefix: vec![2], suffix: vec![3], pad: 0 });
        assert_eq!(fixed.encode("a a", true).unwrap().get_ids(), [2, 4, 4, 3]);
        // No post-processor: nothing around the text, padding with 0.
        let bare = tokenizer(r#"{"<unk>":0,"a":1}"#, "null");
        assert_eq!(Specials::of(&bare, None).unwrap(), Specials { prefix: vec![], suffix: vec![], pad: 0 });
    }
}
