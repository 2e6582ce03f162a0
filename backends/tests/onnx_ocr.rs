//! OCR on the real PP-OCRv4 models, on images rendered at test time with a
//! Debian font (fonts-dejavu-core) and known English text. Needs
//! `scripts/setup.sh` (models/, .ort/).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Cursor;
use std::path::PathBuf;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use bytes::Bytes;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use infergate_backends::onnx::{OnnxBackend, OnnxConfig};
use infergate_backends::{Backend, BackendError, Event, Item, OcrOutput, OcrRequest, Output, Request};
use tokio_util::sync::CancellationToken;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const LINES: [&str; 5] = [
    "The quick brown fox jumps over the lazy dog.",
    "Invoice 2026-11-27: total due 1,284.50 EUR",
    "Deadline-aware scheduling beats FIFO at twice capacity",
    "Contact: ops@example.com or +49 30 1234567",
    "Pack my box with five dozen liquor jugs!",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn backend() -> OnnxBackend {
    let text = format!(
        "pipeline = \"ocr\"\nmodel = \"{}\"\nintra_threads = 2",
        root().join("models/ppocr").display()
    );
    let config: OnnxConfig = toml::from_str(&text).unwrap();
    OnnxBackend::load("ocr", &config).unwrap()
}

/// Dark text on white, one line per entry, `size` px high.
fn render(lines: &[&str], size: f32) -> RgbImage {
    let data = std::fs::read(FONT).expect("fonts-dejavu-core (scripts/setup.sh installs it)");
    let font = FontRef::try_from_slice(&data).unwrap();
    let scaled = font.as_scaled(PxScale::from(size));
    let line_height = (size * 1.8) as u32;
    let width = lines
        .iter()
        .map(|l| l.chars().map(|c| scaled.h_advance(font.glyph_id(c))).sum::<f32>() as u32)
        .max()
        .unwrap()
        + 80;
    let mut image = RgbImage::from_pixel(width, line_height * lines.len() as u32 + 60, Rgb([255, 255, 255]));
    for (row, line) in lines.iter().enumerate() {
        let mut x = 40.0;
        let baseline = 30.0 + row as f32 * line_height as f32 + scaled.ascent();
        for c in line.chars() {
            let glyph =
                font.glyph_id(c).with_scale_and_position(PxScale::from(size), ab_glyph::point(x, baseline));
            x += scaled.h_advance(font.glyph_id(c));
            if let Some(outlined) = font.outline_glyph(glyph) {
                let bounds = outlined.px_bounds();
                outlined.draw(|gx, gy, coverage| {
                    let (px, py) = (bounds.min.x as i32 + gx as i32, bounds.min.y as i32 + gy as i32);
                    if px >= 0 && py >= 0 && (px as u32) < image.width() && (py as u32) < image.height() {
                        let v = (255.0 * (1.0 - coverage.clamp(0.0, 1.0))) as u8;
                        let p = image.get_pixel_mut(px as u32, py as u32);
                        p.0 = [p.0[0].min(v), p.0[1].min(v), p.0[2].min(v)];
                    }
                });
            }
        }
    }
    image
}

fn encode(image: &RgbImage, format: ImageFormat) -> Bytes {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(image.clone()).write_to(&mut Cursor::new(&mut out), format).unwrap();
    Bytes::from(out)
}

async fn read(backend: &OnnxBackend, images: Vec<Bytes>) -> Vec<Result<OcrOutput, BackendError>> {
    let mut receivers = Vec::new();
    let items = images
        .into_iter()
        .map(|image| {
            let (events, rx) = tokio::sync::mpsc::unbounded_channel();
            receivers.push(rx);
            Item {
                request: Request::Ocr(OcrRequest { image }),
                cost: 1.0,
                cancel: CancellationToken::new(),
                events,
                deadline: None,
                span: tracing::Span::none(),
                forwarded: Default::default(),
            }
        })
        .collect();
    backend.execute(items).await;
    let mut out = Vec::new();
    for mut rx in receivers {
        out.push(match rx.recv().await.unwrap() {
            Event::Done(Output::Ocr(o)) => Ok(o),
            Event::Failed(e) => Err(e),
            other => panic!("{other:?}"),
        });
    }
    out
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(previous + usize::from(ca != cb));
            previous = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// 1 − edit distance / length, over the lines joined by newlines.
fn accuracy(expected: &[&str], got: &OcrOutput) -> f64 {
    let want: Vec<char> = expected.join("\n").chars().collect();
    let have: Vec<char> =
        got.lines.iter().map(|l| l.text.trim()).collect::<Vec<_>>().join("\n").chars().collect();
    1.0 - edit_distance(&want, &have) as f64 / want.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_english_text_is_read_with_its_boxes() {
    let backend = backend();
    let page = render(&LINES, 28.0);
    let upside_down = image::imageops::rotate180(&page);
    let small = render(&LINES, 20.0);
    let large = render(&LINES, 40.0);
    let results = read(
        &backend,
        vec![
            encode(&page, ImageFormat::Png),
            encode(&page, ImageFormat::Jpeg),
            encode(&upside_down, ImageFormat::Png),
            encode(&small, ImageFormat::Png),
            encode(&large, ImageFormat::WebP),
        ],
    )
    .await;
    let sizes =
        [page.dimensions(), page.dimensions(), page.dimensions(), small.dimensions(), large.dimensions()];
    for ((name, result), size) in
        ["png", "jpeg", "rotated 180°", "20 px", "40 px webp"].iter().zip(&results).zip(sizes)
    {
        let out = result.as_ref().unwrap();
        let texts: Vec<&str> = out.lines.iter().map(|l| l.text.as_str()).collect();
        let acc = accuracy(&LINES, out);
        eprintln!("{name}: accuracy {acc:.4}: {texts:?}");
        assert!(acc >= 0.95, "{name}: character accuracy {acc:.4} < 0.95: {texts:?}");
        assert_eq!((out.width, out.height), size);
        for line in &out.lines {
            assert!(line.confidence > 0.5 && line.confidence <= 1.0, "{line:?}");
            for [x, y] in line.corners {
                assert!((0.0..=size.0 as f32).contains(&x) && (0.0..=size.1 as f32).contains(&y));
            }
        }
    }
    // Boxes are in reading order and each covers its line's band.
    let out = results[0].as_ref().unwrap();
    let tops: Vec<f32> = out.lines.iter().map(|l| l.corners[0][1]).collect();
    assert!(tops.windows(2).all(|w| w[0] < w[1]), "{tops:?}");
}

#[tokio::test]
async fn images_without_text_and_bad_images() {
    let backend = backend();
    let blank = RgbImage::from_pixel(640, 480, Rgb([255, 255, 255]));
    let results = read(
        &backend,
        vec![encode(&blank, ImageFormat::Png), Bytes::from_static(b"not an image"), Bytes::new()],
    )
    .await;
    assert!(results[0].as_ref().unwrap().lines.is_empty(), "{:?}", results[0]);
    assert!(matches!(results[1], Err(BackendError::InvalidInput(_))), "{:?}", results[1]);
    assert!(matches!(results[2], Err(BackendError::InvalidInput(_))), "{:?}", results[2]);
}
