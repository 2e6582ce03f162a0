//! DeepL's language codes, their names for prompts and listings, and the
//! mapping from detected languages (whatlang) to them.

/// A language DeepL translates from (and, under the same code or a
/// regional variant, into).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Language {
    pub code: &'static str,
    pub name: &'static str,
    /// `formality` applies to it as a target.
    pub formality: bool,
}

const fn lang(code: &'static str, name: &'static str, formality: bool) -> Language {
    Language { code, name, formality }
}

/// Source languages (DeepL `GET /v2/languages?type=source`).
pub const SOURCES: &[Language] = &[
    lang("AR", "Arabic", false),
    lang("BG", "Bulgarian", false),
    lang("CS", "Czech", false),
    lang("DA", "Danish", false),
    lang("DE", "German", true),
    lang("EL", "Greek", false),
    lang("EN", "English", false),
    lang("ES", "Spanish", true),
    lang("ET", "Estonian", false),
    lang("FI", "Finnish", false),
    lang("FR", "French", true),
    lang("HE", "Hebrew", false),
    lang("HU", "Hungarian", false),
    lang("ID", "Indonesian", false),
    lang("IT", "Italian", true),
    lang("JA", "Japanese", true),
    lang("KO", "Korean", false),
    lang("LT", "Lithuanian", false),
    lang("LV", "Latvian", false),
    lang("NB", "Norwegian Bokmål", false),
    lang("NL", "Dutch", true),
    lang("PL", "Polish", true),
    lang("PT", "Portuguese", true),
    lang("RO", "Romanian", false),
    lang("RU", "Russian", true),
    lang("SK", "Slovak", false),
    lang("SL", "Slovenian", false),
    lang("SV", "Swedish", false),
    lang("TH", "Thai", false),
    lang("TR", "Turkish", false),
    lang("UK", "Ukrainian", false),
    lang("VI", "Vietnamese", false),
    lang("ZH", "Chinese", false),
];

/// Regional target variants; the plain codes of [`SOURCES`] are targets too
/// (`EN`, `PT` and `ZH` only for backward compatibility, as at DeepL).
const VARIANTS: &[Language] = &[
    lang("EN-GB", "English (British)", false),
    lang("EN-US", "English (American)", false),
    lang("ES-419", "Spanish (Latin American)", true),
    lang("PT-BR", "Portuguese (Brazilian)", true),
    lang("PT-PT", "Portuguese (European)", true),
    lang("ZH-HANS", "Chinese (simplified)", false),
    lang("ZH-HANT", "Chinese (traditional)", false),
];

/// Codes listed as targets (without the deprecated plain EN and PT).
pub fn targets() -> impl Iterator<Item = &'static Language> {
    SOURCES.iter().filter(|l| !matches!(l.code, "EN" | "PT" | "ZH")).chain(VARIANTS).chain(
        // DeepL lists plain ZH as a target too.
        SOURCES.iter().filter(|l| l.code == "ZH"),
    )
}

/// A source language by code, case-insensitively.
pub fn source(code: &str) -> Option<&'static Language> {
    SOURCES.iter().find(|l| l.code.eq_ignore_ascii_case(code))
}

/// A target language by code, case-insensitively (plain codes included).
pub fn target(code: &str) -> Option<&'static Language> {
    VARIANTS.iter().chain(SOURCES).find(|l| l.code.eq_ignore_ascii_case(code))
}

/// The source code a target belongs to (`EN-GB` → `EN`).
pub fn base(code: &str) -> &str {
    code.split('-').next().unwrap_or(code)
}

/// The DeepL source code of a detected language, where DeepL has one.
pub fn from_detected(lang: whatlang::Lang) -> Option<&'static Language> {
    let code = match lang.code() {
        "ara" => "AR",
        "bul" => "BG",
        "ces" => "CS",
        "dan" => "DA",
        "deu" => "DE",
        "ell" => "EL",
        "eng" => "EN",
        "spa" => "ES",
        "est" => "ET",
        "fin" => "FI",
        "fra" => "FR",
        "heb" => "HE",
        "hun" => "HU",
        "ind" => "ID",
        "ita" => "IT",
        "jpn" => "JA",
        "kor" => "KO",
        "lit" => "LT",
        "lav" => "LV",
        "nob" => "NB",
        "nld" => "NL",
        "pol" => "PL",
        "por" => "PT",
        "ron" => "RO",
        "rus" => "RU",
        "slk" => "SK",
        "slv" => "SL",
        "swe" => "SV",
        "tha" => "TH",
        "tur" => "TR",
        "ukr" => "UK",
        "vie" => "VI",
        "cmn" => "ZH",
        _ => return None,
    };
    source(code)
}

/// The language of `text` among DeepL's sources, if it can be told.
pub fn detect(text: &str) -> Option<&'static Language> {
    whatlang::detect(text).and_then(|info| from_detected(info.lang()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_case_insensitive_and_variants_are_targets_only() {
        assert_eq!(source("de").map(|l| l.name), Some("German"));
        assert_eq!(target("en-gb").map(|l| l.code), Some("EN-GB"));
        assert!(source("EN-GB").is_none());
        assert!(target("XX").is_none() && source("").is_none());
        assert_eq!(base("PT-BR"), "PT");
        assert!(targets().all(|l| target(l.code).is_some()));
        assert!(!targets().any(|l| l.code == "EN"));
    }

    #[test]
    fn detects_common_languages() {
        let cases = [
            ("The weather is lovely today and we are going for a walk in the park.", "EN"),
            ("Das Wetter ist heute schön und wir gehen im Park spazieren.", "DE"),
            ("Il fait beau aujourd'hui et nous allons nous promener dans le parc.", "FR"),
            ("Hoy hace buen tiempo y vamos a dar un paseo por el parque.", "ES"),
            ("Сегодня хорошая погода, и мы идём гулять в парк.", "RU"),
            ("今日は天気が良いので公園を散歩します。", "JA"),
        ];
        for (text, code) in cases {
            assert_eq!(detect(text).map(|l| l.code), Some(code), "{text}");
        }
    }

    #[test]
    fn every_mapped_language_is_a_deepl_source() {
        for lang in whatlang::Lang::all() {
            if let Some(l) = from_detected(*lang) {
                assert!(source(l.code).is_some());
            }
        }
    }
}
