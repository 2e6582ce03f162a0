//! The scheduler's one error type. Scheduling itself does not fail: a refused or dropped
//! job is a decision ([`crate::Rejected`], [`crate::Dropped`]), not an error. What can fail
//! is reading a class or policy from text (configuration, request headers).

/// Text that names no [`Class`](crate::Class) or [`Policy`](crate::Policy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown class {0:?}: expected one of interactive, standard, batch")]
    Class(String),
    #[error("unknown policy {0:?}: expected deadline, fifo or priority")]
    Policy(String),
}
