use serde_json::json;

use super::*;
use crate::call::translate::{prompt, DEFAULT_PROMPT};

fn body(value: Value) -> TranslateBody {
    serde_json::from_value(value).unwrap()
}

fn section() -> TranslationSection {
    TranslationSection { max_texts: 50, max_chars: 10_000, ..TranslationSection::default() }
}

fn planned(value: Value) -> Result<Plan, ApiError> {
    plan(body(value), &section())
}

fn message(error: ApiError) -> (Option<String>, String) {
    (error.param().map(str::to_owned), error.to_string())
}

#[test]
fn a_form_repeats_text_and_keeps_the_rest_as_strings() {
    let form = form_to_json(b"text=Hello%20world&text=Good+morning&target_lang=de&show_billed_characters=1");
    assert_eq!(
        form,
        json!({"text": ["Hello world", "Good morning"], "target_lang": "de", "show_billed_characters": "1"})
    );
    let plan = plan(serde_json::from_value(form).unwrap(), &section()).unwrap();
    assert_eq!(plan.texts.len(), 2);
    assert_eq!(plan.target.code, "DE");
    assert!(plan.billed);
}

#[test]
fn json_takes_one_text_or_many() {
    assert_eq!(planned(json!({"text": "Hi", "target_lang": "FR"})).unwrap().texts, vec!["Hi"]);
    let plan = planned(json!({"text": ["a", "b"], "target_lang": "EN-GB", "source_lang": "de"})).unwrap();
    assert_eq!((plan.target.code, plan.source.map(|l| l.code)), ("EN-GB", Some("DE")));
}

#[test]
fn languages_and_missing_fields_are_refused_as_deepl_words_them() {
    let cases = [
        (json!({"target_lang": "DE"}), "text", "Parameter 'text' not specified."),
        (json!({"text": [], "target_lang": "DE"}), "text", "Parameter 'text' not specified."),
        (json!({"text": ["x"]}), "target_lang", "Parameter 'target_lang' not specified."),
        (
            json!({"text": ["x"], "target_lang": "XX"}),
            "target_lang",
            "Value for 'target_lang' not supported.",
        ),
        (
            json!({"text": ["x"], "target_lang": "DE", "source_lang": "EN-US"}),
            "source_lang",
            "Value for 'source_lang' not supported.",
        ),
        (
            json!({"text": ["x"], "target_lang": "FI", "formality": "more"}),
            "formality",
            "'formality' is not supported for given 'target_lang'.",
        ),
        (
            json!({"text": ["x"], "target_lang": "DE", "formality": "rude"}),
            "formality",
            "Value for 'formality' not supported.",
        ),
        (
            json!({"text": ["x"], "target_lang": "DE", "split_sentences": "2"}),
            "split_sentences",
            "Value for 'split_sentences' not supported.",
        ),
        (
            json!({"text": ["x"], "target_lang": "DE", "model_type": "fast"}),
            "model_type",
            "Value for 'model_type' not supported.",
        ),
    ];
    for (value, param, text) in cases {
        let error = planned(value.clone()).err().unwrap_or_else(|| panic!("accepted {value}"));
        assert_eq!(message(error), (Some(param.to_owned()), text.to_owned()), "{value}");
    }
}

#[test]
fn what_a_chat_model_cannot_honour_is_refused() {
    for field in ["tag_handling", "glossary_id", "style_id", "translation_memory_id"] {
        let mut value = json!({"text": ["x"], "target_lang": "DE"});
        value[field] = json!("xml");
        let error = planned(value).err().unwrap();
        assert!(error.to_string().contains("not supported by this server"), "{field}: {error}");
    }
}

#[test]
fn limits_on_texts_and_characters() {
    let many: Vec<String> = (0..51).map(|i| i.to_string()).collect();
    assert!(planned(json!({"text": many, "target_lang": "DE"})).is_err());
    let long = "a".repeat(10_001);
    assert!(planned(json!({"text": [long], "target_lang": "DE"})).is_err());
}

#[test]
fn formality_context_and_instructions_go_into_the_prompt() {
    let plan = planned(json!({
        "text": ["x"], "target_lang": "DE", "formality": "prefer_less",
        "context": "a bank statement", "custom_instructions": ["Keep numbers as digits"]
    }))
    .unwrap();
    let text = prompt(DEFAULT_PROMPT, plan.source, plan.target, &plan.instructions, "Good morning");
    assert!(text
        .starts_with("Translate the following text from its language to German. Use an informal register."));
    assert!(text.contains("\"a bank statement\"") && text.contains("Keep numbers as digits."));
    assert!(text.ends_with("\n\nGood morning"));
    // Only a hint where the language has no formality.
    assert!(planned(json!({"text": ["x"], "target_lang": "FI", "formality": "prefer_more"})).is_ok());
}

#[test]
fn languages_the_models_do_not_offer_are_refused_as_deepl_does() {
    let t = TranslationSection { languages: vec!["EN".into(), "de".into()], ..section() };
    let plan_with = |value: Value| plan(body(value), &t);
    assert!(plan_with(json!({"text": ["Hallo"], "target_lang": "EN-GB", "source_lang": "DE"})).is_ok());
    let refused = plan_with(json!({"text": ["Hello"], "target_lang": "FR"})).err().unwrap();
    assert_eq!(
        message(refused),
        (Some("target_lang".into()), "Value for 'target_lang' not supported.".into())
    );
    let refused =
        plan_with(json!({"text": ["Hola"], "target_lang": "EN-US", "source_lang": "ES"})).err().unwrap();
    assert_eq!(
        message(refused),
        (Some("source_lang".into()), "Value for 'source_lang' not supported.".into())
    );
    assert!(t.offers("en-us") && !t.offers("PT-BR"));
    assert!(section().offers("PT-BR"), "no list: every DeepL language");
}
