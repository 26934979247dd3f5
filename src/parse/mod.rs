//! Answer parsers: turning one generated MLLM answer into a coordinate or a failure status.
//!
//! A parser reads the text of one sample (and the server's `finish_reason`) and returns a
//! [`Parsed`]: a valid [`LatLon`] with [`Status::Ok`], or a failure status with a short note.
//! It never invents a coordinate: a failure is never turned into (0, 0), and a value outside the
//! valid range is reported as [`Status::InvalidCoords`], never clamped, wrapped or swapped.
//!
//! Parsers are chosen in the config by name (`parser: json`, see [`ParserSpec`]):
//!
//! | name        | origin   | rule                                                              |
//! |-------------|----------|-------------------------------------------------------------------|
//! | `lenient`   | (default)| labelled values, JSON, hemisphere/degree/DMS angles, number pairs |
//! | `json`      | —        | first JSON object with a latitude and a longitude key             |
//! | `first_two` | G3       | first two decimal numbers, in order (lat, lon)                    |
//! | `last_two`  | GeoRanker| last two decimal numbers, in order (lat, lon)                     |
//! | `lat_lon`   | Img2Loc  | first line of the form `lat, lon`                                 |
//!
//! # Statuses
//!
//! - [`Status::Ok`]: a coordinate was found and is valid (finite, |lat| <= 90, |lon| <= 180).
//! - [`Status::InvalidCoords`]: the rule found a coordinate but it is out of range or not finite
//!   (or a degrees-minutes-seconds value has minutes or seconds >= 60).
//! - [`Status::Truncated`]: no coordinate found and `finish_reason` is `"length"`.
//! - [`Status::Refused`]: no coordinate found and the text contains one of
//!   [`REFUSAL_PHRASES`] (case-insensitive, curly apostrophes read as `'`, runs of whitespace
//!   read as one space).
//! - [`Status::Unparseable`]: anything else, including empty text.
//!
//! Precedence when there is no valid coordinate: InvalidCoords, then Truncated, then Refused, then
//! Unparseable. [`Parsed::note`] is `None` for `Ok` and a short reason otherwise.
//!
//! # Numbers
//!
//! All text rules share one number scanner. A *number* is
//!
//! ```text
//! number := sign? digits ("." digits)? exponent?
//! sign   := "+" | "-" | "−" (U+2212)
//! exponent := ("e" | "E") ("+" | "-")? digits
//! ```
//!
//! with these boundary rules:
//! - a sign belongs to the number only when the character before it is not an ASCII letter,
//!   digit, `_` or `.` (so `10-20` is 10 and 20, `COVID-19` is 19, `lat: -33.9` is -33.9);
//! - a digit run directly after a `.` does not start a number (`.5` is not read as 5);
//! - a dotted run of three or more digit groups (`1.2.3`, `12.03.2024`, `192.168.0.1`) is not a
//!   number at all;
//! - an exponent is read only when `e`/`E` directly follows the mantissa and is followed by
//!   digits (optionally signed): `1.5e1` is 15, `48.85E` and `48.85 E` are 48.85 and a letter;
//! - a comma is never a decimal or thousands separator (`48,85` is two numbers).
//!
//! A *decimal number* is a number with a fraction part (`48.85`, `-0.0`, `1.5e1`); `2024`,
//! `1` (as in `Step 1`), `2e3` and `48` are numbers but not decimal numbers. `first_two` and
//! `last_two` only look at decimal numbers, like G3's `[-+]?\d+\.\d+`; unlike that regex they
//! apply the boundary rules above.
//!
//! **Truncated output.** When `finish_reason` is `"length"`, a number is ignored when everything
//! after it up to the end of the text could still be its continuation (nothing, or only
//! whitespace, `.`, signs, degree/minute/second marks, and a prefix of an exponent or of
//! `N`/`S`/`E`/`W`/`North`/`South`/`East`/`West`): `… 2.35` and `… 2.35° ` at the very end of a
//! cut-off answer may be `2.3522` or `2.35° W`. (`json` needs a complete, balanced object, so
//! a cut cannot shorten its numbers; `lat_lon` applies this rule to the line's second number.)

use crate::record::{LatLon, Status};
use serde::{Deserialize, Serialize};

/// Result of parsing one generated sample.
///
/// Invariant: `coord.is_some()` exactly when `status == Status::Ok`. `note` is a short human
/// reason for a failure (e.g. `latitude 123.4 outside [-90, 90]`) and `None` for `Ok`.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub status: Status,
    pub coord: Option<LatLon>,
    pub note: Option<String>,
}

impl Parsed {
    fn ok(c: LatLon) -> Self {
        Parsed { status: Status::Ok, coord: Some(c), note: None }
    }
    fn fail(status: Status, note: impl Into<String>) -> Self {
        debug_assert!(status != Status::Ok);
        Parsed { status, coord: None, note: Some(note.into()) }
    }
}

/// Extracts a coordinate from one generated answer.
pub trait Parser: Send + Sync {
    /// The config name of this parser (`lenient`, `json`, `first_two`, `last_two`, `lat_lon`).
    fn name(&self) -> &'static str;
    /// Parses one sample. `finish_reason` is the server's (e.g. `Some("stop")`,
    /// `Some("length")`); only `"length"` changes the outcome (see the module docs).
    fn parse(&self, text: &str, finish_reason: Option<&str>) -> Parsed;
}

/// A parser in the config, written as a plain string: `parser: json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ParserSpec {
    /// Labelled values, then JSON, then marked angles, then number pairs (see [`ParserSpec::build`]).
    #[default]
    Lenient,
    /// The first JSON object that has a latitude and a longitude.
    Json,
    /// G3: the first two decimal numbers.
    FirstTwo,
    /// GeoRanker: the last two decimal numbers.
    LastTwo,
    /// Img2Loc: the first line `lat, lon`.
    LatLon,
}

impl ParserSpec {
    /// Every parser, in declaration order.
    pub const ALL: [ParserSpec; 5] =
        [ParserSpec::Lenient, ParserSpec::Json, ParserSpec::FirstTwo, ParserSpec::LastTwo, ParserSpec::LatLon];

    /// The parser this spec names.
    ///
    /// - `json`: every `{` in the text, in order (so an outer object comes before the objects
    ///   nested in it, and those before later objects), starts a candidate; the candidate is the
    ///   balanced `{…}` (string-aware), parsed as JSON, and if that fails parsed again with
    ///   trailing commas (`,` before `}` or `]`) removed. The first candidate object that
    ///   directly has a latitude key (`latitude`, `lat`) and a longitude key (`longitude`, `lon`,
    ///   `lng`, `long`), keys compared case-insensitively after trimming, whose values are JSON
    ///   numbers or strings holding exactly one number, is the answer. Prose and code fences
    ///   around it are ignored. An object whose values are `null` or text does not count. The
    ///   search gives up after scanning 16 MiB in total (many unbalanced `{` in a long text).
    /// - `first_two` / `last_two`: the first / last two decimal numbers (module docs), taken
    ///   as (lat, lon) in text order.
    /// - `lat_lon`: the first line that, after trimming whitespace, wrappers `()[]{}<>*` and
    ///   quotes (`"'` and curly ones) from both ends and a trailing `.`, splits at its only
    ///   comma into two parts that are each exactly one number (quotes around each part
    ///   allowed). Later lines are not looked at once one matches.
    /// - `lenient` tries these rules in order; the first that finds a coordinate decides (an
    ///   out-of-range value found by an earlier rule is `InvalidCoords`, not skipped):
    ///   1. **labelled values**: a label word (`latitude`/`lat`, `longitude`/`lon`/`lng`/`long`,
    ///      case-insensitive, whole word) followed within 48 bytes by a value, where only
    ///      whitespace, quotes, `*`, `_`, `:`, `=`, `.`, `(`, `)`, `[`, `]`, `~`, `≈`, `->`,
    ///      `→`, a dash followed by a space, and the words `is of at approximately approx about
    ///      around roughly near estimated ca circa deg degree degrees value coordinate in
    ///      decimal` may come between. The value is an angle (decimal, degree sign, or DMS) with
    ///      an optional hemisphere letter before or after; a hemisphere of the other axis
    ///      disqualifies it. A label directly after a label of the other axis (`lat/lon:`,
    ///      `latitude and longitude:`) is a header, not a label. The first latitude and the first
    ///      longitude found make the pair, in whichever order they appear.
    ///   2. **JSON**, as `json`.
    ///   3. **marked angles**: numbers with a degree sign (`°`, `º`, `˚`, `deg`, `degrees`),
    ///      degrees-minutes-seconds (`48°51'24"N`, `48° 51′ 24″ N`, `48°51.4'N`, and without
    ///      marks `48 51 24 N` when a hemisphere follows), and hemisphere letters (`N`, `S`,
    ///      `E`, `W` in capitals, or `north` … `west` in any case, as whole words) directly
    ///      before or after an angle (spaces only between). Whether letters follow or precede
    ///      their angle is decided by the first letter that touches an angle (`33.87 S 151.21 E`
    ///      vs `N 48.85 E 2.35`). S and W make the value negative; an explicit minus with N or
    ///      E is a contradiction and the letter is ignored. The latitude is the first angle
    ///      with N/S, the longitude the first with E/W, whatever their order; if only one axis
    ///      is marked, the angle next to it (separated by whitespace and at most one `,`, `;` or
    ///      `/`) is the other. When the letters give no pair (or there are none), the first two
    ///      adjacent angles (same separators) that both carry a degree sign or DMS marks are
    ///      (lat, lon).
    ///   4. **number pair**: two consecutive numbers separated only by one `,` or `;` (and
    ///      whitespace) that form a valid coordinate: the first such pair of decimal numbers,
    ///      else the first such pair of any numbers (`35, 139`, `(48.85,2.35)`).
    ///   5. **first two decimal numbers**, as `first_two` (this is the rule that reports an
    ///      out-of-range decimal pair such as `123.4, 2.35` as `InvalidCoords`).
    ///   6. **any comma pair**: the first two numbers separated by one `,` or `;`, whatever their
    ///      range (so `200, 100` is `InvalidCoords`, not `Unparseable`).
    pub fn build(&self) -> Box<dyn Parser> {
        match self {
            ParserSpec::Lenient => Box::new(Lenient),
            ParserSpec::Json => Box::new(JsonParser),
            ParserSpec::FirstTwo => Box::new(FirstTwo),
            ParserSpec::LastTwo => Box::new(LastTwo),
            ParserSpec::LatLon => Box::new(LatLonLine),
        }
    }

