//! Service classes: who is waiting for the answer, and how urgently.

use std::fmt;
use std::str::FromStr;

use crate::ParseError;

/// A request's service class. Ordered from most to least urgent, so
/// `a.min(b)` is the more urgent of two and `a.max(b)` the less urgent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Class {
    /// A person is waiting (chat, live transcription).
    Interactive,
    /// Ordinary API traffic.
    #[default]
    Standard,
    /// Offline work that only needs to finish eventually.
    Batch,
}

impl Class {
    /// Every class, most urgent first.
    pub const ALL: [Class; 3] = [Class::Interactive, Class::Standard, Class::Batch];

    /// The lower-case name used in config, headers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Interactive => "interactive",
            Class::Standard => "standard",
            Class::Batch => "batch",
        }
    }

    /// The scheduling weight: how much more an interactive job's slack counts.
    pub fn weight(self) -> f64 {
        match self {
            Class::Interactive => 4.0,
            Class::Standard => 2.0,
            Class::Batch => 1.0,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "interactive" => Ok(Class::Interactive),
            "standard" => Ok(Class::Standard),
            "batch" => Ok(Class::Batch),
            _ => Err(ParseError::Class(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_classes() {
        assert_eq!("Interactive".parse::<Class>(), Ok(Class::Interactive));
        assert_eq!(" batch ".parse::<Class>(), Ok(Class::Batch));
        assert!("urgent".parse::<Class>().is_err());
        assert_eq!(Class::Batch.min(Class::Interactive), Class::Interactive);
        for class in Class::ALL {
            assert_eq!(class.as_str().parse::<Class>(), Ok(class));
        }
    }
}
