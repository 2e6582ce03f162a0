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

/// Frequent function words of Latin-script languages, which decide short
/// texts where letter trigrams alone cannot ("Good morning, how are you?"
/// reads as Norwegian to them). Words of one letter are never counted.
const FUNCTION_WORDS: &[(&str, &str)] = &[
    ("EN", "the and is are you of to in it that this how what where with for was have not please my your we they be on at good thank hello"),
    ("DE", "der die das und ist nicht ich du sie wir ein eine mit wie wo was es zu den dem auf für bitte danke guten ja nein sind hallo"),
    ("FR", "le la les et est je tu vous nous il elle un une des du de pas que qui où comment avec pour merci bonjour sont ce dans au"),
    ("ES", "el la los las es yo tú usted un una de del que no dónde cómo con para por gracias hola está son en qué muy buenos"),
    ("IT", "il lo la gli le è io tu lei noi un una di che non dove come con per grazie ciao sono del della questo buongiorno"),
    ("PT", "os as é eu você nós um uma de do da que não onde como com para obrigado obrigada olá são está em muito bom"),
    ("NL", "de het een en is ik jij je wij we niet wat waar hoe met voor van dank hallo zijn dat op goedemorgen alstublieft"),
    ("SV", "och är jag du vi inte en ett det som var hur vad med för på tack hej att de till"),
    ("DA", "og er jeg du vi ikke en et det som hvor hvordan hvad med for på tak hej at de til"),
    ("NB", "og er jeg du vi ikke en et det som hvor hvordan hva med for på takk hei de til"),
    ("PL", "nie to jest się na że do jak gdzie co ja ty my dziękuję dzień dobry proszę czy"),
    ("CS", "je to na se že do jak kde co já ty my děkuji dobrý den prosím není"),
    ("RO", "și este eu tu noi un nu de la în cu pentru unde cum ce mulțumesc bună sunt"),
    ("TR", "ve bir bu ne nerede nasıl ben sen biz değil için ile teşekkür merhaba günaydın mi var"),
    ("FI", "ja on ei minä sinä me se että kuin missä miten mitä kiitos hyvää huomenta ole"),
    ("HU", "az és egy nem van hogy én te mi hol hogyan mit köszönöm jó reggelt is"),
    ("ID", "dan yang di ini itu saya anda kami tidak dengan untuk apa bagaimana terima kasih selamat pagi ada"),
];

/// The language whose function words `text` uses most, if one leads.
fn by_function_words(text: &str) -> Option<&'static Language> {
    let lower = text.to_lowercase();
    let words: Vec<&str> =
        lower.split(|c: char| !c.is_alphabetic()).filter(|w| w.chars().count() > 1).collect();
    let mut scores: Vec<(usize, &str)> = FUNCTION_WORDS
        .iter()
        .map(|(code, list)| (words.iter().filter(|w| list.split(' ').any(|f| f == **w)).count(), *code))
        .collect();
    scores.sort_by_key(|s| std::cmp::Reverse(s.0));
    match scores.as_slice() {
        [(best, code), (second, _), ..] if *best > 0 && best > second => source(code),
        _ => None,
    }
}

/// The language of `text` among DeepL's sources, if it can be told:
/// whatlang where it is confident, else function words, else whatlang's guess.
/// How sure the detector is of `text`'s language, 0-1 (whatlang's confidence).
pub fn confidence(text: &str) -> f64 {
    whatlang::detect(text).map_or(0.0, |info| info.confidence())
}

pub fn detect(text: &str) -> Option<&'static Language> {
    let info = whatlang::detect(text);
    if let Some(info) = info.as_ref().filter(|i| i.is_reliable()) {
        if let Some(language) = from_detected(info.lang()) {
            return Some(language);
        }
    }
    by_function_words(text).or_else(|| info.and_then(|i| from_detected(i.lang())))
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
            ("Good morning, how are you?", "EN"),
            ("Where is the railway station?", "EN"),
            ("Guten Morgen, wie geht es dir?", "DE"),
            ("Merci, à demain.", "FR"),
            ("¿Dónde está la estación?", "ES"),
            ("Dziękuję, dzień dobry!", "PL"),
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