    /// The config name (`lenient`, `json`, `first_two`, `last_two`, `lat_lon`).
    pub fn name(&self) -> &'static str {
        match self {
            ParserSpec::Lenient => "lenient",
            ParserSpec::Json => "json",
            ParserSpec::FirstTwo => "first_two",
            ParserSpec::LastTwo => "last_two",
            ParserSpec::LatLon => "lat_lon",
        }
    }
}

/// Phrases that make an answer without a coordinate a [`Status::Refused`] rather than
/// [`Status::Unparseable`]. Matched as substrings of the lower-cased text, with `’ ‘ ʼ`
/// read as `'` and runs of whitespace read as one space. They are only consulted when no
/// coordinate was found.
pub const REFUSAL_PHRASES: &[&str] = &[
    "i'm sorry",
    "i am sorry",
    "sorry, but",
    "i apologize",
    "i apologise",
    "cannot determine",
    "can't determine",
    "can not determine",
    "cannot be determined",
    "can't be determined",
    "unable to",
    "not possible to determine",
    "impossible to determine",
    "not possible to identify",
    "impossible to identify",
    "not possible to pinpoint",
    "impossible to pinpoint",
    "cannot identify",
    "can't identify",
    "cannot pinpoint",
    "can't pinpoint",
    "cannot provide",
    "can't provide",
    "cannot help",
    "can't help",
    "cannot assist",
    "can't assist",
    "as an ai",
    "as a language model",
    "not enough information",
    "insufficient information",
    "i don't know",
    "i do not know",
    "i won't",
    "i will not",
];

// ---------------------------------------------------------------------------------------------
// Parsers

struct Lenient;
struct JsonParser;
struct FirstTwo;
struct LastTwo;
struct LatLonLine;

impl Parser for Lenient {
    fn name(&self) -> &'static str {
        "lenient"
    }
    fn parse(&self, text: &str, finish_reason: Option<&str>) -> Parsed {
        let scan = Scan::new(text, finish_reason);
        let found = find_labelled(&scan)
            .or_else(|| find_json(text))
            .or_else(|| find_marked(&scan))
            .or_else(|| find_number_pair(&scan))
            .map(Ok)
            .unwrap_or_else(|| first_two_decimals(&scan))
            .or_else(|_| find_any_comma_pair(&scan).ok_or(()))
            .map_err(|()| "no labelled values, JSON object, marked angles or number pair".to_string());
        conclude(found, text, finish_reason)
    }
}

impl Parser for JsonParser {
    fn name(&self) -> &'static str {
        "json"
    }
    fn parse(&self, text: &str, finish_reason: Option<&str>) -> Parsed {
        let found = find_json(text).ok_or_else(|| "no JSON object with a latitude and a longitude".to_string());
        conclude(found, text, finish_reason)
    }
}

impl Parser for FirstTwo {
    fn name(&self) -> &'static str {
        "first_two"
    }
    fn parse(&self, text: &str, finish_reason: Option<&str>) -> Parsed {
        let scan = Scan::new(text, finish_reason);
        conclude(first_two_decimals(&scan), text, finish_reason)
    }
}

impl Parser for LastTwo {
    fn name(&self) -> &'static str {
        "last_two"
    }
    fn parse(&self, text: &str, finish_reason: Option<&str>) -> Parsed {
        let scan = Scan::new(text, finish_reason);
        let dec: Vec<&Num> = scan.nums.iter().filter(|n| n.frac).collect();
        let found = match dec.len() {
            n if n >= 2 => Ok(Found::Pair(dec[n - 2].value, dec[n - 1].value)),
            n => Err(format!("found {n} decimal number(s), need two")),
        };
        conclude(found, text, finish_reason)
    }
}

impl Parser for LatLonLine {
    fn name(&self) -> &'static str {
        "lat_lon"
    }
    fn parse(&self, text: &str, finish_reason: Option<&str>) -> Parsed {
        let found = find_lat_lon_line(text, is_length(finish_reason))
            .ok_or_else(|| "no line of the form \"lat, lon\"".to_string());
        conclude(found, text, finish_reason)
    }
}

// ---------------------------------------------------------------------------------------------
// Outcome

/// What a rule found: a (lat, lon) pair not yet range-checked, or something coordinate-shaped
/// that cannot be valid (e.g. minutes >= 60).
#[derive(Clone, Debug, PartialEq)]
enum Found {
    Pair(f64, f64),
    Invalid(String),
}

fn is_length(finish_reason: Option<&str>) -> bool {
    finish_reason == Some("length")
}

/// Applies the status precedence to a rule's outcome (`Err` carries the rule's miss note).
fn conclude(found: Result<Found, String>, text: &str, finish_reason: Option<&str>) -> Parsed {
    match found {
        Ok(Found::Pair(lat, lon)) => match validate(lat, lon) {
            Ok(c) => Parsed::ok(c),
            Err(note) => Parsed::fail(Status::InvalidCoords, note),
        },
        Ok(Found::Invalid(note)) => Parsed::fail(Status::InvalidCoords, note),
        Err(miss) => {
            if is_length(finish_reason) {
                Parsed::fail(Status::Truncated, format!("output cut at the length limit: {miss}"))
            } else if let Some(p) = refusal_phrase(text) {
                Parsed::fail(Status::Refused, format!("refusal ({p:?})"))
            } else if text.trim().is_empty() {
                Parsed::fail(Status::Unparseable, "empty output")
            } else {
                Parsed::fail(Status::Unparseable, miss)
            }
        }
    }
}

fn validate(lat: f64, lon: f64) -> Result<LatLon, String> {
    if !lat.is_finite() {
        return Err(format!("latitude {lat} is not finite"));
    }
    if !lon.is_finite() {
        return Err(format!("longitude {lon} is not finite"));
    }
    if lat.abs() > 90.0 {
        return Err(format!("latitude {lat} outside [-90, 90]"));
    }
    if lon.abs() > 180.0 {
        return Err(format!("longitude {lon} outside [-180, 180]"));
    }
    LatLon::new(lat, lon).map_err(|e| e.to_string())
}

/// The first of [`REFUSAL_PHRASES`] the text contains, if any.
fn refusal_phrase(text: &str) -> Option<&'static str> {
    let mut norm = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !norm.is_empty() {
            norm.push(' ');
        }
        space = false;
        match c {
            '\u{2019}' | '\u{2018}' | '\u{02BC}' => norm.push('\''),
            c => norm.extend(c.to_lowercase()),
        }
    }
    REFUSAL_PHRASES.iter().copied().find(|p| norm.contains(p))
}

// ---------------------------------------------------------------------------------------------
// Number scanner

#[derive(Clone, Copy, Debug, PartialEq)]
struct Num {
    /// Byte offsets of the number (sign included).
    start: usize,
    end: usize,
    /// Value, sign applied (`-0.0` stays negative zero).
    value: f64,
    /// Has a fraction part.
    frac: bool,
    /// Has an exponent.
    exp: bool,
    /// Has an explicit sign.
    signed: bool,
}

impl Num {
    fn is_int(&self) -> bool {
        !self.frac && !self.exp
    }
    fn plain_unsigned(&self) -> bool {
        !self.signed && !self.exp
    }
}

/// Length in bytes and negativity of a sign at byte `i`, or `(0, false)`.
fn sign_at(s: &str, i: usize) -> (usize, bool) {
    let r = &s[i..];
    if r.starts_with('+') {
        (1, false)
    } else if r.starts_with('-') {
        (1, true)
    } else if r.starts_with('\u{2212}') {
        ('\u{2212}'.len_utf8(), true)
    } else {
        (0, false)
    }
}

fn prev_char(s: &str, i: usize) -> Option<char> {
    s[..i].chars().next_back()
}

fn next_char(s: &str, i: usize) -> Option<char> {
    s[i..].chars().next()
}

