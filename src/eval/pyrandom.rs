//! PLACEHOLDER until the `evallogic` branch lands (CPython's random.Random).
pub struct PyRandom;
impl PyRandom {
    pub fn new(_seed: u64) -> Self {
        PyRandom
    }
    pub fn sample(&mut self, _n: usize, _k: usize) -> Vec<usize> {
        todo!("CPython random.sample: evallogic branch")
    }
}
