//! Generation: chat requests to a multimodal LLM, behind the [`Generator`] trait.
//!
//! Backends (`generator:` in the config, chosen by `kind:`):
//! - `openai_compatible` ([`openai`]): `POST {base}/v1/chat/completions` on vLLM, SGLang,
//!   llama.cpp, Ollama or a hosted API, with retries, replica balancing and adaptive concurrency;
//! - `replay`: answers only from the response store and fails on the first miss, naming it;
//! - batch files ([`batch`]): requests exported in the OpenAI Batch format and their results
//!   imported into the store as live answers would arrive.
//! [`simulate`] is a labelled simulator of such a server, for the demo and load tests.
//!
//! Invariants: a request is identified by [`RequestKey`]s, one per sample, that hash everything
//! that can change an answer (backend, model and revision, the exact rendered texts, the image
//! sent, sampling parameters, extra body fields, sample index) and nothing that cannot (base URL,
//! API key, batching of samples into requests); every attempt, failed or not, is returned to the
//! caller to be logged; a failed attempt never carries choices.

pub mod batch;
pub mod openai;
pub mod simulate;

use serde::{Deserialize, Serialize};
use crate::util::fingerprint::Fingerprint;
use std::sync::Arc;

pub use openai::{OpenAiClient, OpenAiSpec};

/// Sampling parameters of a method (all part of every response key but `n_per_request`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub max_tokens: u32,
    /// Base seed; the request for samples `i..` is sent with `seed + i`, so top-up requests for
    /// servers that return fewer than `n` choices do not repeat the same draw.
    pub seed: Option<u64>,
    /// Choices asked per request (`n`); default: all samples of a variant in one request.
    pub n_per_request: Option<usize>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 1.0, top_p: None, max_tokens: 128, seed: None, n_per_request: None }
    }
}

impl Sampling {
    /// `T=1.2, top_p=.., max_tokens=.., seed=..` for reports.
    pub fn describe(&self) -> String {
        let mut s = format!("temperature {}", self.temperature);
        if let Some(p) = self.top_p {
            s.push_str(&format!(", top_p {p}"));
        }
        s.push_str(&format!(", max_tokens {}", self.max_tokens));
        match self.seed {
            Some(seed) => s.push_str(&format!(", seed {seed}")),
            None => s.push_str(", no seed"),
        }
        s
    }
}

/// A 128-bit key (the first half of a sha256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey(pub u128);

impl RequestKey {
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
    pub fn parse(s: &str) -> Option<RequestKey> {
        (s.len() == 32).then(|| u128::from_str_radix(s, 16).ok().map(RequestKey)).flatten()
    }
}

/// Who answers: the backend kind, the configured model and an optional revision (e.g. a
/// weights hash or a dated API model) that the user bumps when the model changes under the same
/// name. The model id the server reports is recorded with every response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub backend: String,
    pub model: String,
    pub revision: Option<String>,
}

/// The image part of a request.
#[derive(Clone, Debug)]
pub struct ImagePayload {
    /// `data:image/jpeg;base64,...`
    pub data_url: String,
    /// sha256 of the bytes sent.
    pub sent_sha256: String,
    pub bytes: usize,
    /// Pixel size sent (after any re-encoding), when known.
    pub size: Option<(u32, u32)>,
}

/// Everything that determines a prompt's answers except the sample index.
#[derive(Clone, Debug)]
pub struct PromptIdentity {
    pub identity: Identity,
    pub template_sha256: String,
    pub system: Option<String>,
    pub text: String,
    /// Identity of the image sent: the source image's sha256 plus the transform applied
    /// (`original` or the re-encoding settings), which determine the bytes sent.
    pub image_id: Option<String>,
    pub sampling: Sampling,
    pub response_format: Option<serde_json::Value>,
    pub extra_body: serde_json::Map<String, serde_json::Value>,
}

impl PromptIdentity {
    fn base(&self) -> Fingerprint {
        let s = Sampling { n_per_request: None, ..self.sampling.clone() };
        let mut f = Fingerprint::new("georag.response/1");
        f.json(&self.identity)
            .field(&self.template_sha256)
            .json(&self.system)
            .field(&self.text)
            .json(&self.image_id)
            .json(&s)
            .json(&self.response_format)
            .json(&self.extra_body);
        f
    }

    /// The keys of samples `range` of this prompt (the prompt is hashed once).
    pub fn sample_keys(&self, range: std::ops::Range<usize>) -> Vec<RequestKey> {
        let base = self.base();
        range
            .map(|i| {
                let mut f = base.clone();
                f.field((i as u64).to_le_bytes());
                RequestKey(f.digest128())
            })
            .collect()
    }

    /// The key of sample `index` of this prompt.
    pub fn sample_key(&self, index: usize) -> RequestKey {
        self.sample_keys(index..index + 1)[0]
    }

