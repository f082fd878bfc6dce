//! The umT5 text encoder at run time: prompt cleaning as upstream, the `tokenizer.json`
//! tokenizer padded / truncated to 512 tokens, and the exported encoder graph.
//!
//! Reference: SkyReels-V2 `HuggingfaceTokenizer(clean="whitespace")`
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/tokenizers.py>)
//! and diffusers' `prompt_clean` in the SkyReels-V2 pipelines: `ftfy.fix_text` → `html.unescape`
//! twice → strip → collapse whitespace runs to one space → strip, then
//! `tokenizer(text, padding="max_length", max_length=512, truncation=True, add_special_tokens=True)`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use skyreels_contract::manifest::Component;
use skyreels_contract::text::{
    ATTENTION_MASK, ENCODER_GRAPH, INPUT_IDS, TEXT_HIDDEN_STATES, TextEncoderComponent,
};
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, TruncationDirection, TruncationParams,
    TruncationStrategy,
};
use unicode_normalization::UnicodeNormalization;

use crate::dit::placement::WeightPlacement;
use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::session::{Backend, GraphSession, TensorPool};
use crate::tensor::Tensor;
use crate::text_layers::LayeredEncoder;

/// Python's `str.isspace`: Unicode `White_Space` plus the separators U+001C–U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Windows-1252 for bytes 0x80–0x9F; the five undefined bytes map to the same C1 code point,
/// as in ftfy's "sloppy" codec and Python's `html._invalid_charrefs`.
const CP1252_HIGH: [u32; 32] = [
    0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
];

fn cp1252_char(byte: u8) -> char {
    match byte {
        0x80..=0x9F => char::from_u32(CP1252_HIGH[(byte - 0x80) as usize]).unwrap_or('\u{fffd}'),
        other => other as char,
    }
}

/// The byte `c` came from if the text was decoded as Windows-1252, or else as Latin-1 (which
/// covers the C1 code points U+0080–U+009F), if any.
fn cp1252_byte(c: char) -> Option<u8> {
    let code = c as u32;
    if let Some(i) = CP1252_HIGH.iter().position(|&v| v == code) {
        return Some(0x80 + i as u8);
    }
    (code <= 0xFF).then_some(code as u8)
}

/// Numeric character reference as Python's `html.unescape` resolves it.
fn numeric_reference(number: Option<u32>) -> String {
    let Some(n) = number else {
        return "\u{fffd}".into();
    };
    match n {
        0x00 => "\u{fffd}".into(),
        0x0D => "\r".into(),
        0x80..=0x9F => cp1252_char(n as u8).to_string(),
        0xD800..=0xDFFF => "\u{fffd}".into(),
        n if n > 0x10FFFF => "\u{fffd}".into(),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => String::new(),
        n if n & 0xFFFE == 0xFFFE => String::new(),
        n => char::from_u32(n).map(String::from).unwrap_or_default(),
    }
}

fn entity(name_with_ampersand: &str) -> Option<&'static str> {
    htmlize::ENTITIES
        .get(name_with_ampersand.as_bytes())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Python's `html.unescape` (3.11): `&#NN;`, `&#xHH;` (semicolon optional) and the HTML5 named
/// references, including legacy names without `;` and the longest-prefix rule (`&notit;` → `¬it;`).
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '&' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let rest = &chars[i + 1..];
        if rest.first() == Some(&'#') {
            let hex = matches!(rest.get(1), Some('x' | 'X'));
            let start = if hex { 2 } else { 1 };
            let digits = rest[start..]
                .iter()
                .take_while(|c| {
                    if hex {
                        c.is_ascii_hexdigit()
                    } else {
                        c.is_ascii_digit()
                    }
                })
                .count();
            if digits > 0 {
                let text: String = rest[start..start + digits].iter().collect();
                let number = u32::from_str_radix(&text, if hex { 16 } else { 10 }).ok();
                out.push_str(&numeric_reference(number));
                let semicolon = rest.get(start + digits) == Some(&';');
                i += 1 + start + digits + semicolon as usize;
                continue;
            }
            out.push('&');
            i += 1;
            continue;
        }
        let length = rest
            .iter()
            .take(32)
            .take_while(|c| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
            .count();
        if length == 0 {
            out.push('&');
            i += 1;
            continue;
        }
        let semicolon = rest.get(length) == Some(&';');
        let name: String = rest[..length + semicolon as usize].iter().collect();
        if let Some(value) = entity(&format!("&{name}")) {
            out.push_str(value);
        } else {
            let name_chars: Vec<char> = name.chars().collect();
            let found = (2..name_chars.len()).rev().find_map(|x| {
                let prefix: String = name_chars[..x].iter().collect();
                entity(&format!("&{prefix}")).map(|v| (v, x))
            });
            match found {
                Some((value, x)) => {
                    out.push_str(value);
                    out.extend(&name_chars[x..]);
                }
                None => {
                    out.push('&');
                    out.push_str(&name);
                }
            }
        }
        i += 1 + length + semicolon as usize;
    }
    out
}

