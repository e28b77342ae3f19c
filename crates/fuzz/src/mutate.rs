//! Byte mutations, deterministic from a seed: what a bad disk, a cut transfer or a
//! careless tool does to a file.

use crate::Sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Values that break length and count fields: zero, one, the signed and unsigned limits
/// and their neighbours, 0xFFFFFFFF (DICOM's "undefined length").
pub const INTERESTING_U32: [u32; 14] = [
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
];

/// Numbers that a JSON field should never hold, or holds only at its limits.
pub const INTERESTING_JSON: [&str; 14] = [
    "0",
    "-1",
    "1",
    "2",
    "255",
    "256",
    "65536",
    "4294967295",
    "18446744073709551615",
    "1e308",
    "-1e308",
    "1e-300",
    "0.5",
    "100000",
];

/// One kind of mutation, for the record of what made an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One bit inverted.
    BitFlip,
    /// A byte set to 0x00.
    Zero,
    /// A byte set to 0xFF.
    Ones,
    /// A byte set to a random value.
    Random,
    /// The file cut short.
    Truncate,
    /// A chunk copied to another place (inserted).
    Duplicate,
    /// A chunk removed.
    Delete,
    /// An interesting value written over 2 bytes (either byte order).
    Int16,
    /// An interesting value written over 4 bytes (either byte order).
    Int32,
    /// A number inside a JSON text replaced by an interesting one.
    JsonNumber,
}

/// A seeded source of mutants.
pub struct Mutator {
    rng: ChaCha8Rng,
}

impl Mutator {
    /// Mutants are a function of `seed` and of the order of the calls.
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A number in `0..n` (n > 0) from the mutator's stream.
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }

    /// A mutant of `sample`: one file (two, now and then, when it has several) changed by
    /// one to four stacked mutations.
    pub fn mutate_sample(&mut self, sample: &Sample) -> Sample {
        let mut out = sample.clone();
        if out.files.is_empty() {
            return out;
        }
        let n_files = if out.files.len() > 1 && self.rng.random_bool(0.25) {
            2
        } else {
            1
        };
        for _ in 0..n_files {
            let i = self.below(out.files.len());
            let bytes = std::mem::take(&mut out.files[i].1);
            out.files[i].1 = self.mutate(&bytes);
        }
        out
    }

    /// A mutant of `input`: one to four stacked mutations.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut data = input.to_vec();
        let n = 1 + self.below(4).min(self.below(4));
        for _ in 0..n {
            self.apply_one(&mut data);
        }
        data
    }

    /// A position in `data` (non-empty), half the time within the first 2 KiB, where the
    /// headers of every format read here live.
    fn position(&mut self, len: usize) -> usize {
        if self.rng.random_bool(0.5) {
            self.below(len.min(2048))
        } else {
            self.below(len)
        }
    }

    fn interesting(&mut self) -> u32 {
        INTERESTING_U32[self.below(INTERESTING_U32.len())]
    }

    /// Applies one mutation; returns its kind.
    pub fn apply_one(&mut self, data: &mut Vec<u8>) -> Kind {
        if data.is_empty() {
            data.push(self.rng.random());
            return Kind::Random;
        }
        let json = data.first() == Some(&b'{');
        if json && self.rng.random_bool(0.5) && replace_json_number(self, data) {
            return Kind::JsonNumber;
        }
        let len = data.len();
        let kind = match self.below(9) {
            0 => Kind::BitFlip,
            1 => Kind::Zero,
            2 => Kind::Ones,
            3 => Kind::Random,
            4 => Kind::Truncate,
            5 => Kind::Duplicate,
            6 => Kind::Delete,
            7 => Kind::Int16,
            _ => Kind::Int32,
        };
        match kind {
            Kind::BitFlip => {
                let p = self.position(len);
                data[p] ^= 1 << self.below(8);
            }
            Kind::Zero => {
                let p = self.position(len);
                data[p] = 0;
            }
            Kind::Ones => {
                let p = self.position(len);
                data[p] = 0xFF;
            }
            Kind::Random => {
                let p = self.position(len);
                data[p] = self.rng.random();
            }
            Kind::Truncate => {
                let p = self.position(len);
                data.truncate(p);
            }
            Kind::Duplicate => {
                let start = self.position(len);
                let n = 1 + self.below((len - start).min(256));
                let chunk = data[start..start + n].to_vec();
                let at = self.position(len);
                data.splice(at..at, chunk);
            }
            Kind::Delete => {
                let start = self.position(len);
                let n = 1 + self.below((len - start).min(256));
                data.drain(start..start + n);
            }
            Kind::Int16 | Kind::Int32 => {
                let width = if kind == Kind::Int16 { 2 } else { 4 };
                if len < width {
                    data.truncate(0);
                } else {
                    let p = self.position(len - width + 1);
                    let v = self.interesting();
                    let big = self.rng.random_bool(0.3);
                    let bytes: Vec<u8> = match (width, big) {
                        (2, false) => (v as u16).to_le_bytes().to_vec(),
                        (2, true) => (v as u16).to_be_bytes().to_vec(),
                        (_, false) => v.to_le_bytes().to_vec(),
                        (_, true) => v.to_be_bytes().to_vec(),
                    };
                    data[p..p + width].copy_from_slice(&bytes);
                }
            }
            Kind::JsonNumber => unreachable!("handled above"),
        }
        kind
    }
}

/// Replaces one run of digits (with its sign, fraction and exponent) by an interesting
/// number; false when the text holds none.
fn replace_json_number(m: &mut Mutator, data: &mut Vec<u8>) -> bool {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if data[i].is_ascii_digit() || (data[i] == b'-' && i + 1 < data.len()) {
            let start = i;
            i += 1;
            while i < data.len()
                && matches!(data[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return false;
    }
    let (a, b) = runs[m.below(runs.len())];
    let v = INTERESTING_JSON[m.below(INTERESTING_JSON.len())];
    data.splice(a..b, v.bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mutants() {
        let input: Vec<u8> = (0..=255).collect();
        let mut a = Mutator::new(7);
        let mut b = Mutator::new(7);
        for _ in 0..200 {
            assert_eq!(a.mutate(&input), b.mutate(&input));
        }
    }

    #[test]
    fn every_kind_happens_and_json_numbers_change() {
        let mut m = Mutator::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let mut d: Vec<u8> = (0..=255).collect();
            seen.insert(format!("{:?}", m.apply_one(&mut d)));
        }
        assert_eq!(seen.len(), 9, "{seen:?}");
        let mut d = br#"{"a": 12, "b": [3.5, -4]}"#.to_vec();
        assert!(replace_json_number(&mut m, &mut d));
        assert_ne!(d, br#"{"a": 12, "b": [3.5, -4]}"#.to_vec());
    }
}
