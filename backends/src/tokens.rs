//! Token estimates for models that have no tokenizer of their own.
//!
//! Real backends count with the model's tokenizer; the synthetic backend and
//! the scheduler's cost estimate use this rule of thumb (about four bytes of
//! English per token, at least one token per word).

/// Estimated tokens in `text`.
pub fn estimate(text: &str) -> u32 {
    let words = text.split_whitespace().count();
    let by_bytes = text.len().div_ceil(4);
    saturate(words.max(by_bytes))
}

/// Clamp a count into `u32`.
pub(crate) fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_grow_with_text() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("a b c d e"), 5);
        assert_eq!(estimate("internationalisation"), 5);
        assert!(estimate(&"word ".repeat(100)) >= 100);
    }
}
