//! DeepL's `split_sentences`: a text is cut into sentences, each translated
//! as its own job (the jobs batch together), and the translations are joined
//! with the separators the source had. A small model translates one sentence
//! far better than a paragraph, and a long text is no longer cut at the
//! output cap.
//!
//! Boundaries: `.`, `!`, `?` and `…` followed by white space and a sentence
//! start (not a lower-case letter), except after an abbreviation, an initial
//! or, in German, an ordinal number (`am 3. Oktober`); `。`, `！` and `？`
//! always; closing quotes and brackets stay with the sentence they close.
//! With `split_sentences = 1` (DeepL's default) a newline is a boundary too.

/// DeepL's `split_sentences` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `0`: every text is one job, whole.
    Off,
    /// `nonewlines`: at punctuation only; newlines stay inside sentences.
    Punctuation,
    /// `1`: at punctuation and newlines.
    PunctuationAndNewlines,
}

/// One piece of a text: the separator before it, then what is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'t> {
    pub lead: &'t str,
    pub core: &'t str,
}

/// A text cut into pieces, and the white space after the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut<'t> {
    pub pieces: Vec<Piece<'t>>,
    pub tail: &'t str,
}

/// Words that end in a period without ending the sentence (compared in
/// lower case, without the period).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "vs", "jr", "sr", "sra", "srta", "nr", "mt", "e.g", "i.e",
    "approx", "z.b", "bzw", "usw", "ca", "vgl", "ggf", "inkl", "hr", "fr", "mme", "mlle", "av", "p.ej", "ud",
    "uds", "sig", "dott",
];

/// Cut `text` into sentences, at most `max_pieces` (neighbours are joined
/// into one piece where there are more). `german` keeps `3.` before a
/// capital as an ordinal, as German writes dates.
pub fn cut(text: &str, split: Split, german: bool, max_pieces: usize) -> Cut<'_> {
    let mut cut = sentences(text, split, german);
    let n = cut.pieces.len();
    let max = max_pieces.max(1);
    if n > max {
        let group = n.div_ceil(max);
        cut.pieces = cut
            .pieces
            .chunks(group)
            .map(|g| {
                let (first, last) = (g[0], g[g.len() - 1]);
                Piece { lead: first.lead, core: span(text, first.core, last.core) }
            })
            .collect();
    }
    cut
}

/// The part of `text` from the start of `first` to the end of `last`, both
/// slices of it.
fn span<'t>(text: &'t str, first: &str, last: &str) -> &'t str {
    let offset = |s: &str| s.as_ptr() as usize - text.as_ptr() as usize;
    &text[offset(first)..offset(last) + last.len()]
}

fn sentences(text: &str, split: Split, german: bool) -> Cut<'_> {
    let body_end = text.trim_end().len();
    let tail = &text[body_end..];
    let body = &text[..body_end];
    let start = body.len() - body.trim_start().len();
    let mut pieces = Vec::new();
    if split == Split::Off {
        if !body.is_empty() {
            pieces.push(Piece { lead: &body[..start], core: &body[start..] });
        }
        return Cut { pieces, tail };
    }
    let mut lead_start = 0;
    let mut core_start = start;
    let chars: Vec<(usize, char)> = body.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let end = if split == Split::PunctuationAndNewlines && c == '\n' {
            // The newline and any white space after it lead the next piece.
            Some(at)
        } else if is_full_stop(c) || (is_stop(c) && ends_sentence(body, &chars, i, german)) {
            let mut j = i + 1;
            while j < chars.len()
                && (is_stop(chars[j].1) || is_full_stop(chars[j].1) || is_closing(chars[j].1))
            {
                j += 1;
            }
            i = j - 1;
            Some(chars.get(j).map_or(body.len(), |&(p, _)| p))
        } else {
            None
        };
        i += 1;
        let Some(end) = end else { continue };
        if end > core_start && !body[core_start..end].trim().is_empty() {
            pieces.push(Piece { lead: &body[lead_start..core_start], core: &body[core_start..end] });
            lead_start = end;
        }
        // Skip the white space after the boundary: it leads the next piece.
        let mut next = end;
        while let Some(c) = body[next..].chars().next().filter(|c| c.is_whitespace()) {
            next += c.len_utf8();
        }
        core_start = next;
        while i < chars.len() && chars[i].0 < next {
            i += 1;
        }
    }
    if core_start < body.len() {
        pieces.push(Piece { lead: &body[lead_start..core_start], core: &body[core_start..] });
    }
    Cut { pieces, tail }
}

fn is_stop(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

/// Chinese and Japanese sentence ends: a boundary with or without space.
fn is_full_stop(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | '»' | ')' | ']' | '」' | '』' | '）')
}

