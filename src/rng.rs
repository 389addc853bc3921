//! A small seeded PRNG (SplitMix64): reproducible synthetic weights and sampling
//! without pulling in a random-number crate.

#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 24 bits of precision.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Fills `out` with values in `0..n`: 16 random bits per value, mapped by
    /// multiply-shift (each value is hit 65536/n times, give or take one).
    pub fn fill_below(&mut self, out: &mut [u8], n: u8) {
        for chunk in out.chunks_mut(4) {
            let r = self.next_u64();
            for (i, o) in chunk.iter_mut().enumerate() {
                let bits = (r >> (16 * i)) as u16 as u32;
                *o = ((bits * n as u32) >> 16) as u8;
            }
        }
    }
}