/// Every number in `s` (module docs), in order.
fn scan_numbers(s: &str) -> Vec<Num> {
    let b = s.as_bytes();
    let n = b.len();
    let digit = |j: usize| j < n && b[j].is_ascii_digit();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let (sign_len, neg) = sign_at(s, i);
        let ds = i + sign_len;
        let starts = if sign_len > 0 {
            digit(ds) && !prev_char(s, i).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        } else {
            digit(i) && !(i > 0 && (b[i - 1] == b'.' || b[i - 1].is_ascii_digit()))
        };
        if !starts {
            if sign_len > 0 && digit(ds) {
                // A hyphen, not a sign: the digits after it are read unsigned.
                i = ds;
            } else {
                i += next_char(s, i).map_or(1, char::len_utf8);
            }
            continue;
        }
        let mut j = ds;
        while digit(j) {
            j += 1;
        }
        let mut frac = false;
        if j < n && b[j] == b'.' && digit(j + 1) {
            j += 1;
            while digit(j) {
                j += 1;
            }
            frac = true;
            if j < n && b[j] == b'.' && digit(j + 1) {
                // Dotted run (version, date, IP address): not a number.
                while digit(j) || (j < n && b[j] == b'.' && digit(j + 1)) {
                    j += 1;
                }
                i = j;
                continue;
            }
        }
        let mut exp = false;
        if j < n && (b[j] == b'e' || b[j] == b'E') {
            let mut k = j + 1;
            if k < n && (b[k] == b'+' || b[k] == b'-') {
                k += 1;
            }
            if digit(k) {
                while digit(k) {
                    k += 1;
                }
                j = k;
                exp = true;
            }
        }
        let body = &s[ds..j];
        let value: f64 =
            if neg { format!("-{body}") } else { body.to_string() }.parse().expect("scanner only accepts float syntax");
        out.push(Num { start: i, end: j, value, frac, exp, signed: sign_len > 0 });
        i = j;
    }
    out
}

/// Under a length cut: could `rest` (the text after a number, up to the end) still be the
/// start of the number's continuation?
fn may_continue(rest: &str, num: &Num) -> bool {
    let r = rest.trim_start_matches(|c: char| {
        c.is_whitespace() || "+-\u{2212}°º˚'′’\"″”".contains(c) || (c == '.' && !num.frac)
    });
    let r = r.trim_end().to_ascii_lowercase();
    r.is_empty()
        || (!num.exp && matches!(r.as_str(), "e" | "e+" | "e-"))
        || ["north", "south", "east", "west"].iter().any(|w| w.starts_with(r.as_str()))
}

/// The numbers of one text, with those that a length cut may have shortened removed.
struct Scan<'a> {
    s: &'a str,
    nums: Vec<Num>,
}

impl<'a> Scan<'a> {
    fn new(s: &'a str, finish_reason: Option<&str>) -> Self {
        let mut nums = scan_numbers(s);
        if is_length(finish_reason) {
            nums.retain(|n| !may_continue(&s[n.end..], n));
        }
        Scan { s, nums }
    }
    fn num_at(&self, pos: usize) -> Option<usize> {
        self.nums.binary_search_by_key(&pos, |n| n.start).ok()
    }
}

/// The value of `t` if, trimmed, it is exactly one number.
fn whole_number(t: &str) -> Option<f64> {
    let t = t.trim();
    match scan_numbers(t).as_slice() {
        [n] if n.start == 0 && n.end == t.len() => Some(n.value),
        _ => None,
    }
}

fn first_two_decimals(scan: &Scan) -> Result<Found, String> {
    let mut dec = scan.nums.iter().filter(|n| n.frac);
    match (dec.next(), dec.next()) {
        (Some(a), Some(b)) => Ok(Found::Pair(a.value, b.value)),
        (a, _) => Err(format!("found {} decimal number(s), need two", a.is_some() as usize)),
    }
}

// ---------------------------------------------------------------------------------------------
// Angles and hemispheres

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hemi {
    N,
    S,
    E,
    W,
}

impl Hemi {
    fn is_lat(self) -> bool {
        matches!(self, Hemi::N | Hemi::S)
    }
    fn negates(self) -> bool {
        matches!(self, Hemi::S | Hemi::W)
    }
}

/// A hemisphere token starting at byte `i`: `N S E W` (capitals) or `north south east west`
/// (any case), as a whole word. Returns it and its end.
fn hemi_at(s: &str, i: usize) -> Option<(Hemi, usize)> {
    if prev_char(s, i).is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let w = word_at(s, i);
    let h = match w {
        "N" => Hemi::N,
        "S" => Hemi::S,
        "E" => Hemi::E,
        "W" => Hemi::W,
        _ => match w.to_ascii_lowercase().as_str() {
            "north" => Hemi::N,
            "south" => Hemi::S,
            "east" => Hemi::E,
            "west" => Hemi::W,
            _ => return None,
        },
    };
    Some((h, i + w.len()))
}

/// The maximal run of ASCII letters starting at byte `i` (possibly empty).
fn word_at(s: &str, i: usize) -> &str {
    let len = s[i..].bytes().take_while(u8::is_ascii_alphabetic).count();
    &s[i..i + len]
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{00A0}' | '\u{202F}')
}

/// Skips inline spaces (not line breaks).
fn skip_spaces(s: &str, mut i: usize) -> usize {
    while let Some(c) = next_char(s, i).filter(|&c| is_space(c)) {
        i += c.len_utf8();
    }
    i
}

/// A degree mark at `p` (directly, or a `deg`/`degree`/`degrees` word after spaces); its end.
fn degree_mark_after(s: &str, p: usize) -> Option<usize> {
    if let Some(c) = next_char(s, p).filter(|c| matches!(c, '°' | 'º' | '˚')) {
        return Some(p + c.len_utf8());
    }
    let q = skip_spaces(s, p);
    let w = word_at(s, q);
    matches!(w.to_ascii_lowercase().as_str(), "deg" | "degree" | "degrees").then_some(q + w.len())
}

fn minute_mark_after(s: &str, p: usize) -> Option<usize> {
    let r = &s[p..];
    if r.starts_with("''") || r.starts_with("′′") || r.starts_with("’’") {
        return None; // a seconds mark
    }
    ['\'', '′', '’'].into_iter().find(|&c| r.starts_with(c)).map(|c| p + c.len_utf8())
}

fn second_mark_after(s: &str, p: usize) -> Option<usize> {
    let r = &s[p..];
    ["''", "′′", "’’", "\"", "″", "”"].into_iter().find(|m| r.starts_with(m)).map(|m| p + m.len())
}

/// A number read as an angle, possibly with degree/minute/second marks.
#[derive(Clone, Debug)]
struct Angle {
    start: usize,
    end: usize,
    /// Signed by the number's own sign only (hemispheres are applied later).
    value: f64,
    /// Has an explicit minus.
    neg: bool,
    /// Carries a degree sign or minutes/seconds.
    marked: bool,
    /// Why the angle cannot be valid (minutes or seconds >= 60).
    invalid: Option<String>,
    /// Index in the scan's numbers just after the numbers this angle used.
    next: usize,
}

impl Angle {
    fn with_hemi(&self, h: Hemi) -> Option<f64> {
        if self.neg && !h.negates() {
            return None; // "-33.9 N": contradiction
        }
        let mag = self.value.abs();
        Some(if h.negates() { -mag } else { mag })
    }
}

/// Reads the angle that starts with number `k`.
fn angle_at(scan: &Scan, k: usize) -> Angle {
    let s = scan.s;
    let nums = &scan.nums;
    let d = nums[k];
    let mut a = Angle {
        start: d.start,
        end: d.end,
        value: d.value,
        neg: d.signed && d.value.is_sign_negative(),
        marked: false,
        invalid: None,
        next: k + 1,
    };
    if d.exp {
        return a;
    }
    // The next number, if it starts at `pos` (after spaces) and is unsigned without exponent.
    let part = |idx: usize, pos: usize| -> Option<Num> {
        let n = *nums.get(idx)?;
        (n.start == skip_spaces(s, pos) && n.plain_unsigned()).then_some(n)
    };
    let mut parts: Vec<f64> = Vec::new();
    if let Some(p) = degree_mark_after(s, d.end) {
        a.marked = true;
        a.end = p;
        if d.is_int()
            && let Some(m) = part(k + 1, p)
            && let Some(pm) = minute_mark_after(s, m.end)
        {
            parts.push(m.value);
            a.end = pm;
            a.next = k + 2;
            if m.is_int()
                && let Some(sec) = part(k + 2, pm)
                && let Some(ps) = second_mark_after(s, sec.end)
            {
                parts.push(sec.value);
                a.end = ps;
                a.next = k + 3;
            }
        }
    } else if d.is_int() && !prefix_hemi(s, d.start) {
        // "48 51 24 N" / "48 51.4 N": only when a hemisphere letter follows.
        let spaced = |idx: usize, pos: usize| part(idx, pos).filter(|n| n.start > pos);
        if let Some(m) = spaced(k + 1, d.end) {
            let sec = if m.is_int() { spaced(k + 2, m.end) } else { None };
            let hemi_after = |e: usize| hemi_at(s, skip_spaces(s, e)).is_some();
            if let Some(sec) = sec.filter(|x| hemi_after(x.end)) {
                parts = vec![m.value, sec.value];
                a.end = sec.end;
                a.next = k + 3;
                a.marked = true;
            } else if hemi_after(m.end) {
                parts = vec![m.value];
                a.end = m.end;
                a.next = k + 2;
                a.marked = true;
            }
        }
    }
    if !parts.is_empty() {
        let names = ["minutes", "seconds"];
        for (v, name) in parts.iter().zip(names) {
            if *v >= 60.0 && a.invalid.is_none() {
                a.invalid = Some(format!("{name} {v} not below 60 in {:?}", &s[a.start..a.end]));
            }
        }
        let mag = d.value.abs() + parts[0] / 60.0 + parts.get(1).map_or(0.0, |x| x / 3600.0);
        a.value = if a.neg { -mag } else { mag };
    }
    a
}

