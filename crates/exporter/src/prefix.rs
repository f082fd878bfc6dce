//! Weight names walked by prefix, as candle's `VarBuilder::pp` does:
//! `Prefix::root().pp("blocks").pp(3).pp("self_attn")` names `blocks.3.self_attn`, so the exporter's
//! structure follows the checkpoint tree and an error names the layer it is about.

use std::fmt;
use std::ops::Deref;

/// A dotted weight-name prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// The empty prefix (top of the checkpoint tree).
    pub fn root() -> Prefix {
        Prefix::default()
    }

    /// This prefix with `part` appended (`blocks` → `blocks.3`).
    pub fn pp(&self, part: impl fmt::Display) -> Prefix {
        if self.0.is_empty() {
            Prefix(part.to_string())
        } else {
            Prefix(format!("{}.{part}", self.0))
        }
    }

    /// `name` relative to this prefix (`blocks.3.ffn.0.weight` below `blocks.3` is `ffn.0.weight`).
    pub fn relative<'a>(&self, name: &'a str) -> Option<&'a str> {
        if self.0.is_empty() {
            return Some(name);
        }
        name.strip_prefix(self.0.as_str())?.strip_prefix('.')
    }
}

impl Deref for Prefix {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_walk_the_checkpoint_tree() {
        let attention = Prefix::root().pp("blocks").pp(3).pp("self_attn");
        assert_eq!(&*attention, "blocks.3.self_attn");
        assert_eq!(
            &*attention.pp("q").pp("weight"),
            "blocks.3.self_attn.q.weight"
        );
        let block = Prefix::root().pp("blocks").pp(3);
        assert_eq!(
            block.relative("blocks.3.ffn.0.weight"),
            Some("ffn.0.weight")
        );
        assert_eq!(block.relative("blocks.30.ffn.0.weight"), None);
        assert_eq!(block.relative("blocks.3"), None);
        assert_eq!(
            Prefix::root().relative("head.modulation"),
            Some("head.modulation")
        );
    }
}
