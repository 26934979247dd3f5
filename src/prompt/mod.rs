//! Prompt templates: versioned YAML files (`configs/prompts/*.yaml`, embedded in the binary and
//! selectable by name, or any file path) rendered with the retrieved neighbours of one query.
//!
//! A template file:
//! ```yaml
//! name: street_rag
//! version: 1
//! include: base.yaml            # optional; this file's keys override the included file's
//! candidate_style: tuples       # tuples "(lat, lon) (lat, lon)" | list "['lat, lon', ...]" | lines
//! decimals: 4
//! place_fields: [city, country] # optional: the database's place text after each coordinate,
//!                               # from these metadata columns (missing ones skipped)
//! response_format: none         # none | json_schema (ask the server to enforce
//!                               # {"latitude": number, "longitude": number})
//! system: optional system message
//! answer_format: |
//!   Answer with the coordinates only, as "latitude, longitude".
//! template: |
//!   ... {{k_similar}} ... {{similar}} ... {{k_dissimilar}} ... {{dissimilar}} ... {{answer_format}}
//! ```
//!
//! Invariants: an unknown placeholder, or a template that does not use the neighbours its
//! variant retrieves (or uses ones it does not), is an error naming the file; rendering is a pure
//! function of (template, neighbours); the template's content hash (`sha256` of its resolved
//! YAML) and the rendered text are both part of every response key, so an edited template
//! never reuses answers given to the old wording.

use crate::record::LatLon;
use crate::util::fingerprint::sha256_hex;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// The prompt templates shipped with georag, by name (`configs/prompts/NAME.yaml`).
pub const BUILTIN: &[(&str, &str)] = &[
    ("zero_shot", include_str!("../../configs/prompts/zero_shot.yaml")),
    ("street_rag", include_str!("../../configs/prompts/street_rag.yaml")),
    ("img2loc", include_str!("../../configs/prompts/img2loc.yaml")),
    ("g3_zero_shot", include_str!("../../configs/prompts/g3_zero_shot.yaml")),
    ("g3_rag", include_str!("../../configs/prompts/g3_rag.yaml")),
];

/// Placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["similar", "dissimilar", "k_similar", "k_dissimilar", "answer_format"];

/// Error loading or rendering a template.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt template {source_name}: {message}")]
    Template { source_name: String, message: String },
    #[error("prompt `{name}`: not a built-in template ({hint}) and not a file (paths contain `/` or end in .yaml)")]
    Unknown { name: String, hint: String },
    #[error("reading prompt template {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// How neighbour coordinates are written into the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateStyle {
    /// `(48.8566, 2.3522) (51.5072, -0.1276)` (Img2Loc, DSO-MultiLM).
    #[default]
    Tuples,
    /// `['48.8566, 2.3522', '51.5072, -0.1276']` (G3's bracketed list of strings).
    List,
    /// One `48.8566, 2.3522` per line.
    Lines,
}

/// Whether the request asks the server to enforce a JSON answer schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    #[default]
    None,
    /// `response_format: {type: json_schema, ...}` with `latitude` and `longitude` numbers.
    JsonSchema,
}

impl ResponseFormat {
    /// The `response_format` request field, or `None`.
    pub fn body(self) -> Option<serde_json::Value> {
        match self {
            ResponseFormat::None => None,
            ResponseFormat::JsonSchema => Some(serde_json::json!({
                "type": "json_schema",
                "json_schema": {
                    "name": "coordinate",
                    "strict": true,
                    "schema": {
                        "type": "object",
                        "properties": {"latitude": {"type": "number"}, "longitude": {"type": "number"}},
                        "required": ["latitude", "longitude"],
                        "additionalProperties": false
                    }
                }
            })),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    name: String,
    version: u32,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    candidate_style: CandidateStyle,
    #[serde(default = "default_decimals")]
    decimals: usize,
    #[serde(default)]
    response_format: ResponseFormat,
    #[serde(default)]
    place_fields: Vec<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    answer_format: String,
    template: String,
}

fn default_decimals() -> usize {
    4
}

/// A loaded template.
#[derive(Clone, Debug)]
pub struct Template {
    /// Name and version as the file declares them.
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    pub candidate_style: CandidateStyle,
    pub decimals: usize,
    pub response_format: ResponseFormat,
    /// Metadata columns of the database (e.g. MP16-Pro's `city`, `state`, `country`) written
    /// after each neighbour's coordinate; empty: coordinates only.
    pub place_fields: Vec<String>,
    pub system: Option<String>,
    pub answer_format: String,
    pub template: String,
    /// Where it came from (`builtin:NAME` or the file path).
    pub source: String,
    /// sha256 of the resolved template (after `include:`), canonical JSON.
    pub sha256: String,
    /// Placeholders the template (and its answer format) uses.
    used: Vec<String>,
}

/// A rendered prompt: the exact texts sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub system: Option<String>,
    pub text: String,
}

impl Template {
    /// Load a template by built-in name or file path (relative to the working directory).
    pub fn load(name_or_path: &str) -> Result<Template, PromptError> {
        let is_path = name_or_path.contains('/') || name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml");
        if !is_path {
            let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) else {
                let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                return Err(PromptError::Unknown { name: name_or_path.into(), hint: crate::util::suggest::hint(name_or_path, &names) });
            };
            let v = parse_yaml(text, &format!("builtin:{name_or_path}"))?;
            let v = resolve_includes(v, &format!("builtin:{name_or_path}"), None, &mut vec![])?;
            return Template::from_value(v, format!("builtin:{name_or_path}"));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io { path: path.into(), source })?;
        let src = path.display().to_string();
        let v = parse_yaml(&text, &src)?;
        let v = resolve_includes(v, &src, path.parent(), &mut vec![path.to_path_buf()])?;
        Template::from_value(v, src)
    }