/// Is there a hemisphere token ending at `start` (spaces only between) that is not itself
/// the suffix of an earlier angle (i.e. not directly after a digit or an angle mark)?
fn prefix_hemi(s: &str, start: usize) -> bool {
    let before = s[..start].trim_end_matches(is_space);
    let w_start = before.len() - before.bytes().rev().take_while(u8::is_ascii_alphabetic).count();
    let is_hemi = w_start < before.len() && hemi_at(s, w_start).is_some_and(|(_, e)| e == before.len());
    let after_angle =
        s[..w_start].trim_end_matches(is_space).ends_with(|c: char| c.is_ascii_digit() || "°º˚'′’\"″”".contains(c));
    is_hemi && !after_angle
}

/// Every angle of the text, in order, non-overlapping.
fn all_angles(scan: &Scan) -> Vec<Angle> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < scan.nums.len() {
        let a = angle_at(scan, k);
        k = a.next;
        out.push(a);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rule: labelled values

#[derive(Clone, Copy, PartialEq, Eq)]
enum Axis {
    Lat,
    Lon,
}

fn label_axis(word: &str) -> Option<Axis> {
    match word.to_ascii_lowercase().as_str() {
        "latitude" | "lat" => Some(Axis::Lat),
        "longitude" | "lon" | "lng" | "long" => Some(Axis::Lon),
        _ => None,
    }
}

const LABEL_FILLERS: &[&str] = &[
    "is",
    "of",
    "at",
    "approximately",
    "approx",
    "about",
    "around",
    "roughly",
    "near",
    "estimated",
    "ca",
    "circa",
    "deg",
    "degree",
    "degrees",
    "value",
    "coordinate",
    "in",
    "decimal",
];

/// Is the label at `ws` directly after a label of the other axis (`lat/lon`, `latitude and
/// longitude`)?
fn is_header_label(s: &str, ws: usize, axis: Axis) -> bool {
    let mut p = ws;
    loop {
        let before = s[..p].trim_end_matches(|c: char| c.is_whitespace() || "/,&|(".contains(c));
        let w_len = before.bytes().rev().take_while(u8::is_ascii_alphabetic).count();
        if w_len == 0 {
            return false;
        }
        let w = &before[before.len() - w_len..];
        if matches!(w.to_ascii_lowercase().as_str(), "and" | "or") && before.len() - w_len < p {
            p = before.len() - w_len;
            continue;
        }
        return label_axis(w).is_some_and(|a| a != axis);
    }
}

/// The value after a label ending at `p0`: the angle and the hemisphere written with it.
fn value_after_label(scan: &Scan, p0: usize) -> Option<(Angle, Option<Hemi>)> {
    let s = scan.s;
    let mut p = p0;
    let mut prefix = None;
    loop {
        if p > p0 + 48 {
            return None;
        }
        let c = next_char(s, p)?;
        if c.is_whitespace() || "\"'`“”‘’*_:=：.()[]~≈→".contains(c) {
            p += c.len_utf8();
            continue;
        }
        if c == '-' {
            if s[p..].starts_with("->") {
                p += 2;
                continue;
            }
            if next_char(s, p + 1).is_some_and(char::is_whitespace) {
                p += 1;
                continue;
            }
        }
        if c.is_ascii_alphabetic() {
            let w = word_at(s, p);
            if LABEL_FILLERS.contains(&w.to_ascii_lowercase().as_str()) {
                p += w.len();
                continue;
            }
            let (h, e) = hemi_at(s, p)?;
            prefix = Some(h);
            p = skip_spaces(s, e);
        }
        break;
    }
    let a = angle_at(scan, scan.num_at(p)?);
    let hemi = prefix.or_else(|| hemi_at(s, skip_spaces(s, a.end)).map(|(h, _)| h));
    Some((a, hemi))
}

fn find_labelled(scan: &Scan) -> Option<Found> {
    let s = scan.s;
    let b = s.as_bytes();
    let (mut lat, mut lon): (Option<Angle>, Option<Angle>) = (None, None);
    let (mut lat_v, mut lon_v) = (0.0, 0.0);
    let mut i = 0;
    while i < b.len() && (lat.is_none() || lon.is_none()) {
        if !b[i].is_ascii_alphabetic() || (i > 0 && b[i - 1].is_ascii_alphabetic()) {
            i += 1;
            continue;
        }
        let w = word_at(s, i);
        let we = i + w.len();
        let axis = label_axis(w);
        if let Some(axis) = axis
            && !is_header_label(s, i, axis)
            && let Some((a, hemi)) = value_after_label(scan, we)
        {
            let v = match hemi {
                None => Some(a.value),
                Some(h) if h.is_lat() == (axis == Axis::Lat) => a.with_hemi(h),
                Some(_) => None,
            };
            if let Some(v) = v {
                match axis {
                    Axis::Lat if lat.is_none() => (lat, lat_v) = (Some(a), v),
                    Axis::Lon if lon.is_none() => (lon, lon_v) = (Some(a), v),
                    _ => {}
                }
            }
        }
        i = we;
    }
    let (lat, lon) = (lat?, lon?);
    if let Some(note) = lat.invalid.or(lon.invalid) {
        return Some(Found::Invalid(note));
    }
    Some(Found::Pair(lat_v, lon_v))
}

// ---------------------------------------------------------------------------------------------
// Rule: JSON

/// The JSON rule stops after scanning this many bytes in total for balanced objects (only texts
/// with very many unbalanced `{` reach it; each candidate scans at most to the end of the text).
const JSON_SCAN_BUDGET: usize = 1 << 24;

/// Byte just past the balanced object starting at `start` (which holds `{`), string-aware.
fn object_end(s: &str, start: usize) -> Option<usize> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (j, &c) in s.as_bytes().iter().enumerate().skip(start) {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `t` with every comma that (outside strings) is followed only by whitespace and `}` or `]`
/// removed.
fn strip_trailing_commas(t: &str) -> String {
    let b = t.as_bytes();
    let mut out = String::with_capacity(t.len());
    let (mut in_str, mut esc) = (false, false);
    for (j, c) in t.char_indices() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ',' {
            let k = j + 1 + b[j + 1..].iter().take_while(|x| x.is_ascii_whitespace()).count();
            if k < b.len() && (b[k] == b'}' || b[k] == b']') {
                continue;
            }
        }
        out.push(c);
    }
    out
}

fn json_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(t) => whole_number(t),
        _ => None,
    }
}

