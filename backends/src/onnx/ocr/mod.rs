//! OCR with PaddleOCR's PP-OCRv4 models, as RapidOCR runs them: DB text
//! detection (probability map → boxes), a 0°/180° orientation classifier,
//! and CRNN recognition with CTC decoding over `ppocr_keys_v1.txt`.
//!
//! `model` names a directory with `det.onnx`, `cls.onnx`, `rec.onnx` and
//! `ppocr_keys_v1.txt` (`scripts/setup.sh` fills `models/ppocr/`).

mod geometry;

use image::imageops::FilterType;
use image::RgbImage;
use ort::session::Session;
use ort::value::Tensor;

use super::config::OnnxConfig;
use super::images;
use super::runs::{self, RunLimits};
use super::session::session;
use super::worker::{InferError, Worker};
use crate::{BackendError, Item, LoadError, OcrLine, OcrOutput, Output, Request};
use geometry::Point;

/// RapidOCR 1.4.4's defaults (its config.yaml).
const MAX_SIDE: u32 = 2000;
const DET_LIMIT_MIN_SIDE: f32 = 736.0;
const DET_THRESHOLD: f32 = 0.3;
const BOX_THRESHOLD: f32 = 0.5;
const UNCLIP_RATIO: f32 = 1.6;
const MAX_CANDIDATES: usize = 1000;
const MIN_BOX: f32 = 3.0;
const CLS_SHAPE: (u32, u32) = (48, 192);
const CLS_THRESHOLD: f32 = 0.9;
const REC_HEIGHT: u32 = 48;
const REC_MIN_WIDTH: u32 = 320;
const TEXT_SCORE: f32 = 0.5;

/// Bounds on the work one image costs, whatever its shape: the detector's
/// input (a thin 2000×20 strip would otherwise grow to 73600×736), and the
/// recogniser's width (a crop wider than 80:1 is squeezed to it).
const DET_MAX_SIDE: f32 = 4000.0;
const DET_MAX_PIXELS: f32 = 4_000_000.0;
const REC_MAX_WIDTH: u32 = 3840;
/// Crops are sampled at no more than twice the recogniser's height.
const CROP_MAX_HEIGHT: f32 = 2.0 * REC_HEIGHT as f32;

/// The detector's input size for an image of `width` × `height`: RapidOCR's
/// (longer side at most 2000, then the shorter side at least 736, both
/// multiples of 32), within [`DET_MAX_SIDE`] and [`DET_MAX_PIXELS`]. The
/// detector's run is most of an image's cost.
pub fn detector_size(width: u32, height: u32) -> (u32, u32) {
    let (w0, h0) = (width.max(1) as f32, height.max(1) as f32);
    let shrink = (MAX_SIDE as f32 / w0.max(h0)).min(1.0);
    let (w1, h1) = (w0 * shrink, h0 * shrink);
    let grow = (DET_LIMIT_MIN_SIDE / w1.min(h1))
        .min(DET_MAX_SIDE / w1.max(h1))
        .min((DET_MAX_PIXELS / (w1 * h1)).sqrt())
        .max(1.0);
    let round32 = |v: f32| (((v * grow) / 32.0).round() as u32).max(1) * 32;
    (round32(w1), round32(h1))
}

pub(crate) struct OcrWorker {
    det: Session,
    cls: Session,
    rec: Session,
    /// Index 0 is the CTC blank; then the dictionary; then a space.
    characters: Vec<String>,
    max_pixels: u64,
    /// Runs of at most `inputs` crops; recognition runs: text lines of similar width together.
    limits: RunLimits,
}

impl OcrWorker {
    pub(crate) fn load(config: &OnnxConfig) -> Result<Self, LoadError> {
        let dir = &config.model;
        let keys = dir.join("ppocr_keys_v1.txt");
        let text = std::fs::read_to_string(&keys).map_err(|source| LoadError::Unreadable {
            path: keys.clone(),
            source,
            hint: "scripts/setup.sh fetches it",
        })?;
        // Not trimmed: one entry is U+3000, an ideographic space.
        let mut characters = vec![String::new()];
        characters
            .extend(text.split('\n').filter(|l| !l.is_empty()).map(|l| l.trim_end_matches('\r').to_owned()));
        characters.push(" ".into());
        Ok(OcrWorker {
            det: session(&dir.join("det.onnx"), config)?,
            cls: session(&dir.join("cls.onnx"), config)?,
            rec: session(&dir.join("rec.onnx"), config)?,
            characters,
            max_pixels: config.max_image_pixels,
            limits: RunLimits {
                inputs: config.max_run_inputs,
                cells: usize::MAX,
                padding: config.max_run_padding,
            },
        })
    }

