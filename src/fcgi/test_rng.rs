//! The seeded generator the codec tests use to look for panics.

/// xorshift64: the same sequence on every run, so a failure can be
/// replayed from its iteration number.
pub struct XorShift {
    state: u64,
    /// Byte values at the edges of what the parser under test decides on.
    edges: &'static [u8],
}

impl XorShift {
    /// A generator from `seed` whose bytes favour `edges`.
    pub fn new(seed: u64, edges: &'static [u8]) -> XorShift {
        XorShift { state: seed, edges }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A byte, three times in four one of the edge values.
    pub fn byte(&mut self) -> u8 {
        match self.below(4) {
            0 => self.next_u64() as u8,
            _ => self.edges[self.below(self.edges.len())],
        }
    }
}