fn find_json(s: &str) -> Option<Found> {
    use serde_json::{Map, Value};
    let mut budget = JSON_SCAN_BUDGET;
    for (i, _) in s.match_indices('{') {
        let end = object_end(s, i);
        let scanned = end.unwrap_or(s.len()) - i;
        if scanned > budget {
            break;
        }
        budget -= scanned;
        let Some(end) = end else { continue };
        let sub = &s[i..end];
        let parsed = serde_json::from_str::<Map<String, Value>>(sub)
            .or_else(|_| serde_json::from_str::<Map<String, Value>>(&strip_trailing_commas(sub)));
        let Ok(obj) = parsed else { continue };
        let key = |names: &[&str]| {
            names.iter().find_map(|name| {
                obj.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).and_then(|(_, v)| json_number(v))
            })
        };
        if let (Some(lat), Some(lon)) = (key(&["latitude", "lat"]), key(&["longitude", "lon", "lng", "long"])) {
            return Some(Found::Pair(lat, lon));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Rule: marked angles (hemisphere letters, degree signs, DMS)

/// Whitespace and at most one of `,;/`.
fn is_pair_gap(g: &str) -> bool {
    let t = g.trim();
    t.is_empty() || matches!(t, "," | ";" | "/")
}

/// Rule 3 of `lenient`: hemisphere-marked angles, else the first adjacent pair of
/// degree-marked angles.
fn find_marked(scan: &Scan) -> Option<Found> {
    find_hemispheres(scan).or_else(|| find_degree_pair(scan))
}

fn find_hemispheres(scan: &Scan) -> Option<Found> {
    let s = scan.s;
    let angles = all_angles(scan);
    if angles.is_empty() {
        return None;
    }
    // Hemisphere tokens outside numbers.
    let b = s.as_bytes();
    let mut in_num = vec![false; b.len()];
    for n in &scan.nums {
        in_num[n.start..n.end].fill(true);
    }
    let inside_num = |i: usize| in_num[i];
    let mut hemis = Vec::new();
    for i in 0..b.len() {
        if b[i].is_ascii_alphabetic()
            && !(i > 0 && b[i - 1].is_ascii_alphabetic())
            && !inside_num(i)
            && let Some((h, e)) = hemi_at(s, i)
        {
            hemis.push((h, i, e));
        }
    }
    let gap_ok = |from: usize, to: usize| from <= to && s[from..to].chars().all(is_space);
    let suffix_of = |hs: usize| angles.iter().rposition(|a| a.end <= hs).filter(|&k| gap_ok(angles[k].end, hs));
    let prefix_of = |he: usize| angles.iter().position(|a| a.start >= he).filter(|&k| gap_ok(he, angles[k].start));
    let suffix_mode = hemis.iter().find_map(|&(_, hs, he)| match (suffix_of(hs), prefix_of(he)) {
        (Some(_), _) => Some(true),
        (None, Some(_)) => Some(false),
        _ => None,
    })?;
    let mut attached: Vec<Option<(Hemi, f64)>> = vec![None; angles.len()];
    // Byte extent of each angle including its attached letter.
    let mut extent: Vec<(usize, usize)> = angles.iter().map(|a| (a.start, a.end)).collect();
    for &(h, hs, he) in &hemis {
        let k = if suffix_mode { suffix_of(hs) } else { prefix_of(he) };
        if let Some(k) = k
            && attached[k].is_none()
            && let Some(v) = angles[k].with_hemi(h)
        {
            attached[k] = Some((h, v));
            extent[k] = if suffix_mode { (extent[k].0, he) } else { (hs, extent[k].1) };
        }
    }
    let first_axis = |lat: bool| attached.iter().position(|x| x.is_some_and(|(h, _)| h.is_lat() == lat));
    let value = |k: usize| attached[k].map_or(angles[k].value, |(_, v)| v);
    let (lat_k, lon_k) = match (first_axis(true), first_axis(false)) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) | (None, Some(a)) => {
            let is_lat = attached[a].is_some_and(|(h, _)| h.is_lat());
            let adjacent = |x: usize, y: usize| extent[x].1 <= extent[y].0 && is_pair_gap(&s[extent[x].1..extent[y].0]);
            let next = (a + 1 < angles.len() && adjacent(a, a + 1)).then_some(a + 1);
            let prev = (a > 0 && adjacent(a - 1, a)).then(|| a - 1);
            let partner = next.filter(|&k| attached[k].is_none()).or(prev.filter(|&k| attached[k].is_none()))?;
            if is_lat { (a, partner) } else { (partner, a) }
        }
        (None, None) => return None,
    };
    if let Some(note) = angles[lat_k].invalid.clone().or_else(|| angles[lon_k].invalid.clone()) {
        return Some(Found::Invalid(note));
    }
    Some(Found::Pair(value(lat_k), value(lon_k)))
}

/// Degree-marked angles without any hemisphere letter: the first adjacent pair.
fn find_degree_pair(scan: &Scan) -> Option<Found> {
    let angles = all_angles(scan);
    let k = (0..angles.len().saturating_sub(1)).find(|&k| {
        angles[k].marked && angles[k + 1].marked && is_pair_gap(&scan.s[angles[k].end..angles[k + 1].start])
    })?;
    if let Some(note) = angles[k].invalid.clone().or_else(|| angles[k + 1].invalid.clone()) {
        return Some(Found::Invalid(note));
    }
    Some(Found::Pair(angles[k].value, angles[k + 1].value))
}

// ---------------------------------------------------------------------------------------------
// Rule: number pair, and the lat_lon line rule

/// Consecutive numbers separated only by one `,` or `;` and whitespace.
fn comma_pairs<'s>(scan: &'s Scan) -> impl Iterator<Item = (&'s Num, &'s Num)> + 's {
    scan.nums.windows(2).filter(|w| matches!(scan.s[w[0].end..w[1].start].trim(), "," | ";")).map(|w| (&w[0], &w[1]))
}

/// Rule 4 of `lenient`: the first comma pair of decimal numbers that is a valid coordinate,
/// else the first comma pair of any numbers that is.
fn find_number_pair(scan: &Scan) -> Option<Found> {
    let valid = |a: &Num, b: &Num| a.value.abs() <= 90.0 && b.value.abs() <= 180.0;
    comma_pairs(scan)
        .find(|(a, b)| a.frac && b.frac && valid(a, b))
        .or_else(|| comma_pairs(scan).find(|(a, b)| valid(a, b)))
        .map(|(a, b)| Found::Pair(a.value, b.value))
}

/// Rule 6 of `lenient`: the first comma pair at all (only reached when it is out of range).
fn find_any_comma_pair(scan: &Scan) -> Option<Found> {
    comma_pairs(scan).next().map(|(a, b)| Found::Pair(a.value, b.value))
}

const WRAPPERS: &str = "()[]{}<>*\"'`“”‘’";