    /// Detect, then orient and recognise the boxes a batch of crops at a
    /// time (only one batch of crops is held), stopping between runs once
    /// the item is [stopped](Item::stopped).
    fn read(&mut self, item: &Item) -> Result<OcrOutput, BackendError> {
        let Request::Ocr(request) = &item.request else {
            return Err(BackendError::InvalidInput("this model serves OCR only".into()));
        };
        let image = images::decode(&request.image, self.max_pixels)?;
        let (width, height) = (image.width(), image.height());
        let rgb = image.to_rgb8();
        drop(image);
        item.check()?;
        let boxes = self.detect(&rgb)?;
        // Runs of similar width pad least.
        let widths: Vec<usize> =
            boxes.iter().map(|corners| rec_width(crop_ratio(corners)) as usize).collect();
        let mut texts = vec![(String::new(), 0.0); boxes.len()];
        let mut turned = 0;
        for chunk in runs::plan(&widths, self.limits) {
            item.check()?;
            let mut crops: Vec<RgbImage> = chunk.iter().map(|&i| crop(&rgb, &boxes[i])).collect();
            turned += self.orient(&mut crops)?;
            item.check()?;
            for (&i, text) in chunk.iter().zip(self.recognize(&crops)?) {
                texts[i] = text;
            }
        }
        let count = boxes.len();
        let mut lines: Vec<OcrLine> = boxes
            .into_iter()
            .zip(texts)
            .filter(|(_, (text, score))| *score >= TEXT_SCORE && !text.trim().is_empty())
            .map(|(corners, (text, confidence))| OcrLine { text, confidence, corners })
            .collect();
        // Most lines upside down: the page is, and it reads bottom to top.
        if turned * 2 > count {
            lines.reverse();
        }
        Ok(OcrOutput { width, height, lines })
    }

    /// Text boxes in original-image coordinates, in reading order.
    fn detect(&mut self, image: &RgbImage) -> Result<Vec<[Point; 4]>, InferError> {
        let (w0, h0) = (image.width() as f32, image.height() as f32);
        let (dw, dh) = detector_size(image.width(), image.height());
        let resized = image::imageops::resize(image, dw, dh, FilterType::Triangle);
        let input = chw_bgr(&resized, dw);
        let outputs =
            self.det.run(ort::inputs![Tensor::from_array(([1, 3, dh as usize, dw as usize], input))?])?;
        let (shape, map) = outputs[0].try_extract_tensor::<f32>()?;
        let (mh, mw) = (shape[2] as usize, shape[3] as usize);
        // Binarise and dilate by a 2×2 kernel, as RapidOCR does.
        let on: Vec<bool> = map.iter().map(|&p| p > DET_THRESHOLD).collect();
        let mut mask = on.clone();
        for y in 0..mh {
            for x in 0..mw {
                if (x + 1 < mw && on[y * mw + x + 1])
                    || (y + 1 < mh && on[(y + 1) * mw + x])
                    || (x + 1 < mw && y + 1 < mh && on[(y + 1) * mw + x + 1])
                {
                    mask[y * mw + x] = true;
                }
            }
        }
        let (sx, sy) = (w0 / mw as f32, h0 / mh as f32);
        let mut boxes = Vec::new();
        for region in geometry::regions(&mask, mw, mh, MAX_CANDIDATES) {
            let Some(rect) = geometry::region_rect(&region) else { continue };
            if rect.short_side() < MIN_BOX {
                continue;
            }
            if geometry::box_score(map, mw, mh, &rect.corners()) < BOX_THRESHOLD {
                continue;
            }
            let grown = rect.grown(geometry::unclip_distance(&rect, UNCLIP_RATIO));
            if grown.short_side() < MIN_BOX + 2.0 {
                continue;
            }
            let corners = grown.corners().map(|[x, y]| [(x * sx).clamp(0.0, w0), (y * sy).clamp(0.0, h0)]);
            boxes.push(corners);
        }
        // Top to bottom; left to right within ~10 px of the same line.
        boxes.sort_by(|a, b| a[0][1].total_cmp(&b[0][1]).then(a[0][0].total_cmp(&b[0][0])));
        for i in 1..boxes.len() {
            let mut j = i;
            while j > 0
                && (boxes[j][0][1] - boxes[j - 1][0][1]).abs() < 10.0
                && boxes[j][0][0] < boxes[j - 1][0][0]
            {
                boxes.swap(j, j - 1);
                j -= 1;
            }
        }
        Ok(boxes)
    }

