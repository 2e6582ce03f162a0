//! The one path from a decoded request to its model and back: the call
//! layer between the wire (`api/`, which only decodes requests and encodes
//! answers) and the runner.
//!
//! A [`Call`] resolves the model a request names (or the default for its
//! task), puts the operation and model on the server span, fixes the
//! deadline, prices each job in the model's cost unit ([`Payload`]),
//! submits it, waits for it with the deadline, checks the output is of the
//! task's kind, and counts the answer (deadline outcome, token usage).
//! Speech chunking (with the voice-activity model), translation fan-out and
//! streamed chat go through the same steps. `docs/ARCHITECTURE.md` places
//! this layer in the request path.

mod chat;
mod outcome;
mod payload;
mod request;
mod speech;
pub mod translate;

pub use self::chat::{Chat, ChatStream, StreamEvent};
pub use self::payload::{Image, Tensors};
pub use self::request::{Call, Operation};
pub use self::speech::{Ask, SpeechEvent};
pub use crate::runner::DispatchInfo as Dispatch;
