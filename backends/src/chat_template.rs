//! A chat model's prompt template, as Hugging Face writes them: Jinja,
//! rendered with minijinja plus what those templates expect of Python's
//! Jinja — string methods (`.strip()`, `.startswith()`, `.split()`, through
//! minijinja-contrib's pycompat), `raise_exception`, `tojson`, loop
//! controls — and `messages`, `add_generation_prompt`, `bos_token` and
//! `eos_token` in scope. A template that raises (roles that do not
//! alternate, a role it does not know) refuses the request with its message.

use minijinja::{Environment, Error, ErrorKind};

use crate::{BackendError, ChatRequest, LoadError};

pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compile `source`; `bos` and `eos` are the texts of the model's
    /// begin- and end-of-sequence tokens (empty when it has none).
    pub(crate) fn new(source: String, bos: String, eos: String) -> Result<Self, LoadError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", source)
            .map_err(|e| LoadError::Model(format!("chat template: {e}")))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// The prompt for `request`, ending where the assistant's answer starts.
    pub(crate) fn render(&self, request: &ChatRequest) -> Result<String, BackendError> {
        let messages: Vec<minijinja::Value> = request
            .messages
            .iter()
            .map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        };
        self.env.get_template("chat").and_then(|t| t.render(context)).map_err(|e| match e.kind() {
            // What the template raised: its message is about the request.
            ErrorKind::InvalidOperation => BackendError::InvalidInput(format!(
                "the model's chat template refused the messages: {}",
                e.detail().unwrap_or("no reason given")
            )),
            _ => BackendError::Failed(format!("chat template: {e}")),
        })
    }

    /// The begin-of-sequence text, so that a prompt that starts with it is
    /// not given a second one.
    pub(crate) fn bos(&self) -> &str {
        &self.bos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(messages: &[(&str, &str)]) -> ChatRequest {
        ChatRequest::of(messages)
    }

    /// Qwen2.5's template (from its GGUF), less the tool branches.
    const QWEN: &str = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\") %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

    #[test]
    fn hugging_face_templates_render() {
        let template = ChatTemplate::new(QWEN.into(), String::new(), "<|im_end|>".into()).unwrap();
        assert_eq!(
            template.render(&request(&[("system", "Translate."), ("user", "Hallo")])).unwrap(),
            "<|im_start|>system\nTranslate.<|im_end|>\n<|im_start|>user\nHallo<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    /// Python's string methods and `raise_exception`, as Mistral's and
    /// Llama's templates use them.
    #[test]
    fn python_methods_work_and_raised_errors_refuse_the_request() {
        let source = "{{ bos_token }}{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}[{{ m['content'].strip().upper() }}]{% if m['content'].startswith(' ') %}!{% endif %}{% endfor %}";
        let template = ChatTemplate::new(source.into(), "<s>".into(), "</s>".into()).unwrap();
        assert_eq!(template.render(&request(&[("user", " hi ")])).unwrap(), "<s>[HI]!");
        let refused = template.render(&request(&[("assistant", "hi")])).unwrap_err();
        assert_eq!(
            refused,
            BackendError::InvalidInput(
                "the model's chat template refused the messages: Conversation roles must alternate user/assistant/user/assistant/...".into()
            )
        );
    }

    #[test]
    fn a_broken_template_stops_the_model_loading() {
        let error = ChatTemplate::new("{% for %}".into(), String::new(), String::new()).err().unwrap();
        assert!(error.to_string().starts_with("chat template: "), "{error}");
    }
}