    /// Turn crops the classifier reads as upside down. A long line squeezed
    /// into the classifier's 192×48 input loses its letters' shapes, so a
    /// line wider than 4:1 is judged on up to three 4:1 windows (start,
    /// middle, end) whose probabilities are averaged.
    /// Returns how many crops were turned.
    fn orient(&mut self, crops: &mut [RgbImage]) -> Result<usize, InferError> {
        let (h, w) = CLS_SHAPE;
        let mut windows: Vec<(usize, RgbImage)> = Vec::new();
        for (i, crop) in crops.iter().enumerate() {
            let side = crop.height() * (w / h);
            if crop.width() <= side {
                windows.push((i, crop.clone()));
                continue;
            }
            let last = crop.width() - side;
            for x in [0, last / 2, last] {
                windows.push((i, image::imageops::crop_imm(crop, x, 0, side, crop.height()).to_image()));
            }
        }
        let mut upside_down = vec![(0f32, 0u32); crops.len()];
        for chunk in windows.chunks(self.limits.inputs) {
            let input: Vec<f32> = chunk.iter().flat_map(|(_, c)| fit(c, h, w)).collect();
            let input = Tensor::from_array(([chunk.len(), 3, h as usize, w as usize], input))?;
            let outputs = self.cls.run(ort::inputs![input])?;
            let (_, scores) = outputs[0].try_extract_tensor::<f32>()?;
            for ((i, _), p) in chunk.iter().zip(scores.chunks_exact(2)) {
                upside_down[*i].0 += p[1];
                upside_down[*i].1 += 1;
            }
        }
        let mut turned = 0;
        for (crop, (sum, n)) in crops.iter_mut().zip(upside_down) {
            if n > 0 && sum / n as f32 > CLS_THRESHOLD {
                image::imageops::rotate180_in_place(crop);
                turned += 1;
            }
        }
        Ok(turned)
    }

    /// Text and confidence per crop, in order.
    fn recognize(&mut self, crops: &[RgbImage]) -> Result<Vec<(String, f32)>, InferError> {
        let ratio = |c: &RgbImage| c.width() as f32 / c.height().max(1) as f32;
        let order: Vec<usize> = (0..crops.len()).collect();
        let mut out = vec![(String::new(), 0.0); crops.len()];
        for chunk in order.chunks(self.limits.inputs) {
            let widest = chunk.iter().map(|&i| ratio(&crops[i])).fold(0.0, f32::max);
            let width = rec_width(widest);
            let input: Vec<f32> = chunk.iter().flat_map(|&i| fit(&crops[i], REC_HEIGHT, width)).collect();
            let tensor =
                Tensor::from_array(([chunk.len(), 3, REC_HEIGHT as usize, width as usize], input.clone()))?;
            let outputs = self.rec.run(ort::inputs![tensor])?;
            let (shape, probs) = outputs[0].try_extract_tensor::<f32>()?;
            let (steps, classes) = (shape[1] as usize, shape[2] as usize);
            if classes != self.characters.len() {
                return Err(InferError::Unexpected(format!(
                    "recogniser has {classes} classes; the dictionary gives {}",
                    self.characters.len()
                )));
            }
            let (h, w) = (REC_HEIGHT as usize, width as usize);
            for (row, &i) in chunk.iter().enumerate() {
                let chars = ctc(
                    &self.characters,
                    &probs[row * steps * classes..(row + 1) * steps * classes],
                    classes,
                );
                let used = ((REC_HEIGHT as f32 * ratio(&crops[i])).ceil() as usize).clamp(1, w);
                let runs = blank_runs(&input[row * 3 * h * w..(row + 1) * 3 * h * w], h, w, used);
                let text = with_spaces(&chars, &runs, w as f32 / steps as f32);
                let confidence = chars.iter().map(|c| c.2).sum::<f32>() / chars.len().max(1) as f32;
                out[i] = (text, confidence);
            }
        }
        Ok(out)
    }
}