/// ftfy's entity table: HTML5 names ending in `;`, plus upper-cased forms of lower-case names
/// (`&EACUTE;` → `É`) where the upper-cased name is not itself an entity.
fn ftfy_entities() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = HashMap::new();
        for (name, value) in htmlize::ENTITIES.entries() {
            let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value))
            else {
                continue;
            };
            if !name.ends_with(';') {
                continue;
            }
            table.insert(name.to_string(), value.to_string());
        }
        let lower: Vec<(String, String)> = table
            .iter()
            .filter(|(n, _)| **n == n.to_lowercase())
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        for (name, value) in lower {
            let upper = name.to_uppercase();
            if html_unescape(&upper) == upper {
                table.insert(upper, value.to_uppercase());
            }
        }
        table
    })
}

/// ftfy's `unescape_html`: only `&#?[0-9A-Za-z]{1,24};` forms, from [`ftfy_entities`] or numeric.
fn ftfy_unescape_html(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '&' {
            let numeric = chars.get(i + 1) == Some(&'#');
            let start = i + 1 + numeric as usize;
            let length = chars[start..]
                .iter()
                .take(25)
                .take_while(|c| c.is_ascii_alphanumeric())
                .count();
            if (1..=24).contains(&length) && chars.get(start + length) == Some(&';') {
                let reference: String = chars[i..=start + length].iter().collect();
                let replaced = if let Some(value) = ftfy_entities().get(&reference) {
                    value.clone()
                } else if numeric {
                    let unescaped = html_unescape(&reference);
                    if unescaped.contains(';') {
                        reference.clone()
                    } else {
                        unescaped
                    }
                } else {
                    reference.clone()
                };
                out.push_str(&replaced);
                i = start + length + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Mojibake of UTF-8 read as Windows-1252 / Latin-1 (`cafÃ©` → `café`): every run of characters
/// whose single-byte encodings ([`cp1252_byte`]) form one well-formed multi-byte UTF-8 character
/// is replaced by that character.
fn fix_mojibake(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let bytes: Vec<Option<u8>> = chars.iter().map(|&c| cp1252_byte(c)).collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let width = match bytes[i] {
            Some(0xC2..=0xDF) => 2,
            Some(0xE0..=0xEF) => 3,
            Some(0xF0..=0xF4) => 4,
            _ => 0,
        };
        if width > 0 && i + width <= chars.len() {
            let sequence: Option<Vec<u8>> = bytes[i..i + width].iter().copied().collect();
            if let Some(decoded) = sequence.and_then(|b| String::from_utf8(b).ok()) {
                out.push_str(&decoded);
                i += width;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

fn is_removed_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

/// One pass of ftfy's character fixers after `fix_encoding`, in ftfy's order.
fn fix_characters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c as u32 {
            0x80..=0x9F => out.push(cp1252_char(c as u32 as u8)),
            _ => out.push(c),
        }
    }
    let text = out;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if let Some(expanded) = ligature(c) {
            out.push_str(expanded);
        } else if c == '\u{3000}' {
            out.push(' ');
        } else if ('\u{FF01}'..='\u{FFEF}').contains(&c) {
            out.extend(std::iter::once(c).nfkc());
        } else if c == '\u{02BC}' || ('\u{2018}'..='\u{201B}').contains(&c) {
            out.push('\'');
        } else if ('\u{201C}'..='\u{201F}').contains(&c) {
            out.push('"');
        } else {
            out.push(c);
        }
    }
    let text = out
        .replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
    let text = remove_terminal_escapes(&text);
    text.chars().filter(|&c| !is_removed_control(c)).collect()
}

/// Removes ANSI sequences `ESC [ [0-9;]* [A-Za-z]`.
fn remove_terminal_escapes(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'[') {
            let params = chars[i + 2..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == ';')
                .count();
            if chars
                .get(i + 2 + params)
                .is_some_and(char::is_ascii_alphabetic)
            {
                i += 3 + params;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The subset of `ftfy.fix_text` (ftfy 6.3, default config) that matters for prompts.
///
/// Like ftfy, the text is fixed line by line (segments end after each `\n`), and each segment
/// is fixed repeatedly until nothing changes. One pass, in ftfy's order:
/// 1. `unescape_html`: `&name;` from the HTML5 table (plus ftfy's upper-cased `&EACUTE;` forms)
///    and `&#NN;` / `&#xHH;` with their semicolon; skipped for this and every later segment once
///    a segment contains `<` (ftfy's "auto" mode).
/// 2. `fix_encoding`, reduced: each run of characters whose single bytes (Windows-1252, else
///    Latin-1 for U+0080–U+00FF) form one well-formed multi-byte UTF-8 character becomes that
///    character (`cafÃ©` → `café`, `ã\u{83}\u{84}` → `ツ`).
/// 3. `fix_c1_controls` (U+0080–U+009F read as Windows-1252), `fix_latin_ligatures` (ﬁ → fi, …),
///    `fix_character_width` (U+3000 → space, U+FF01–U+FFEF → their NFKC forms),
///    `uncurl_quotes` (‘’‚‛ʼ → ', “”„‟ → "), `fix_line_breaks` (CRLF, CR, U+2028/9, U+0085 → LF),
///    `remove_terminal_escapes` (`ESC[…m`), `remove_control_chars` (C0 except TAB/LF/FF/CR,
///    DEL, U+206A–F, BOM, U+FFF9–C).
/// 4. NFC normalisation.
///
/// Differences from ftfy: ftfy's `fix_encoding` scores "badness" and can fix mojibake from other
/// single-byte codecs (MacRoman, cp437, …), lost 0xA0 bytes (`restore_byte_a0`) and lossy
/// `�` sequences; none of that is done here. The reduced rule works character by character
/// without ftfy's badness score, so it also rewrites legitimate Latin-1 pairs that happen to
/// spell a UTF-8 sequence (a capital `Â`–`ß` followed by one of `€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ`
/// or U+00A0–U+00BF, e.g. a literal `Ã©`), which ftfy may leave alone.
/// `fix_surrogates` is moot (Rust strings hold no surrogates). Segments are not split at ftfy's
/// 1 000 000-code-point limit.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        let mut current = segment.to_string();
        loop {
            let before = current.clone();
            if unescape {
                current = ftfy_unescape_html(&current);
            }
            current = fix_mojibake(&current);
            current = fix_characters(&current);
            current = current.nfc().collect();
            if current == before {
                break;
            }
        }
        out.push_str(&current);
    }
    out
}

/// The upstream prompt cleaning: [`fix_text`] → [`html_unescape`] twice → strip → every run of
/// whitespace (Python `\s`) becomes one space → strip.
pub fn clean_prompt(prompt: &str) -> String {
    let text = fix_text(prompt);
    let text = html_unescape(&html_unescape(&text));
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if is_python_space(c) {
            pending_space = true;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
    out
}

/// A prompt as token ids and attention mask, both `max_length` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPrompt {
    /// Token ids: the prompt's tokens, `</s>`, then pad.
    pub ids: Vec<i64>,
    /// 1 for the prompt's tokens and `</s>`, 0 for padding.
    pub mask: Vec<i64>,
    /// Tokens dropped because the prompt was longer than `max_length − 1` (0 if none).
    pub truncated_tokens: usize,
}

/// `tokenizer.json` set up as the reference calls it: pad to and truncate at `max_length`.
pub struct PromptTokenizer {
    tokenizer: tokenizers::Tokenizer,
    max_length: usize,
}

impl PromptTokenizer {
    /// Loads `path`; the pad token is `<pad>` (umT5: id 0).
    pub fn from_file(path: &Path, max_length: usize) -> Result<PromptTokenizer> {
        let bad = |message: String| RuntimeError::Engine {
            path: path.to_path_buf(),
            message,
        };
        let bytes = skyreels_contract::files::read_bounded(
            path,
            "tokenizer",
            skyreels_contract::files::limit::TOKENIZER,
        )?;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| bad(format!("cannot read the tokenizer: {e}")))?;
        let pad_id = tokenizer.token_to_id("<pad>").ok_or_else(|| {
            bad("the tokenizer has no `<pad>` token; it is not a umT5 tokenizer".into())
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| bad(format!("cannot set truncation: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: "<pad>".into(),
        }));
        Ok(PromptTokenizer {
            tokenizer,
            max_length,
        })
    }

    /// Tokens per prompt.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes an already cleaned prompt (see [`clean_prompt`]), with `</s>` appended.
    pub fn tokenize(&self, cleaned: &str) -> Result<TokenizedPrompt> {
        let encoding = self
            .tokenizer
            .encode(cleaned, true)
            .map_err(|e| RuntimeError::Invalid(format!("cannot tokenize the prompt: {e}")))?;
        let truncated_tokens = match encoding.get_overflowing().is_empty() {
            true => 0,
            false => {
                let mut untruncated = self.tokenizer.clone();
                untruncated.with_padding(None);
                untruncated
                    .with_truncation(None)
                    .map_err(|e| RuntimeError::Invalid(format!("tokenizer: {e}")))?;
                let full = untruncated.encode(cleaned, true).map_err(|e| {
                    RuntimeError::Invalid(format!("cannot tokenize the prompt: {e}"))
                })?;
                full.len().saturating_sub(self.max_length)
            }
        };
        Ok(TokenizedPrompt {
            ids: encoding.get_ids().iter().map(|&i| i as i64).collect(),
            mask: encoding
                .get_attention_mask()
                .iter()
                .map(|&m| m as i64)
                .collect(),
            truncated_tokens,
        })
    }
}

/// A loaded text encoder: tokenizer plus the encoder graph.
pub struct TextEncoder {
    /// Manifest entry.
    pub component: TextEncoderComponent,
    tokenizer: PromptTokenizer,
    graphs: EncoderGraphs,
}

/// How the encoder runs.
enum EncoderGraphs {
    /// The whole encoder graph, every weight where it runs.
    Whole(GraphSession),
    /// Block by block with streamed weights.
    Layered(Box<LayeredEncoder>),
}

impl TextEncoder {
    /// Loads the tokenizer and the encoder graph of `engine`.
    pub fn load(engine: &Engine, backend: &Backend) -> Result<TextEncoder> {
        TextEncoder::load_with(engine, backend, WeightPlacement::Resident)
    }

    /// [`TextEncoder::load`] with the block weights held as `placement` says: the whole graph
    /// (resident), or block by block with the weights streamed from host memory, which needs an
    /// engine with the layer graphs ([`TextEncoderComponent::has_layer_graphs`]).
    pub fn load_with(
        engine: &Engine,
        backend: &Backend,
        placement: WeightPlacement,
    ) -> Result<TextEncoder> {
        let component = engine
            .manifest
            .text_encoder
            .clone()
            .ok_or_else(|| engine.missing(Component::TextEncoder))?;
        engine.check_backend(backend)?;
        let tokenizer = PromptTokenizer::from_file(
            &engine.dir.join(&component.tokenizer),
            component.max_length,
        )?;
        let graphs = match placement {
            WeightPlacement::Streamed => {
                if !component.has_layer_graphs() {
                    return Err(engine.error(
                        "the text encoder has no layer graphs to stream its weights\n  fix: re-export the engine with skyreels-export, or run without --offload",
                    ));
                }
                EncoderGraphs::Layered(Box::new(LayeredEncoder::load(engine, &component, backend)?))
            }
            WeightPlacement::Resident => {
                let entry =
                    engine.graph(&component.graphs, Component::TextEncoder, ENCODER_GRAPH)?;
                EncoderGraphs::Whole(GraphSession::load(&engine.dir, entry, backend)?)
            }
        };
        Ok(TextEncoder {
            component,
            tokenizer,
            graphs,
        })
    }

    /// How the block weights are held.
    pub fn placement(&self) -> WeightPlacement {
        match self.graphs {
            EncoderGraphs::Whole(_) => WeightPlacement::Resident,
            EncoderGraphs::Layered(_) => WeightPlacement::Streamed,
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &PromptTokenizer {
        &self.tokenizer
    }

    /// Cleans and tokenizes `prompt`, warning when it is truncated.
    pub fn tokenize(&self, prompt: &str) -> Result<TokenizedPrompt> {
        let tokens = self.tokenizer.tokenize(&clean_prompt(prompt))?;
        if tokens.truncated_tokens > 0 {
            tracing::warn!(
                "prompt truncated to {} tokens: {} tokens dropped",
                self.tokenizer.max_length,
                tokens.truncated_tokens
            );
        }
        Ok(tokens)
    }

    /// Runs the encoder on token ids and mask (`[1, max_length]` each): `[1, max_length, dim]`.
    pub fn encode_tokens(&mut self, tokens: &TokenizedPrompt) -> Result<Tensor> {
        let length = tokens.ids.len();
        let mut pool = TensorPool::new();
        pool.insert_i64(INPUT_IDS, vec![1, length], tokens.ids.clone())?;
        pool.insert_i64(ATTENTION_MASK, vec![1, length], tokens.mask.clone())?;
        match &mut self.graphs {
            EncoderGraphs::Whole(session) => session.run(&mut pool)?,
            EncoderGraphs::Layered(layered) => layered.run(&mut pool, [1, length], &tokens.ids)?,
        }
        let context = pool.to_host(TEXT_HIDDEN_STATES)?;
        context.check_finite(
            "the text encoder's output for a finite prompt",
            crate::tensor::BROKEN_ENGINE_FIX,
        )?;
        Ok(context)
    }

    /// Cleans, tokenizes and encodes `prompt`: `[1, 512, dim]`, rows past the prompt zeroed.
    pub fn encode(&mut self, prompt: &str) -> Result<Tensor> {
        let tokens = self.tokenize(prompt)?;
        self.encode_tokens(&tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_like_python() {
        let cases = [
            ("&amp;lt;", "&lt;"),
            ("&notit; &amp &AMP; x&lt;y", "¬it; & & x<y"),
            (
                "&#39;&#x27;&#X41&#128;&#0;&#1;&#xD800;&#1114112;",
                "''A€\u{fffd}\u{fffd}\u{fffd}",
            ),
            ("& &; &#; &bogus; &#xZ", "& &; &#; &bogus; &#xZ"),
            ("&eacute;t&eacute", "été"),
        ];
        for (input, expected) in cases {
            assert_eq!(html_unescape(input), expected, "{input:?}");
        }
    }

    #[test]
    fn fixes_text_like_ftfy() {
        let cases = [
            ("cafÃ© â€œquotesâ€\u{9d}", "café \"quotes\""),
            ("ＬＯＵＤ\u{3000}ＮＯＩＳＥＳ", "LOUD NOISES"),
            ("ﬂubberiﬁc", "flubberific"),
            ("\u{1b}[31mred\u{1b}[0m", "red"),
            ("a\r\nb\rc", "a\nb\nc"),
            ("P&EACUTE;REZ &amp; it&#x2019;s", "PÉREZ & it's"),
            ("x<y &amp;", "x<y &amp;"),
            ("Cafe\u{301}", "Café"),
        ];
        for (input, expected) in cases {
            assert_eq!(fix_text(input), expected, "{input:?}");
        }
    }

    #[test]
    fn cleans_whitespace() {
        assert_eq!(clean_prompt("  a \t\t b\n\n c\u{a0} "), "a b c");
        assert_eq!(clean_prompt(""), "");
        assert_eq!(clean_prompt("x<y &amp;amp;"), "x<y &");
    }
}