fn find_lat_lon_line(s: &str, length: bool) -> Option<Found> {
    for line in s.lines() {
        let t = line
            .trim_start_matches(|c: char| c.is_whitespace() || WRAPPERS.contains(c))
            .trim_end_matches(|c: char| c.is_whitespace() || WRAPPERS.contains(c) || c == '.');
        let mut parts = t.split(',');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else { continue };
        let quotes = |c: char| c.is_whitespace() || "\"'`“”‘’".contains(c);
        let (a, b) = (a.trim_matches(quotes), b.trim_matches(quotes));
        let (Some(lat), Some(lon)) = (whole_number(a), whole_number(b)) else { continue };
        if length {
            let end = b.as_ptr() as usize - s.as_ptr() as usize + b.len();
            let n = scan_numbers(b)[0];
            if may_continue(&s[end..], &n) {
                continue;
            }
        }
        return Some(Found::Pair(lat, lon));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ParserSpec::{FirstTwo as F2, Json as J, LastTwo as L2, LatLon as LL, Lenient as LN};
    use Status::{InvalidCoords, Ok as OK, Refused, Truncated, Unparseable};

    const LEN: Option<&str> = Some("length");
    const STOP: Option<&str> = Some("stop");

    fn dms(d: f64, m: f64, s: f64) -> f64 {
        d + m / 60.0 + s / 3600.0
    }

    /// Parses and checks the [`Parsed`] invariants; returns the result.
    fn run(spec: &ParserSpec, text: &str, fr: Option<&str>) -> Parsed {
        let p = spec.build().parse(text, fr);
        assert_eq!(p.coord.is_some(), p.status == Status::Ok, "{text:?}: {p:?}");
        assert_eq!(p.note.is_some(), p.status != Status::Ok, "{text:?}: {p:?}");
        if let Some(c) = p.coord {
            assert!(LatLon::new(c.lat, c.lon).is_ok(), "{text:?}: {c:?}");
        }
        p
    }

    fn check(spec: ParserSpec, text: &str, fr: Option<&str>, status: Status, coord: Option<(f64, f64)>) {
        let p = run(&spec, text, fr);
        assert_eq!(p.status, status, "[{}] {text:?} ({fr:?}): {p:?}", spec.name());
        if let Some((lat, lon)) = coord {
            let c = p.coord.unwrap();
            assert!(
                (c.lat - lat).abs() < 1e-6 && (c.lon - lon).abs() < 1e-6,
                "[{}] {text:?}: got {c:?}, want ({lat}, {lon})",
                spec.name()
            );
        }
    }

    type Case = (&'static str, Option<&'static str>, ParserSpec, Status, Option<(f64, f64)>);

    /// Real-looking answers: (text, finish_reason, parser, status, coordinate).
    fn corpus() -> Vec<Case> {
        vec![
            // Plain pairs.
            ("48.8566, 2.3522", STOP, LN, OK, Some((48.8566, 2.3522))),
            ("48.8566, 2.3522", STOP, F2, OK, Some((48.8566, 2.3522))),
            ("48.8566, 2.3522", STOP, L2, OK, Some((48.8566, 2.3522))),
            ("48.8566,2.3522", None, LN, OK, Some((48.8566, 2.3522))),
            ("(48.8566, 2.3522)", STOP, LL, OK, Some((48.8566, 2.3522))),
            ("[-33.8688, 151.2093]", STOP, LL, OK, Some((-33.8688, 151.2093))),
            ("\"40.7128, -74.0060\"", STOP, LL, OK, Some((40.7128, -74.006))),
            ("'-33.9249', '18.4241'", STOP, LL, OK, Some((-33.9249, 18.4241))),
            ("My best guess:\n35.6762, 139.6503", STOP, LL, OK, Some((35.6762, 139.6503))),
            ("Paris, France\n48.85, 2.35.", STOP, LL, OK, Some((48.85, 2.35))),
            ("The coordinates are 48.85, 2.35", STOP, LL, Unparseable, None),
            ("<answer>48.8566, 2.3522</answer>", STOP, LL, Unparseable, None),
            ("<answer>48.8566, 2.3522</answer>", STOP, LN, OK, Some((48.8566, 2.3522))),
            ("35, 139", STOP, LN, OK, Some((35.0, 139.0))),
            ("35, 139", STOP, LL, OK, Some((35.0, 139.0))),
            ("35, 139", STOP, F2, Unparseable, None),
            ("Answer: 48.85 2.35", STOP, LN, OK, Some((48.85, 2.35))),
            ("Final answer: 90.0, 180.0", STOP, LN, OK, Some((90.0, 180.0))),
            ("Final answer: -90.0, -180.0", STOP, F2, OK, Some((-90.0, -180.0))),
            ("\u{2212}33.8688, 151.2093", STOP, LN, OK, Some((-33.8688, 151.2093))),
            ("Coordinates: -0.0, -0.0", STOP, LN, OK, Some((0.0, 0.0))),
            ("1.5e1, 3.2E1", STOP, F2, OK, Some((15.0, 32.0))),
            ("1.5e1, 3.2E1", STOP, LN, OK, Some((15.0, 32.0))),
            // Refusals and text without an answer.
            ("I'm sorry, but I can't determine the location of this image.", STOP, LN, Refused, None),
            ("I\u{2019}m sorry, I can\u{2019}t help with identifying locations.", STOP, F2, Refused, None),
            ("As an AI, I cannot pinpoint exact locations from photos.", STOP, J, Refused, None),
            ("It is not possible to determine the exact location from this image alone.", STOP, LN, Refused, None),
            (
                "Unfortunately the image does not contain enough\n  information. I am unable to guess.",
                STOP,
                LL,
                Refused,
                None,
            ),
            ("I'm unable to tell.", STOP, L2, Refused, None),
            ("", STOP, LN, Unparseable, None),
            ("   \n ", None, F2, Unparseable, None),
            ("The image shows a beach with palm trees.", STOP, LN, Unparseable, None),
            (
                "It looks like a large city in North America or East Asia; I cannot tell which.",
                STOP,
                LN,
                Unparseable,
                None,
            ),
            ("I'm sorry, but I can't determine where this photo was taken.", STOP, LN, Refused, None),
            (
                "I cannot determine the exact location, but my best guess is 41.9028, 12.4964.",
                STOP,
                LN,
                OK,
                Some((41.9028, 12.4964)),
            ),
            // Prose with distracting numbers before the answer.
            (
                "Step 1: The architecture suggests Europe. Step 2: The signs are French. Final answer: 48.8566, 2.3522",
                STOP,
                F2,
                OK,
                Some((48.8566, 2.3522)),
            ),
            (
                "Step 1: The architecture suggests Europe. Step 2: The signs are French. Final answer: 48.8566, 2.3522",
                STOP,
                LN,
                OK,
                Some((48.8566, 2.3522)),
            ),
            ("In 2019 I visited Tokyo. My guess is 35.6762, 139.6503.", STOP, F2, OK, Some((35.6762, 139.6503))),
            (
                "On 12.03.2024 the photo was taken near the Colosseum: 41.8902, 12.4922",
                STOP,
                F2,
                OK,
                Some((41.8902, 12.4922)),
            ),
            ("Version 1.2.3 of the model says 1.5, 2.5", STOP, F2, OK, Some((1.5, 2.5))),
            ("The photo shows Route 66 near 35.19, -111.65", STOP, F2, OK, Some((35.19, -111.65))),
            ("COVID-19 signage; 1.3521, 103.8198", STOP, LN, OK, Some((1.3521, 103.8198))),
            (
                "Candidates: 40.71, -74.00 or 34.05, -118.24. Final: 34.0522, -118.2437",
                STOP,
                L2,
                OK,
                Some((34.0522, -118.2437)),
            ),
            ("The answer is (48.85, 2.35). Confidence: 80%", STOP, L2, OK, Some((48.85, 2.35))),
            // JSON.
            ("```json\n{\"latitude\": 48.8584, \"longitude\": 2.2945}\n```", STOP, J, OK, Some((48.8584, 2.2945))),
            ("```json\n{\"latitude\": 48.8584, \"longitude\": 2.2945}\n```", STOP, LN, OK, Some((48.8584, 2.2945))),
            (
                "Sure! Here is my answer:\n```json\n{\n  \"latitude\": -22.9519,\n  \"longitude\": -43.2105,\n}\n```\nThis is Rio.",
                STOP,
                J,
                OK,
                Some((-22.9519, -43.2105)),
            ),
            (
                "{\"answer\": {\"lat\": \"51.5007\", \"lng\": \"-0.1246\"}, \"confidence\": 0.7}",
                STOP,
                J,
                OK,
                Some((51.5007, -0.1246)),
            ),
            (
                "{\"reasoning\": \"tropical {humid}\", \"confidence\": 0.4} {\"Latitude\": 1.2903, \"Longitude\": 103.8519}",
                STOP,
                J,
                OK,
                Some((1.2903, 103.8519)),
            ),
            ("{\"LAT\": 35, \"Long\": 139}", STOP, J, OK, Some((35.0, 139.0))),
            ("{\"lat\": 35.0, \"lon\": 139.0}", STOP, LN, OK, Some((35.0, 139.0))),
            ("{\"latitude\": null, \"longitude\": null}\nI cannot determine the location.", STOP, J, Refused, None),
            ("{\"latitude\": 123.4, \"longitude\": 2.35}", STOP, J, InvalidCoords, None),
            ("{\"latitude\": 48.85, \"longitude\": ", LEN, J, Truncated, None),
            ("latitude: 48.85\nlongitude: 2.35", STOP, J, Unparseable, None),
            ("{'latitude': 48.85, 'longitude': 2.35}", STOP, J, Unparseable, None),
            ("{'latitude': 48.85, 'longitude': 2.35}", STOP, LN, OK, Some((48.85, 2.35))),
            // Labelled values.
            ("Longitude: 2.3522, Latitude: 48.8566", STOP, LN, OK, Some((48.8566, 2.3522))),
            ("latitude: 48.85, longitude: 2.35", STOP, LN, OK, Some((48.85, 2.35))),
            ("lat=-33.87; lon=151.21", STOP, LN, OK, Some((-33.87, 151.21))),
            ("**Latitude:** 40.4168\u{b0} N\n**Longitude:** 3.7038\u{b0} W", STOP, LN, OK, Some((40.4168, -3.7038))),
            (
                "The latitude is approximately 55.7558 and the longitude is approximately 37.6173.",
                STOP,
                LN,
                OK,
                Some((55.7558, 37.6173)),
            ),
            ("Latitude: 33.87\u{b0} S, Longitude: 151.21\u{b0} E", STOP, LN, OK, Some((-33.87, 151.21))),
            ("lat/lon: 48.8566, 2.3522", STOP, LN, OK, Some((48.8566, 2.3522))),
            (
                "Lat/Lon: 48.8566, 2.3522. A latitude of 48.8566 means northern France.",
                STOP,
                LN,
                OK,
                Some((48.8566, 2.3522)),
            ),
            ("Latitude and longitude: 52.52, 13.405", STOP, LN, OK, Some((52.52, 13.405))),
            ("Latitude (approx.): 64.1466 - Longitude (approx.): -21.9426", STOP, LN, OK, Some((64.1466, -21.9426))),
            ("Latitude: 123.4, Longitude: 2.35", STOP, LN, InvalidCoords, None),
            // Hemisphere letters and degree signs.
            ("48.8566\u{b0} N, 2.3522\u{b0} E", STOP, LN, OK, Some((48.8566, 2.3522))),
            ("33.8688 S 151.2093 E", STOP, LN, OK, Some((-33.8688, 151.2093))),
            ("N 48.85 E 2.35", STOP, LN, OK, Some((48.85, 2.35))),
            ("S 22.9068, W 43.1729", STOP, LN, OK, Some((-22.9068, -43.1729))),
            ("151.2093\u{b0} E, 33.8688\u{b0} S", STOP, LN, OK, Some((-33.8688, 151.2093))),
            ("Location: 19.4326\u{b0}N 99.1332\u{b0}W (Mexico City)", STOP, LN, OK, Some((19.4326, -99.1332))),
            ("It is about 64 degrees north, 21.9 degrees west, in Reykjavik.", STOP, LN, OK, Some((64.0, -21.9))),
            ("33.8688\u{b0} S, 151.2093\u{b0}", STOP, LN, OK, Some((-33.8688, 151.2093))),
            ("48.85\u{b0}, 2.35\u{b0}", STOP, LN, OK, Some((48.85, 2.35))),
            ("48.85 N, 2.35 W", STOP, F2, OK, Some((48.85, 2.35))),
            ("It's one of the 5 boroughs: 40.7128\u{b0} N, 74.0060\u{b0} W", STOP, LN, OK, Some((40.7128, -74.006))),
            // Degrees, minutes, seconds.
            ("48\u{b0}51'24\"N 2\u{b0}21'03\"E", STOP, LN, OK, Some((dms(48., 51., 24.), dms(2., 21., 3.)))),
            (
                "40\u{b0} 41\u{2032} 21\u{2033} N, 74\u{b0} 2\u{2032} 40\u{2033} W",
                STOP,
                LN,
                OK,
                Some((dms(40., 41., 21.), -dms(74., 2., 40.))),
            ),
            (
                "Coordinates: 51\u{b0}30\u{2019}26\u{201d}N 0\u{b0}7\u{2019}39\u{201d}W",
                STOP,
                LN,
                OK,
                Some((dms(51., 30., 26.), -dms(0., 7., 39.))),
            ),
            ("48 51 24 N 2 21 3 E", STOP, LN, OK, Some((dms(48., 51., 24.), dms(2., 21., 3.)))),
            ("34\u{b0}03.2'S 18\u{b0}25.1'E", STOP, LN, OK, Some((-dms(34., 3.2, 0.), dms(18., 25.1, 0.)))),
            ("48\u{b0}75'00\"N 2\u{b0}21'03\"E", STOP, LN, InvalidCoords, None),
            // Out of range: reported, never clamped or swapped.
            ("91.5, 200.0", STOP, F2, InvalidCoords, None),
            ("123.4, 2.35", STOP, LN, InvalidCoords, None),
            ("2.35, 123.4", STOP, LN, OK, Some((2.35, 123.4))),
            ("200, 100", STOP, LN, InvalidCoords, None),
            ("200.0, 10.0\n48.85, 2.35", STOP, LL, InvalidCoords, None),
            ("lat: 1e400, lon: 0.0", STOP, LN, InvalidCoords, None),
            // Truncated output.
            ("Latitude: 48.85, Longitude: 2.3", LEN, LN, Truncated, None),
            ("Based on the vegetation and architecture, the location is likely 35.68", LEN, F2, Truncated, None),
            ("Let me think step by step. The road markings are yellow, which suggests", LEN, LN, Truncated, None),
            ("I'm sorry, but I cannot", LEN, LN, Truncated, None),
            ("lat 200, lon 10, and then", LEN, LN, InvalidCoords, None),
            ("48.85, 2.3522", LEN, F2, Truncated, None),
            ("48.85, 2.3522", LEN, LL, Truncated, None),
            ("(48.85, 2.3522)", LEN, LL, OK, Some((48.85, 2.3522))),
            ("48.85\u{b0} N, 2.35\u{b0} ", LEN, LN, Truncated, None),
            ("My answer: 48.8566, 2.3522. Now let me explain why the archi", LEN, LN, OK, Some((48.8566, 2.3522))),
        ]
    }

    #[test]
    fn corpus_table() {
        let cases = corpus();
        assert!(cases.len() >= 50, "{}", cases.len());
        for (text, fr, spec, status, coord) in cases {
            check(spec, text, fr, status, coord);
        }
    }

    #[test]
    fn every_parser_keeps_the_invariants_on_the_corpus() {
        for (text, fr, ..) in corpus() {
            for spec in ParserSpec::ALL {
                run(&spec, text, fr); // asserts coord <=> Ok, note <=> failure, coord valid
            }
        }
    }

    #[test]
    fn spec_names_serde_and_default() {
        assert_eq!(ParserSpec::default(), ParserSpec::Lenient);
        let names: Vec<_> = ParserSpec::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["lenient", "json", "first_two", "last_two", "lat_lon"]);
        for spec in ParserSpec::ALL {
            assert_eq!(serde_json::to_string(&spec).unwrap(), format!("\"{}\"", spec.name()));
            assert_eq!(serde_json::from_str::<ParserSpec>(&format!("\"{}\"", spec.name())).unwrap(), spec);
            assert_eq!(spec.build().name(), spec.name());
        }
        assert!(serde_json::from_str::<ParserSpec>("\"regex\"").is_err());
        assert!(serde_json::from_str::<ParserSpec>("\"FirstTwo\"").is_err());
    }

    fn values(s: &str) -> Vec<f64> {
        scan_numbers(s).iter().map(|n| n.value).collect()
    }

    #[test]
    fn number_rule() {
        assert_eq!(values("2024"), [2024.0]);
        assert!(!scan_numbers("2024")[0].frac, "2024 is a number but not a decimal number");
        assert_eq!(values("Step 1"), [1.0]);
        assert_eq!(values("10-20"), [10.0, 20.0]);
        assert_eq!(values("COVID-19 and lat:-33.9, x=+5"), [19.0, -33.9, 5.0]);
        assert_eq!(values("a .5 b"), Vec::<f64>::new());
        assert_eq!(values("v1.2.3, 12.03.2024, 192.168.0.1"), Vec::<f64>::new());
        assert_eq!(values("1.5e1 2E-1 3e"), [15.0, 0.2, 3.0]);
        assert!(scan_numbers("2E-1")[0].exp && !scan_numbers("2E-1")[0].frac);
        assert_eq!(values("48.85E, 2.35 E"), [48.85, 2.35]);
        assert_eq!(values("48,85"), [48.0, 85.0]);
        assert_eq!(values("\u{2212}5 and \u{2212}0.5"), [-5.0, -0.5]);
        assert_eq!(values("Qwen2.5"), [2.5]);
        let z = scan_numbers("-0.0");
        assert!(z[0].value == 0.0 && z[0].value.is_sign_negative() && z[0].frac);
        let n = scan_numbers("x 48.85° y");
        assert_eq!((n[0].start, n[0].end), (2, 7));
    }

    #[test]
    fn first_two_counts_only_decimal_numbers() {
        check(F2, "In 2024, Step 1: 48.85 then 2.35", STOP, OK, Some((48.85, 2.35)));
        let p = run(&F2, "2024, 1", STOP);
        assert_eq!(p.status, Unparseable);
        assert_eq!(p.note.as_deref(), Some("found 0 decimal number(s), need two"));
        assert_eq!(run(&F2, "just 48.85", STOP).note.as_deref(), Some("found 1 decimal number(s), need two"));
        // The order is the text's: no swapping even when the first looks like a longitude.
        check(F2, "151.21, -33.87", STOP, InvalidCoords, None);
        let p = run(&F2, "100.5, 10.5", STOP);
        assert_eq!(p.status, InvalidCoords);
        assert_eq!(p.note.as_deref(), Some("latitude 100.5 outside [-90, 90]"));
    }

    #[test]
    fn last_two_takes_the_last_decimals_in_order() {
        check(L2, "first 1.5, 2.5 then 3.5, 4.5 then 5.5, 6.5 in 2024", STOP, OK, Some((5.5, 6.5)));
        check(L2, "only 5.5 here", STOP, Unparseable, None);
        check(L2, "100.5, 10.5", STOP, InvalidCoords, None);
    }

    #[test]
    fn negative_zero_keeps_its_sign() {
        let c = run(&LN, "-0.0, -0.0", STOP).coord.unwrap();
        assert!(c.lat.is_sign_negative() && c.lon.is_sign_negative());
        let c = run(&F2, "-0.0, 0.0", STOP).coord.unwrap();
        assert!(c.lat.is_sign_negative() && !c.lon.is_sign_negative());
    }

    #[test]
    fn status_precedence() {
        // invalid beats length beats refusal beats unparseable
        check(LN, "I'm sorry. lat 95.5, lon 10.5, and", LEN, InvalidCoords, None);
        check(LN, "I'm sorry, I cannot", LEN, Truncated, None);
        check(LN, "I'm sorry, I cannot", STOP, Refused, None);
        check(LN, "no idea", STOP, Unparseable, None);
        check(J, "", LEN, Truncated, None);
        check(J, "", None, Unparseable, None);
        // only "length" means truncated
        check(LN, "Let me think", Some("stop"), Unparseable, None);
        check(LN, "Let me think", Some("content_filter"), Unparseable, None);
        check(LN, "Let me think", None, Unparseable, None);
    }

    #[test]
    fn notes_name_the_reason() {
        let note = |spec: ParserSpec, t: &str, fr| run(&spec, t, fr).note.unwrap();
        assert_eq!(note(LN, "Latitude: 123.4, Longitude: 2.35", STOP), "latitude 123.4 outside [-90, 90]");
        assert_eq!(note(LN, "Latitude: 12.4, Longitude: 200.5", STOP), "longitude 200.5 outside [-180, 180]");
        assert_eq!(note(LN, "lat: 1e400, lon: 0.0", STOP), "latitude inf is not finite");
        assert!(note(LN, "48\u{b0}75'00\"N 2\u{b0}21'03\"E", STOP).starts_with("minutes 75 not below 60"));
        assert!(note(LN, "48\u{b0}51'61\"N 2\u{b0}21'03\"E", STOP).starts_with("seconds 61 not below 60"));
        assert_eq!(note(LN, "I'm sorry, no.", STOP), "refusal (\"i'm sorry\")");
        assert_eq!(note(LN, " ", STOP), "empty output");
        assert!(note(LN, "Let me", LEN).starts_with("output cut at the length limit"));
    }

    #[test]
    fn refusal_phrases_are_matched_normalised() {
        for t in [
            "I CANNOT DETERMINE THIS",
            "i can\u{2019}t determine it",
            "I\u{2018}m sorry",
            "I am   sorry",
            "I'm\nsorry",
            "As an AI language model I won't guess",
            "There is not enough information in the picture.",
            "It is impossible to\tdetermine.",
        ] {
            assert!(refusal_phrase(t).is_some(), "{t:?}");
        }
        // Vague prose is not a refusal (it declines precision, not the task).
        for t in [
            "The sorry state of the road",
            "It is possible",
            "Canal in Amsterdam",
            "I can see a church",
            "The vegetation and the architecture suggest a warm, coastal region, but I cannot be more precise.",
            "It looks like a large city in North America or East Asia; I cannot tell which.",
        ] {
            assert_eq!(refusal_phrase(t), None, "{t:?}");
        }
        for p in REFUSAL_PHRASES {
            assert_eq!(p.to_lowercase(), *p, "phrases are stored lower-case");
            assert_eq!(run(&LN, &format!("Well, {}.", p.to_uppercase()), STOP).status, Refused, "{p}");
        }
    }

    #[test]
    fn json_rules() {
        // Outer object before nested ones, document order (not key order) between siblings.
        check(J, r#"{"lat": 1.5, "lon": 2.5, "alt": {"lat": 3.5, "lon": 4.5}}"#, STOP, OK, Some((1.5, 2.5)));
        check(J, r#"{"z": {"lat": 1.5, "lon": 2.5}, "a": {"lat": 3.5, "lon": 4.5}}"#, STOP, OK, Some((1.5, 2.5)));
        check(J, r#"{"guesses": [{"lat": 1.5, "lon": 2.5}, {"lat": 3.5, "lon": 4.5}]}"#, STOP, OK, Some((1.5, 2.5)));
        // Only one key: not an answer; a later complete object is.
        check(J, r#"{"latitude": 10.5} {"latitude": 20.5, "longitude": 30.5}"#, STOP, OK, Some((20.5, 30.5)));
        // Key variants, trimmed and case-insensitive; latitude preferred over lat.
        check(J, r#"{" Lat ": 1.5, "LNG": 2.5}"#, STOP, OK, Some((1.5, 2.5)));
        check(J, r#"{"lat": 9.5, "latitude": 1.5, "long": 2.5}"#, STOP, OK, Some((1.5, 2.5)));
        // Strings must hold exactly one number.
        check(J, r#"{"latitude": "48.85 N", "longitude": "2.35 E"}"#, STOP, Unparseable, None);
        check(J, r#"{"latitude": " -48.5 ", "longitude": "+2.5"}"#, STOP, OK, Some((-48.5, 2.5)));
        // Trailing commas in arrays and objects; braces inside strings.
        check(J, "{\"p\": [1, 2,], \"latitude\": 5.5, \"longitude\": 6.5,}", STOP, OK, Some((5.5, 6.5)));
        check(J, r#"{"note": "a } brace", "latitude": 5.5, "longitude": 6.5}"#, STOP, OK, Some((5.5, 6.5)));
        // Many brace pairs in prose before the answer are all tried.
        let long = format!("{}{}", "the {road} ".repeat(3000), r#"{"lat": 1.5, "lon": 2.5}"#);
        check(J, &long, STOP, OK, Some((1.5, 2.5)));
        // Thousands of unclosed braces end within the scan budget (no quadratic blow-up).
        let open = format!("{}{}", "{ ".repeat(20_000), r#"{"lat": 1.5, "lon": 2.5}"#);
        let t = std::time::Instant::now();
        assert_eq!(run(&J, &open, STOP).status, Unparseable);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Unbalanced: nothing.
        check(J, r#"{"latitude": 5.5, "longitude": 6.5"#, STOP, Unparseable, None);
    }

    #[test]
    fn lat_lon_line_rules() {
        check(LL, "  ( 48.85 , 2.35 )  ", STOP, OK, Some((48.85, 2.35)));
        check(LL, "**48.85, 2.35**", STOP, OK, Some((48.85, 2.35)));
        check(LL, "48.85, 2.35, 100", STOP, Unparseable, None);
        check(LL, "48.85\u{b0}, 2.35\u{b0}", STOP, Unparseable, None);
        check(LL, "x\n(200.5, 1.5)\n(48.85, 2.35)", STOP, InvalidCoords, None);
    }

    #[test]
    fn lenient_first_rule_that_finds_decides() {
        // A labelled out-of-range value is not skipped in favour of a later plain pair.
        check(LN, "Latitude: 95.5, Longitude: 10.5. Or maybe 48.85, 2.35", STOP, InvalidCoords, None);
        // Labels beat a plain pair that comes first.
        check(LN, "Nearby: 1.5, 2.5. Latitude: 48.85, Longitude: 2.35", STOP, OK, Some((48.85, 2.35)));
        // Hemisphere-marked angles beat a plain pair that comes first.
        check(LN, "Nearby: 1.5, 2.5. Final: 33.87 S, 151.21 E", STOP, OK, Some((-33.87, 151.21)));
        // Decimal comma pair preferred over an earlier integer pair.
        check(LN, "Step 1, 2: answer 48.85, 2.35", STOP, OK, Some((48.85, 2.35)));
        // An out-of-range integer pair does not hide a later valid one.
        check(LN, "In 2019, 2020 it was 35, 139", STOP, OK, Some((35.0, 139.0)));
    }

    #[test]
    fn labels_need_a_value_and_the_right_axis() {
        // A hemisphere of the other axis disqualifies a labelled value.
        assert_eq!(find_labelled(&Scan::new("Latitude: 40.5 E, Longitude: 3.5", None)), None);
        assert_eq!(find_labelled(&Scan::new("Latitude: 40.5 N, Longitude: 3.5", None)), Some(Found::Pair(40.5, 3.5)));
        // "a long way" is not a label; one labelled axis alone is not a pair.
        check(LN, "It is a long way. Latitude: 48.85", STOP, Unparseable, None);
        check(LN, "latitude 48.5 and longitude 2.5", STOP, OK, Some((48.5, 2.5)));
        check(LN, "Lat. 48.5, Lng. -2.5", STOP, OK, Some((48.5, -2.5)));
        check(LN, "LATITUDE -> 48.5 LONGITUDE -> 2.5", STOP, OK, Some((48.5, 2.5)));
        check(LN, "latitude: N 48.5, longitude: W 2.5", STOP, OK, Some((48.5, -2.5)));
        check(
            LN,
            "Latitude: 48\u{b0}51'24\"N\nLongitude: 2\u{b0}21'03\"E",
            STOP,
            OK,
            Some((dms(48., 51., 24.), dms(2., 21., 3.))),
        );
    }

    #[test]
    fn hemisphere_rules() {
        // An explicit minus contradicting N is not silently flipped: the letter is ignored.
        check(LN, "-33.87 N, 151.21 E", STOP, OK, Some((-33.87, 151.21)));
        // S and W negate; redundant minus with S stays negative.
        check(LN, "-33.87 S, 151.21 E", STOP, OK, Some((-33.87, 151.21)));
        check(LN, "33.87S151.21E", STOP, OK, Some((-33.87, 151.21)));
        // A hemisphere letter that touches no angle is not used.
        check(LN, "The S-Bahn station. 48.1351, 11.5820", STOP, OK, Some((48.1351, 11.582)));
        // Longitude marked first, latitude unmarked and adjacent.
        check(LN, "2.35 E, 48.85", STOP, OK, Some((48.85, 2.35)));
        // Prefix letters: a bare integer after a prefix letter is not read as DMS.
        check(LN, "N 48 E 2", STOP, OK, Some((48.0, 2.0)));
        // Space-separated degrees and decimal minutes, with a following letter.
        check(LN, "48 51.4 N, 2 21.05 E", STOP, OK, Some((dms(48., 51.4, 0.), dms(2., 21.05, 0.))));
        // Out of range with hemispheres.
        check(LN, "95.5 N, 10.5 E", STOP, InvalidCoords, None);
        check(LN, "10.5 N, 190.5 W", STOP, InvalidCoords, None);
    }

    #[test]
    fn no_panic_and_invariants_on_random_text() {
        const TOKENS: &[&str] = &[
            "48",
            ".",
            "5",
            "-",
            "+",
            "\u{2212}",
            "\u{b0}",
            "'",
            "\"",
            "\u{2032}",
            "\u{2033}",
            "N",
            "S",
            "E",
            "W",
            " ",
            ",",
            ";",
            "lat",
            "Longitude",
            "{",
            "}",
            "[",
            "]",
            "\"latitude\"",
            ":",
            "e",
            "\n",
            "\u{e9}",
            "\u{65e5}",
            "sorry",
            "I cannot",
            "deg",
            "(",
            ")",
            "/",
            "and",
            "0",
            "199",
            "1e400",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut oks = 0;
        for _ in 0..3000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len).map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize]).collect();
            let fr = [None, STOP, LEN][(next() % 3) as usize];
            for spec in ParserSpec::ALL {
                oks += (run(&spec, &text, fr).status == Status::Ok) as usize;
            }
        }
        assert!(oks > 0, "the generator should produce some parseable answers");
    }

    #[test]
    fn truncation_only_distrusts_numbers_at_the_very_end() {
        check(F2, "48.85, 2.35 and so on", LEN, OK, Some((48.85, 2.35)));
        check(F2, "48.85, 2.35 and so on", STOP, OK, Some((48.85, 2.35)));
        check(F2, "48.85, 2.3522", STOP, OK, Some((48.85, 2.3522)));
        check(LN, "lat 48.85, lon 2.35 N", LEN, Truncated, None);
        check(LN, "lat 48.85, lon 2 .", LEN, Truncated, None);
        check(LN, "48.85 N, 2.35 E.", LEN, OK, Some((48.85, 2.35)));
        let n = scan_numbers("2");
        assert!(may_continue("", &n[0]) && may_continue(".", &n[0]) && may_continue(" No", &n[0]));
        assert!(may_continue("e-", &n[0]) && may_continue("\u{b0} ", &n[0]));
        assert!(!may_continue(")", &n[0]) && !may_continue(" and", &n[0]) && !may_continue(" Nx", &n[0]));
        let f = scan_numbers("2.5");
        assert!(!may_continue(".", &f[0]), "2.5. ends a sentence");
    }
}