/// Greedy CTC: best class per step, repeats merged, blanks dropped. Each
/// character comes with its step and probability.
fn ctc(characters: &[String], probs: &[f32], classes: usize) -> Vec<(usize, String, f32)> {
    let mut out = Vec::new();
    let mut previous = 0usize;
    for (step, row) in probs.chunks_exact(classes).enumerate() {
        let (best, p) =
            row.iter().enumerate().fold((0, f32::MIN), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
        if best != 0 && best != previous {
            out.push((step, characters[best].clone(), p));
        }
        previous = best;
    }
    out
}

/// Runs of ink-free columns in a recogniser input (`height` × `width` CHW,
/// the first `used` columns holding the image), as `(start, end)` columns.
fn blank_runs(input: &[f32], height: usize, width: usize, used: usize) -> Vec<(usize, usize)> {
    let plane = height * width;
    let luminance = |x: usize, y: usize| {
        (input[y * width + x] + input[plane + y * width + x] + input[2 * plane + y * width + x]) / 3.0
    };
    let mut all: Vec<f32> =
        (0..used).flat_map(|x| (0..height).map(move |y| (x, y))).map(|(x, y)| luminance(x, y)).collect();
    if all.is_empty() {
        return Vec::new();
    }
    all.sort_by(f32::total_cmp);
    let background = all[all.len() / 2];
    // Ink is whatever lies far from the background, on the text's side.
    let (lo, hi) = (all[0], all[all.len() - 1]);
    let ink = |v: f32| {
        if background - lo > hi - background {
            v < background - 0.4 * (background - lo)
        } else {
            v > background + 0.4 * (hi - background)
        }
    };
    let mut runs = Vec::new();
    let mut start = None;
    for x in 0..used {
        let blank = (0..height).all(|y| !ink(luminance(x, y)));
        match (blank, start) {
            (true, None) => start = Some(x),
            (false, Some(s)) => {
                runs.push((s, x));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, used));
    }
    runs
}

/// The recognised text, with a space wherever a gap in the ink at least
/// `WORD_GAP` × the line's mean character advance separates two letters the
/// model ran together (PP-OCR's Chinese-and-English model often drops the
/// spaces between English words). Never between CJK characters.
fn with_spaces(chars: &[(usize, String, f32)], runs: &[(usize, usize)], px_per_step: f32) -> String {
    const WORD_GAP: f32 = 0.62;
    let letters: Vec<usize> = chars.iter().filter(|c| c.1 != " ").map(|c| c.0).collect();
    let advance = match (letters.first(), letters.last()) {
        (Some(first), Some(last)) if letters.len() > 2 => {
            (last - first) as f32 * px_per_step / (letters.len() - 1) as f32
        }
        _ => return chars.iter().map(|c| c.1.as_str()).collect(),
    };
    let wide: Vec<&(usize, usize)> =
        runs.iter().filter(|(s, e)| (e - s) as f32 >= WORD_GAP * advance).collect();
    let mut text = String::new();
    for (i, (step, c, _)) in chars.iter().enumerate() {
        if let Some((previous_step, previous, _)) = i.checked_sub(1).map(|j| &chars[j]) {
            let latin = |s: &str| s.chars().all(|ch| (ch as u32) < 0x2E80);
            let (from, to) =
                ((*previous_step as f32 + 0.5) * px_per_step, (*step as f32 + 0.5) * px_per_step);
            let gap = wide.iter().any(|(s, e)| *s as f32 >= from && (*e as f32) <= to);
            if gap && previous != " " && c != " " && latin(previous) && latin(c) {
                text.push(' ');
            }
        }
        text.push_str(c);
    }
    text
}

/// `image` as CHW floats in BGR order, `(x/255 - 0.5) / 0.5`, right-padded
/// with zeros to `width` columns.
fn chw_bgr(image: &RgbImage, width: u32) -> Vec<f32> {
    let (w, h) = (image.width().min(width) as usize, image.height() as usize);
    let width = width as usize;
    let mut out = vec![0f32; 3 * h * width];
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = image.get_pixel(x as u32, y as u32).0;
            for (c, v) in [b, g, r].into_iter().enumerate() {
                out[c * h * width + y * width + x] = (f32::from(v) / 255.0 - 0.5) / 0.5;
            }
        }
    }
    out
}

/// Resize to `height`, keeping the aspect ratio up to `width`, and pad.
fn fit(crop: &RgbImage, height: u32, width: u32) -> Vec<f32> {
    let ratio = crop.width() as f32 / crop.height().max(1) as f32;
    let w = ((height as f32 * ratio).ceil() as u32).clamp(1, width);
    chw_bgr(&image::imageops::resize(crop, w, height, FilterType::Triangle), width)
}