/// Whether the stop at `chars[i]` ends a sentence.
fn ends_sentence(body: &str, chars: &[(usize, char)], i: usize, german: bool) -> bool {
    let mut j = i + 1;
    while j < chars.len() && (is_stop(chars[j].1) || is_closing(chars[j].1)) {
        j += 1;
    }
    // White space, then something that starts a sentence (or the end).
    if j < chars.len() && !chars[j].1.is_whitespace() {
        return false;
    }
    while j < chars.len() && chars[j].1.is_whitespace() {
        j += 1;
    }
    let Some(&(_, next)) = chars.get(j) else { return true };
    if next.is_lowercase() {
        return false;
    }
    if chars[i].1 != '.' {
        return true;
    }
    // The word the period ends.
    let at = chars[i].0;
    let word_start = body[..at].rfind(char::is_whitespace).map_or(0, |p| p + 1);
    let word = body[word_start..at].trim_start_matches(['(', '"', '\'', '“', '«', '¿', '¡']);
    let mut letters = word.chars();
    if let (Some(c), None) = (letters.next(), letters.next()) {
        if c.is_uppercase() {
            return false; // an initial: "J. Smith"
        }
    }
    if german && !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    !ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(text: &str, split: Split) -> Vec<&str> {
        cut(text, split, false, 100).pieces.iter().map(|p| p.core).collect()
    }

    /// Pieces and tail put back together give the text again.
    fn joined(cut: &Cut<'_>) -> String {
        let mut out: String = cut.pieces.iter().map(|p| format!("{}{}", p.lead, p.core)).collect();
        out.push_str(cut.tail);
        out
    }

    #[test]
    fn sentences_split_at_their_ends_and_join_back_unchanged() {
        let text = "  Good morning! How are you? I am fine.\nSee you at 5 p.m. tomorrow.  ";
        let c = cut(text, Split::PunctuationAndNewlines, false, 100);
        let got: Vec<&str> = c.pieces.iter().map(|p| p.core).collect();
        assert_eq!(got, ["Good morning!", "How are you?", "I am fine.", "See you at 5 p.m. tomorrow."]);
        assert_eq!(c.pieces[3].lead, "\n");
        assert_eq!(joined(&c), text);
    }

    #[test]
    fn abbreviations_initials_and_numbers_do_not_end_a_sentence() {
        assert_eq!(
            cores("Mr. Smith met Dr. Jones. They talked.", Split::Punctuation),
            ["Mr. Smith met Dr. Jones.", "They talked."]
        );
        assert_eq!(
            cores("J. R. R. Tolkien wrote it. Really.", Split::Punctuation),
            ["J. R. R. Tolkien wrote it.", "Really."]
        );
        assert_eq!(cores("Pi is 3.14. That is all.", Split::Punctuation), ["Pi is 3.14.", "That is all."]);
        assert_eq!(
            cores("Take e.g. this one. Or that.", Split::Punctuation),
            ["Take e.g. this one.", "Or that."]
        );
        // German ordinals only where the text is German.
        let german = cut("Wir kommen am 3. Oktober. Bis dann!", Split::Punctuation, true, 100);
        let got: Vec<&str> = german.pieces.iter().map(|p| p.core).collect();
        assert_eq!(got, ["Wir kommen am 3. Oktober.", "Bis dann!"]);
    }

    #[test]
    fn quotes_and_brackets_stay_with_their_sentence() {
        assert_eq!(
            cores("He said \"Stop!\" Then he left.", Split::Punctuation),
            ["He said \"Stop!\"", "Then he left."]
        );
        assert_eq!(
            cores("(It works.) Fine... Next?!", Split::Punctuation),
            ["(It works.)", "Fine...", "Next?!"]
        );
    }

    #[test]
    fn chinese_and_japanese_split_without_spaces() {
        assert_eq!(
            cores("你好。今天天气很好！你呢？", Split::Punctuation),
            ["你好。", "今天天气很好！", "你呢？"]
        );
        assert_eq!(cores("「はい。」と言った。", Split::Punctuation), ["「はい。」", "と言った。"]);
    }

    #[test]
    fn newlines_split_only_when_asked_and_off_keeps_the_text_whole() {
        let text = "First line\nsecond line. Third.";
        assert_eq!(cores(text, Split::PunctuationAndNewlines), ["First line", "second line.", "Third."]);
        assert_eq!(cores(text, Split::Punctuation), ["First line\nsecond line.", "Third."]);
        assert_eq!(cores(text, Split::Off), [text]);
        let c = cut(" \n ", Split::PunctuationAndNewlines, false, 100);
        assert!(c.pieces.is_empty());
        assert_eq!(joined(&c), " \n ");
    }

    #[test]
    fn past_the_most_pieces_neighbours_share_a_piece() {
        let text = "A one. B two. C three. D four. E five.";
        let c = cut(text, Split::Punctuation, false, 2);
        let got: Vec<&str> = c.pieces.iter().map(|p| p.core).collect();
        assert_eq!(got, ["A one. B two. C three.", "D four. E five."]);
        assert_eq!(joined(&c), text);
        // Thousands of one-letter sentences are still at most that many jobs.
        let flood = "Ab. ".repeat(10_000);
        let pieces = cut(&flood, Split::Punctuation, false, 128).pieces.len();
        assert!((100..=128).contains(&pieces), "{pieces}");
    }
}