    /// sha256 of the prompt texts (system + user text), as recorded in the log.
    pub fn prompt_sha256(&self) -> String {
        crate::util::fingerprint::sha256_hex(serde_json::to_string(&(&self.system, &self.text)).expect("texts").as_bytes())
    }
}

/// One HTTP request's worth of samples of one prompt.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub prompt: Arc<PromptIdentity>,
    pub image: Option<Arc<ImagePayload>>,
    /// Samples `first_sample .. first_sample + n`.
    pub first_sample: usize,
    pub n: usize,
    /// Provenance, for the log and for error messages.
    pub method: String,
    pub variant: usize,
    pub query_id: String,
}

impl ChatRequest {
    pub fn keys(&self) -> Vec<RequestKey> {
        self.prompt.sample_keys(self.first_sample..self.first_sample + self.n)
    }
    /// `custom_id` in batch files: the first sample's key and the sample count.
    pub fn custom_id(&self) -> String {
        format!("{}-{}", self.prompt.sample_key(self.first_sample).hex(), self.n)
    }
    /// The seed sent with this request.
    pub fn seed(&self) -> Option<u64> {
        self.prompt.sampling.seed.map(|s| s.wrapping_add(self.first_sample as u64))
    }
    /// The same prompt, samples `first .. first + n`.
    pub fn slice(&self, first: usize, n: usize) -> ChatRequest {
        ChatRequest { first_sample: first, n, ..self.clone() }
    }
}

/// One generated choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub text: Option<String>,
    pub finish_reason: Option<String>,
}

/// Token usage of one response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Why an attempt failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// `connection`, `timeout`, `http`, `invalid_response`, `not_sent`.
    pub kind: String,
    pub http_status: Option<u16>,
    /// The server's message when it gave one, else the client's.
    pub message: String,
    pub retryable: bool,
    /// The raw response body (first 4 KiB), for error shapes georag does not know.
    pub body: Option<String>,
}

/// The outcome of one HTTP attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ok { choices: Vec<Choice>, usage: Option<Usage>, response_model: Option<String> },
    Failed(Failure),
}

/// One attempt at a request, as logged.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub outcome: Outcome,
    /// The base URL it went to (never credentials).
    pub server: Option<String>,
    /// 1 for the first try of a request, then 2, 3, ... for retries.
    pub attempt: u32,
    pub latency_ms: f64,
    /// `live` or `batch`.
    pub source: &'static str,
}

/// A backend that answers chat requests.
pub trait Generator: Send + Sync {
    fn identity(&self) -> &Identity;
    /// Requests in flight at most (worker threads the caller runs).
    fn max_in_flight(&self) -> usize;
    /// Send one request under the backend's retry policy, reporting every attempt, in order,
    /// to `on_attempt`; the last reported attempt is final.
    fn send(&self, req: &ChatRequest, on_attempt: &mut dyn FnMut(Attempt));
    /// Extra request body fields (part of the response key).
    fn extra_body(&self) -> &serde_json::Map<String, serde_json::Value>;
    /// Settings to show in the report (no secrets).
    fn describe(&self) -> String;
    /// (current, lowest) in-flight limit of an adaptive backend.
    fn concurrency(&self) -> Option<(f64, f64)> {
        None
    }
    /// Estimated cost in USD of the given token counts, when prices are configured.
    fn cost_usd(&self, _prompt_tokens: u64, _completion_tokens: u64) -> Option<f64> {
        None
    }
}

/// How the image is sent (`generator.image`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageSpec {
    /// `original` bytes, or `reencode` as JPEG with the longest side at most `max_side`.
    pub send: ImageSend,
    pub max_side: u32,
    pub quality: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSend {
    Original,
    Reencode,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec { send: ImageSend::Original, max_side: 1024, quality: 90 }
    }
}

impl ImageSpec {
    /// The transform's identity (part of the image id in every key).
    pub fn transform_id(&self) -> String {
        match self.send {
            ImageSend::Original => "original".into(),
            ImageSend::Reencode => format!("reencode/2:jpeg-draft:max_side={}:quality={}:{}", self.max_side, self.quality, crate::decode::DECODE_POLICY),
        }
    }

