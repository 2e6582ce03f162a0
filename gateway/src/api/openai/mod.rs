//! OpenAI-compatible routes, with request and response types that follow
//! OpenAI's published schemas.

pub mod audio;
pub mod chat;
mod chat_stream;
pub mod embeddings;
pub mod models;
pub mod moderations;