/// The box's content as an upright image (bilinear sampling of the
/// parallelogram spanned by its corners); tall crops are turned 90°.
/// The crop is sampled with its text at most [`CROP_MAX_HEIGHT`] pixels
/// high and its length within twice the recogniser's widest input, so that
/// its size does not grow with the image's.
fn crop(image: &RgbImage, corners: &[Point; 4]) -> RgbImage {
    let [tl, tr, _, bl] = *corners;
    let (full_w, full_h) = crop_size(corners);
    let (text_h, text_w) = if full_h >= 1.5 * full_w { (full_w, full_h) } else { (full_h, full_w) };
    let scale = (CROP_MAX_HEIGHT / text_h).min(2.0 * REC_MAX_WIDTH as f32 / text_w).min(1.0);
    let w = (full_w * scale).round().max(1.0) as u32;
    let h = (full_h * scale).round().max(1.0) as u32;
    let (ux, uy) = ((tr[0] - tl[0]) / w as f32, (tr[1] - tl[1]) / w as f32);
    let (vx, vy) = ((bl[0] - tl[0]) / h as f32, (bl[1] - tl[1]) / h as f32);
    let out = RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        let sx = tl[0] + ux * fx + vx * fy - 0.5;
        let sy = tl[1] + uy * fx + vy * fy - 0.5;
        bilinear(image, sx, sy)
    });
    if h as f32 >= 1.5 * w as f32 {
        image::imageops::rotate270(&out)
    } else {
        out
    }
}

/// A box's width and height (along its top and left edges).
fn crop_size(corners: &[Point; 4]) -> (f32, f32) {
    let dist = |a: Point, b: Point| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let [tl, tr, br, bl] = *corners;
    (dist(tl, tr).max(dist(bl, br)).round().max(1.0), dist(tl, bl).max(dist(tr, br)).round().max(1.0))
}

/// The box's text length over its height, once upright.
/// The recogniser's input width for a crop of this width ÷ height: crops
/// are scaled to `REC_HEIGHT` and padded to at least `REC_MIN_WIDTH`.
fn rec_width(ratio: f32) -> u32 {
    ((REC_HEIGHT as f32 * ratio.max(REC_MIN_WIDTH as f32 / REC_HEIGHT as f32)) as u32).min(REC_MAX_WIDTH)
}

fn crop_ratio(corners: &[Point; 4]) -> f32 {
    let (w, h) = crop_size(corners);
    if h >= 1.5 * w {
        h / w
    } else {
        w / h
    }
}

fn bilinear(image: &RgbImage, x: f32, y: f32) -> image::Rgb<u8> {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let px = |xi: i64, yi: i64| image.get_pixel(xi.clamp(0, w - 1) as u32, yi.clamp(0, h - 1) as u32).0;
    let (x0, y0) = (x0 as i64, y0 as i64);
    let (a, b, c, d) = (px(x0, y0), px(x0 + 1, y0), px(x0, y0 + 1), px(x0 + 1, y0 + 1));
    let mut out = [0u8; 3];
    for i in 0..3 {
        let top = f32::from(a[i]) * (1.0 - fx) + f32::from(b[i]) * fx;
        let bottom = f32::from(c[i]) * (1.0 - fx) + f32::from(d[i]) * fx;
        out[i] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    image::Rgb(out)
}

impl Worker for OcrWorker {
    fn run(&mut self, items: Vec<Item>) {
        // Each image is its own detector run (sizes differ); crops of one
        // image are classified and recognised in batches.
        for item in items {
            match self.read(&item) {
                Ok(output) => item.done(Output::Ocr(output)),
                Err(error) => item.fail(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detector_input_is_bounded_whatever_the_shape() {
        // RapidOCR's sizes where they are already bounded.
        assert_eq!(detector_size(1000, 500), (1472, 736));
        assert_eq!(detector_size(3000, 2000), (2016, 1344));
        // Thin strips no longer grow the long side without bound.
        for (w, h) in [(2000, 20), (20, 2000), (250, 100_000), (100_000, 250), (5000, 1), (1, 1)] {
            let (dw, dh) = detector_size(w, h);
            assert!(
                dw as f32 <= DET_MAX_SIDE + 32.0 && dh as f32 <= DET_MAX_SIDE + 32.0,
                "{w}x{h}: {dw}x{dh}"
            );
            assert!(((dw * dh) as f32) <= DET_MAX_PIXELS * 1.1, "{w}x{h}: {dw}x{dh}");
            assert!(dw >= 32 && dh >= 32);
        }
    }

    #[test]
    fn crops_are_sampled_at_the_recogniser_scale() {
        let image = RgbImage::new(4000, 3000);
        // A box covering the whole page: its crop is not the whole page.
        let page = [[0.0, 0.0], [4000.0, 0.0], [4000.0, 3000.0], [0.0, 3000.0]];
        let out = crop(&image, &page);
        assert!(
            out.height() as f32 <= CROP_MAX_HEIGHT && out.width() <= 2 * REC_MAX_WIDTH,
            "{:?}",
            out.dimensions()
        );
        // A thin line keeps its aspect ratio up to the recogniser's width.
        let line = [[0.0, 0.0], [4000.0, 0.0], [4000.0, 30.0], [0.0, 30.0]];
        assert_eq!(crop(&image, &line).dimensions(), (4000, 30));
    }
}
