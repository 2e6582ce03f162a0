//! Distributed load: `run --shard i/N` sends every N-th arrival of one seeded schedule
//! (from the i-th), so that N generators together send the schedule one would
//! ([`crate::merge`] adds up their reports).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One share of a schedule: the arrivals numbered `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether arrival `number` (from 0) is this shard's.
    pub fn owns(&self, number: u64) -> bool {
        number % u64::from(self.count) == u64::from(self.index)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `i/N` with `0 <= i < N`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (index, count) = text.split_once('/').ok_or_else(|| format!("a shard is i/N, not {text:?}"))?;
        let parse = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("a shard is i/N, not {text:?}"));
        let (index, count) = (parse(index)?, parse(count)?);
        if count == 0 || index >= count {
            return Err(format!("shard {text}: i is from 0 to N-1"));
        }
        Ok(Shard { index, count })
    }
}

impl Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_read_and_write_as_i_of_n() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(Shard { index: 0, count: 3 }.to_string(), "0/3");
        for bad in ["4/4", "1/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        for number in 0..100 {
            assert_eq!(shards.iter().filter(|s| s.owns(number)).count(), 1, "arrival {number}");
        }
    }
}
