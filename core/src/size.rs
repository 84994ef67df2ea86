//! Instance sizes in the units users know from Fargate and App Runner: CPU in units of
//! 1/1024 vCPU, memory in MB, checked against the valid pairs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// CPU in units of 1/1024 of a vCPU (256, 512, 1024, 2048 or 4096).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Cpu(pub u32);

/// Memory in MB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Memory(pub u32);

/// A validated CPU and memory pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSize {
    /// CPU units.
    pub cpu: Cpu,
    /// Memory in MB.
    pub memory: Memory,
}

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The CPU value is not one of the offered sizes.
    #[error("cpu {0:?} is not valid: choose 256 (0.25 vCPU), 512 (0.5 vCPU), 1024 (1 vCPU), 2048 (2 vCPU) or 4096 (4 vCPU)")]
    Cpu(String),
    /// The memory value could not be read.
    #[error("memory {0:?} is not valid: write MB (2048) or GB (\"2 GB\")")]
    Memory(String),
    /// The pair is not offered.
    #[error("{cpu} with {memory} is not a valid pair: with {cpu} choose {choices}")]
    Pair {
        /// The CPU asked for.
        cpu: Cpu,
        /// The memory asked for.
        memory: Memory,
        /// The memory sizes that go with that CPU.
        choices: String,
    },
}

const CPUS: [u32; 5] = [256, 512, 1024, 2048, 4096];

impl Cpu {
    /// Reads `1024`, `1 vCPU`, `0.25 vcpu` or `2`.
    pub fn parse(s: &str) -> Result<Cpu, SizeError> {
        let t = s.trim().to_ascii_lowercase();
        let (num, vcpu) = match t.strip_suffix("vcpu") {
            Some(n) => (n.trim(), true),
            None => (t.as_str(), false),
        };
        let v: f64 = num.parse().map_err(|_| SizeError::Cpu(s.to_string()))?;
        let units = if vcpu || v < 64.0 { v * 1024.0 } else { v };
        if units.fract() == 0.0 && CPUS.contains(&(units as u32)) {
            Ok(Cpu(units as u32))
        } else {
            Err(SizeError::Cpu(s.to_string()))
        }
    }

    /// The memory sizes (MB) valid with this CPU.
    pub fn memory_choices(self) -> Vec<u32> {
        match self.0 {
            256 => vec![512, 1024, 2048],
            512 => (1..=4).map(|g| g * 1024).collect(),
            1024 => (2..=8).map(|g| g * 1024).collect(),
            2048 => (4..=16).map(|g| g * 1024).collect(),
            4096 => (8..=30).map(|g| g * 1024).collect(),
            _ => vec![],
        }
    }

    /// Nano-CPUs, the unit of Docker's `NanoCpus` limit.
    pub fn nano_cpus(self) -> i64 {
        self.0 as i64 * 1_000_000_000 / 1024
    }
}

impl Memory {
    /// Reads `2048`, `2048 MB`, `2 GB`, `0.5gb` or `2` (GB).
    pub fn parse(s: &str) -> Result<Memory, SizeError> {
        let t = s.trim().to_ascii_lowercase();
        let bad = || SizeError::Memory(s.to_string());
        let mb = if let Some(n) = t.strip_suffix("gb") {
            n.trim().parse::<f64>().map_err(|_| bad())? * 1024.0
        } else if let Some(n) = t.strip_suffix("mb") {
            n.trim().parse::<f64>().map_err(|_| bad())?
        } else {
            let v = t.parse::<f64>().map_err(|_| bad())?;
            if v <= 30.0 {
                v * 1024.0
            } else {
                v
            }
        };
        if !(mb.is_finite() && mb >= 1.0 && mb.fract() == 0.0 && mb <= u32::MAX as f64) {
            return Err(bad());
        }
        Ok(Memory(mb as u32))
    }

    /// Bytes, the unit of Docker's `Memory` limit.
    pub fn bytes(self) -> i64 {
        self.0 as i64 * 1024 * 1024
    }
}

impl InstanceSize {
    /// The default size: 1 vCPU and 2 GB, as App Runner's.
    pub const DEFAULT: InstanceSize = InstanceSize {
        cpu: Cpu(1024),
        memory: Memory(2048),
    };

    /// Checks the pair.
    pub fn new(cpu: Cpu, memory: Memory) -> Result<Self, SizeError> {
        if !CPUS.contains(&cpu.0) {
            return Err(SizeError::Cpu(cpu.0.to_string()));
        }
        let choices = cpu.memory_choices();
        if choices.contains(&memory.0) {
            Ok(InstanceSize { cpu, memory })
        } else {
            Err(SizeError::Pair {
                cpu,
                memory,
                choices: choices
                    .iter()
                    .map(|m| Memory(*m).to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

impl Default for InstanceSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0 as f64 / 1024.0;
        write!(f, "{v} vCPU")
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(512) {
            write!(f, "{} GB", self.0 as f64 / 1024.0)
        } else {
            write!(f, "{} MB", self.0)
        }
    }
}

/// Accepts a number or a string in the JSON API.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(f64),
    Str(String),
}

impl NumOrStr {
    fn text(self) -> String {
        match self {
            NumOrStr::Num(n) => n.to_string(),
            NumOrStr::Str(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cpu::parse(&NumOrStr::deserialize(d)?.text()).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Memory::parse(&NumOrStr::deserialize(d)?.text()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!(Cpu::parse("1024").unwrap(), Cpu(1024));
        assert_eq!(Cpu::parse("1 vCPU").unwrap(), Cpu(1024));
        assert_eq!(Cpu::parse("0.25 vCPU").unwrap(), Cpu(256));
        assert_eq!(Cpu::parse("0.5").unwrap(), Cpu(512));
        assert!(Cpu::parse("3 vCPU").is_err());
        assert!(Cpu::parse("1000").is_err());
        assert!(Cpu::parse("lots").is_err());
        assert_eq!(Memory::parse("2 GB").unwrap(), Memory(2048));
        assert_eq!(Memory::parse("0.5 GB").unwrap(), Memory(512));
        assert_eq!(Memory::parse("512").unwrap(), Memory(512));
        assert_eq!(Memory::parse("3").unwrap(), Memory(3072));
        assert!(Memory::parse("-1").is_err());
        assert!(Memory::parse("NaN").is_err());
    }

    #[test]
    fn checks_pairs_and_lists_choices() {
        assert!(InstanceSize::new(Cpu(256), Memory(512)).is_ok());
        assert!(InstanceSize::new(Cpu(256), Memory(2048)).is_ok());
        assert!(InstanceSize::new(Cpu(4096), Memory(30 * 1024)).is_ok());
        let err = InstanceSize::new(Cpu(256), Memory(4096))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.5 GB, 1 GB, 2 GB"), "{err}");
        assert!(InstanceSize::new(Cpu(1024), Memory(1024)).is_err());
        assert!(InstanceSize::new(Cpu(2048), Memory(17 * 1024)).is_err());
        assert!(InstanceSize::new(Cpu(512), Memory(512)).is_err());
        assert_eq!(InstanceSize::default().cpu, Cpu(1024));
        assert_eq!(InstanceSize::default().memory, Memory(2048));
    }

    #[test]
    fn every_offered_pair_is_valid() {
        for c in CPUS {
            for m in Cpu(c).memory_choices() {
                assert!(InstanceSize::new(Cpu(c), Memory(m)).is_ok());
            }
        }
    }
}