    /// Parse a template from YAML text (no `include:`), e.g. in tests.
    pub fn from_yaml(text: &str, source: &str) -> Result<Template, PromptError> {
        let v = parse_yaml(text, source)?;
        Template::from_value(v, source.into())
    }

    fn from_value(v: Value, source: String) -> Result<Template, PromptError> {
        let err = |message: String| PromptError::Template { source_name: source.clone(), message };
        let f: TemplateFile = serde_path_to_error::deserialize(v.clone()).map_err(|e| {
            let fields = ["name", "version", "description", "candidate_style", "decimals", "response_format", "place_fields", "system", "answer_format", "template"];
            let msg = e.inner().to_string();
            let hint = msg
                .split('`')
                .nth(1)
                .map(|bad| crate::util::suggest::hint(bad, &fields))
                .unwrap_or_default();
            err(format!("at `{}`: {msg}{}", e.path(), if hint.is_empty() { String::new() } else { format!(" ({hint})") }))
        })?;
        if f.decimals > 10 {
            return Err(err(format!("decimals {} is more than 10", f.decimals)));
        }
        let json = serde_json::to_string(&serde_json::to_value(&v).map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
        let mut used = placeholders(&f.template).map_err(&err)?;
        for p in placeholders(&f.answer_format).map_err(&err)? {
            if p == "answer_format" {
                return Err(err("answer_format cannot contain {{answer_format}}".into()));
            }
            if !used.contains(&p) {
                used.push(p);
            }
        }
        for p in &used {
            if !PLACEHOLDERS.contains(&p.as_str()) {
                return Err(err(format!("unknown placeholder {{{{{p}}}}} ({})", crate::util::suggest::hint(p, PLACEHOLDERS))));
            }
        }
        Ok(Template {
            name: f.name,
            version: f.version,
            description: f.description,
            candidate_style: f.candidate_style,
            decimals: f.decimals,
            response_format: f.response_format,
            place_fields: f.place_fields,
            system: f.system,
            answer_format: f.answer_format,
            template: f.template,
            source,
            sha256: sha256_hex(json.as_bytes()),
            used,
        })
    }

    /// Whether the template writes the similar (resp. dissimilar) neighbours.
    pub fn uses(&self, placeholder: &str) -> bool {
        self.used.iter().any(|p| p == placeholder)
    }

    /// Check the template against the neighbours its variant retrieves: a template that lists
    /// neighbours must get some, and one that gets neighbours must list them.
    pub fn check_neighbours(&self, similar: usize, dissimilar: usize) -> Result<(), PromptError> {
        let err = |message: String| PromptError::Template { source_name: self.source.clone(), message };
        for (ph, n, key) in [("similar", similar, "similar"), ("dissimilar", dissimilar, "dissimilar")] {
            if self.uses(ph) && n == 0 {
                return Err(err(format!("uses {{{{{ph}}}}} but the variant retrieves no {key} neighbours (set `neighbours.{key}`)")));
            }
            if !self.uses(ph) && n > 0 {
                return Err(err(format!("the variant retrieves {n} {key} neighbours but the template has no {{{{{ph}}}}}")));
            }
        }
        Ok(())
    }

    /// Render with the neighbours of one query (best first).
    pub fn render(&self, similar: &[Candidate], dissimilar: &[Candidate]) -> Rendered {
        let answer = substitute(&self.answer_format, |p| self.value(p, similar, dissimilar, ""));
        let answer = answer.trim_end().to_string();
        let text = substitute(&self.template, |p| self.value(p, similar, dissimilar, &answer));
        Rendered { system: self.system.as_ref().map(|s| s.trim_end().to_string()), text: text.trim_end().to_string() }
    }

    fn value(&self, p: &str, similar: &[Candidate], dissimilar: &[Candidate], answer: &str) -> String {
        match p {
            "similar" => format_candidates(similar, self.candidate_style, self.decimals),
            "dissimilar" => format_candidates(dissimilar, self.candidate_style, self.decimals),
            "k_similar" => similar.len().to_string(),
            "k_dissimilar" => dissimilar.len().to_string(),
            "answer_format" => answer.to_string(),
            _ => unreachable!("placeholders are checked at load"),
        }
    }

    /// The place text of a database row's metadata (a JSON object, as `prepare` stores the
    /// definition's extra columns): the template's `place_fields` that are present and
    /// non-empty, joined with ", ".
    pub fn place_of(&self, meta: Option<&str>) -> Option<String> {
        if self.place_fields.is_empty() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(meta?).ok()?;
        let parts: Vec<String> = self
            .place_fields
            .iter()
            .filter_map(|f| match &v[f] {
                serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// `name@vN` for reports.
    pub fn label(&self) -> String {
        format!("{}@v{}", self.name, self.version)
    }
}

/// One neighbour as a prompt shows it: its coordinate and, when the template asks for it and
/// the database has it, its place text.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub coord: LatLon,
    pub place: Option<String>,
}

impl Candidate {
    pub fn at(coord: LatLon) -> Candidate {
        Candidate { coord, place: None }
    }
}

/// Coordinates in one of the styles papers use; a place text follows its coordinate
/// (`(48.8566, 2.3522; Paris, France)`, `'48.8566, 2.3522 (Paris, France)'`,
/// `48.8566, 2.3522 (Paris, France)`).
pub fn format_candidates(c: &[Candidate], style: CandidateStyle, decimals: usize) -> String {
    let pair = |p: &LatLon| format!("{:.d$}, {:.d$}", p.lat, p.lon, d = decimals);
    let with = |c: &Candidate, sep: &str, close: &str| match &c.place {
        Some(t) => format!("{}{sep}{t}{close}", pair(&c.coord)),
        None => pair(&c.coord),
    };
    match style {
        CandidateStyle::Tuples => c.iter().map(|p| format!("({})", with(p, "; ", ""))).collect::<Vec<_>>().join(" "),
        CandidateStyle::List => format!("[{}]", c.iter().map(|p| format!("'{}'", with(p, " (", ")"))).collect::<Vec<_>>().join(", ")),
        CandidateStyle::Lines => c.iter().map(|p| with(p, " (", ")")).collect::<Vec<_>>().join("\n"),
    }
}

fn parse_yaml(text: &str, source: &str) -> Result<Value, PromptError> {
    serde_yaml::from_str(text).map_err(|e| PromptError::Template { source_name: source.into(), message: format!("invalid YAML: {e}") })
}

/// lm-evaluation-harness style `include:`: the included file (relative to this one, or a
/// built-in name) is the base, this file's keys override it.
fn resolve_includes(mut v: Value, source: &str, dir: Option<&Path>, stack: &mut Vec<PathBuf>) -> Result<Value, PromptError> {
    let inc = match &mut v {
        Value::Mapping(m) => m.remove("include"),
        _ => return Err(PromptError::Template { source_name: source.into(), message: "a template file is a mapping".into() }),
    };
    let Some(inc) = inc else { return Ok(v) };
    let Value::String(inc) = inc else {
        return Err(PromptError::Template { source_name: source.into(), message: "`include` must be a file name".into() });
    };
    let base = match dir {
        Some(d) if d.join(&inc).exists() => {
            let p = d.join(&inc);
            if stack.contains(&p) {
                return Err(PromptError::Template { source_name: source.into(), message: format!("include cycle through {}", p.display()) });
            }
            let text = std::fs::read_to_string(&p).map_err(|source| PromptError::Io { path: p.clone(), source })?;
            let src = p.display().to_string();
            stack.push(p.clone());
            let b = resolve_includes(parse_yaml(&text, &src)?, &src, p.parent(), stack)?;
            stack.pop();
            b
        }
        _ => {
            let name = inc.trim_end_matches(".yaml");
            let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) else {
                return Err(PromptError::Template { source_name: source.into(), message: format!("include `{inc}`: no such file or built-in template") });
            };
            if stack.iter().any(|p| p == Path::new(name)) {
                return Err(PromptError::Template { source_name: source.into(), message: format!("include cycle through {name}") });
            }
            stack.push(PathBuf::from(name));
            let b = resolve_includes(parse_yaml(text, name)?, name, None, stack)?;
            stack.pop();
            b
        }
    };
    let mut merged = base;
    crate::config::merge(&mut merged, v);
    Ok(merged)
}

/// Names of the `{{placeholder}}`s in a text, in order of first use.
fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { return Err("unclosed `{{`".into()) };
        let name = after[..j].trim().to_string();
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &after[j + 2..];
    }
    Ok(out)
}

fn substitute(text: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after.find("}}").expect("checked at load");
        out.push_str(&value(after[..j].trim()));
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