    /// The payload for one image's bytes.
    pub fn payload(&self, bytes: &[u8]) -> Result<ImagePayload, String> {
        use base64::Engine;
        let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        match self.send {
            ImageSend::Original => {
                let mime = sniff_mime(bytes).ok_or("not a JPEG, PNG, GIF or WebP image")?;
                let size = crate::decode::inspect(bytes).ok().map(|i| (i.width, i.height));
                Ok(ImagePayload { data_url: format!("data:{mime};base64,{}", encode(bytes)), sent_sha256: crate::util::fingerprint::sha256_hex(bytes), bytes: bytes.len(), size })
            }
            ImageSend::Reencode => {
                // Only the re-encoded size matters here: JPEGs are decoded DCT-scaled (PIL's
                // `draft()`, as `Image.thumbnail` does) to the smallest 1/2..1/8 size that still
                // covers the target, then resized to exactly the target of the full-size image.
                let target = crate::decode::inspect(bytes).ok().and_then(|i| shrunk_size(i.width, i.height, self.max_side));
                let img = crate::decode::decode_rgb_draft(bytes, crate::decode::DEFAULT_MAX_PIXELS, target).map_err(|e| e.to_string())?;
                let img = match target {
                    Some((nw, nh)) if img.dimensions() != (nw, nh) => resize_to(img, nw, nh)?,
                    _ => shrink(img, self.max_side)?,
                };
                let size = (img.width(), img.height());
                let mut out = Vec::new();
                let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, self.quality.clamp(1, 100));
                img.write_with_encoder(enc).map_err(|e| format!("JPEG encoding: {e}"))?;
                Ok(ImagePayload { data_url: format!("data:image/jpeg;base64,{}", encode(&out)), sent_sha256: crate::util::fingerprint::sha256_hex(&out), bytes: out.len(), size: Some(size) })
            }
        }
    }
}

/// The size a `w x h` image is shrunk to so that its long side is `max_side`; `None` when it is
/// not larger than that (or `max_side` is 0).
fn shrunk_size(w: u32, h: u32, max_side: u32) -> Option<(u32, u32)> {
    if w.max(h) <= max_side || max_side == 0 {
        return None;
    }
    Some(if w >= h {
        (max_side, ((h as f64 * max_side as f64 / w as f64).round() as u32).max(1))
    } else {
        (((w as f64 * max_side as f64 / h as f64).round() as u32).max(1), max_side)
    })
}

fn shrink(img: image::RgbImage, max_side: u32) -> Result<image::RgbImage, String> {
    let (w, h) = img.dimensions();
    match shrunk_size(w, h, max_side) {
        None => Ok(img),
        Some((nw, nh)) => resize_to(img, nw, nh),
    }
}

fn resize_to(img: image::RgbImage, nw: u32, nh: u32) -> Result<image::RgbImage, String> {
    let (w, h) = img.dimensions();
    use fast_image_resize as fr;
    let src = fr::images::Image::from_vec_u8(w, h, img.into_raw(), fr::PixelType::U8x3).map_err(|e| e.to_string())?;
    let mut dst = fr::images::Image::new(nw, nh, fr::PixelType::U8x3);
    let opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
    fr::Resizer::new().resize(&src, &mut dst, &opts).map_err(|e| e.to_string())?;
    image::RgbImage::from_raw(nw, nh, dst.into_vec()).ok_or_else(|| "resize buffer".to_string())
}

fn sniff_mime(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(b"GIF8") {
        Some("image/gif")
    } else if b.len() > 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The generator of a config (`generator:`), chosen by `kind:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GeneratorSpec {
    /// An OpenAI-compatible chat completions server (vLLM, SGLang, llama.cpp, Ollama, hosted).
    OpenaiCompatible(OpenAiSpec),
    /// Recorded responses only; fails on the first request without a valid recorded answer.
    Replay(ReplaySpec),
}

/// `kind: replay`: the identity whose recorded answers are served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// The backend that recorded them (default `openai_compatible`).
    #[serde(default = "default_backend")]
    pub backend: String,
    pub model: String,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub image: ImageSpec,
}

fn default_backend() -> String {
    "openai_compatible".into()
}

impl GeneratorSpec {
    pub fn identity(&self) -> Identity {
        match self {
            GeneratorSpec::OpenaiCompatible(s) => s.identity(),
            GeneratorSpec::Replay(r) => Identity { backend: r.backend.clone(), model: r.model.clone(), revision: r.revision.clone() },
        }
    }
    pub fn image(&self) -> &ImageSpec {
        match self {
            GeneratorSpec::OpenaiCompatible(s) => &s.image,
            GeneratorSpec::Replay(r) => &r.image,
        }
    }
    pub fn extra_body(&self) -> &serde_json::Map<String, serde_json::Value> {
        match self {
            GeneratorSpec::OpenaiCompatible(s) => &s.extra_body,
            GeneratorSpec::Replay(r) => &r.extra_body,
        }
    }
    /// The replay generator with this one's identity (`georag run --replay`).
    pub fn as_replay(&self) -> GeneratorSpec {
        let id = self.identity();
        GeneratorSpec::Replay(ReplaySpec { backend: id.backend, model: id.model, revision: id.revision, extra_body: self.extra_body().clone(), image: self.image().clone() })
    }
    pub fn is_replay(&self) -> bool {
        matches!(self, GeneratorSpec::Replay(_))
    }
}
