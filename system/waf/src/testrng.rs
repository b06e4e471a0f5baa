//! A small deterministic generator (xorshift) for the crate's randomized soundness tests, so
//! they need no crate and every run checks the same cases.

/// Xorshift64 state; any non-zero seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next pseudo-random number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (which must be non-zero).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A value mixing attack-like fragments, escapes and random bytes.
    pub(crate) fn value(&mut self, pieces: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..self.below(8) {
            match self.below(4) {
                0 => v.push(self.next() as u8),
                1 => {
                    let special = b"%+&\\/.;,' \"<>()=#-*aZ0\t\n";
                    v.push(special[self.below(special.len())]);
                }
                _ => v.extend_from_slice(pieces[self.below(pieces.len())]),
            }
        }
        v
    }
}

/// The literal runs between a regular expression's operators (the branches of its
/// alternations), escapes dropped: pieces for random values built from the expression's text.
pub(crate) fn literal_runs(expr: &str) -> Vec<Vec<u8>> {
    expr.replace("?:", "")
        .split(['|', '(', ')', '[', ']', '?', '*', '+', '{', '}', '^', '$'])
        .filter(|w| !w.is_empty())
        .map(|w| w.replace('\\', "").into_bytes())
        .collect()
}

/// The alphanumeric words of a regular expression's text longer than one byte: pieces for
/// random values built from the expression's text.
pub(crate) fn words(expr: &str) -> Vec<Vec<u8>> {
    expr.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() > 1)
        .map(|w| w.as_bytes().to_vec())
        .collect()
}
