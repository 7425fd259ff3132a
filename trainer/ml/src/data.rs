//! Deterministic data assignment: which tokens a given (run seed, step, micro-batch) trains on.
//!
//! Every row of every micro-batch is chosen by a counter-based random value,
//! [`row_key`]`(seed, step, micro, row)` = the first 8 bytes (LE) of
//! `blake3::derive_key("weft-trainer data v1")`-keyed hash of
//! `seed ‖ step ‖ micro ‖ row` (all little-endian u64). No generator state is carried from
//! one step to the next, so an auditor (or a resumed trainer) rebuilds the exact input of
//! stage 0 and the targets of the last stage from the chain's numbers alone.
//!
//! A row is `seq_len + 1` consecutive tokens `x`; the inputs are `x[..T]` and the targets
//! `x[1..]`. What "consecutive tokens for key k" means depends on the [`TokenSource`]:
//!
//! * [`TokenFile`]: a token stream held in memory. Either a directory (or file) of UTF-8
//!   text read as bytes (vocabulary 256), files sorted by their path and concatenated, or
//!   `.bin` files of little-endian `u16` token ids, likewise sorted and concatenated. The
//!   row starts at offset `k mod (len - T)`.
//! * [`Synthetic`]: an order-1 Markov chain over `n_states` tokens with a seeded random
//!   transition table. The row's first token is drawn from the stationary distribution,
//!   then each next token from the transition row of the previous one, using a stream keyed
//!   by `k`. Every target is then one step of a stationary chain, so the best achievable
//!   loss is exactly the chain's entropy rate `H = -Σᵢ πᵢ Σⱼ Pᵢⱼ ln Pᵢⱼ`
//!   ([`Synthetic::entropy_rate`]), a known floor that learning tests aim at.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Tensor;

/// The counter-based random value that picks row `row` of micro-batch `micro` of `step`.
pub fn row_key(run_seed: u64, step: u64, micro: u32, row: u32) -> u64 {
    let mut h = blake3::Hasher::new_derive_key("weft-trainer data v1");
    for x in [run_seed, step, u64::from(micro), u64::from(row)] {
        h.update(&x.to_le_bytes());
    }
    let b = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&b.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// A deterministic stream of u64 values keyed by `(domain, key)`.
struct KeyedStream {
    xof: blake3::OutputReader,
}

impl KeyedStream {
    fn new(domain: &str, key: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(domain);
        h.update(key);
        KeyedStream {
            xof: h.finalize_xof(),
        }
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.xof.fill(&mut b);
        u64::from_le_bytes(b)
    }
    /// A uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Where training tokens come from.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// `n` consecutive tokens for the row with random value `key`.
    fn sequence(&self, key: u64, n: usize) -> Result<Vec<i64>>;
    /// One more than the largest token id the source can produce.
    fn vocab_bound(&self) -> i64;
    /// A short human description.
    fn describe(&self) -> String;
}

/// A token stream held in memory: text as bytes, or `u16` tokens from `.bin` files.
#[derive(Debug, Clone)]
pub struct TokenFile {
    tokens: Vec<u16>,
    vocab_bound: i64,
    files: Vec<PathBuf>,
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if ft.is_dir() {
            list_files(&path, out)?;
        } else if ft.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// The dataset manifest hash a run designer registers (`dataset_hash`): the blake3 Merkle
/// root over one leaf per file, in the order [`TokenFile::open`] reads them, each leaf being
/// `SCALE((path relative to the root, length, blake3(content)))`. The same files in the same
/// layout give the same hash on every machine.
pub fn manifest_hash(path: &Path) -> Result<weft_primitives::Hash> {
    use parity_scale_codec::Encode;
    let mut files = Vec::new();
    if path.is_dir() {
        list_files(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    if files.is_empty() {
        return Err(Error::Data(format!("no files in {}", path.display())));
    }
    let mut leaves = Vec::with_capacity(files.len());
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        let name = f
            .strip_prefix(path)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        leaves.push((name, bytes.len() as u64, *blake3::hash(&bytes).as_bytes()).encode());
    }
    Ok(weft_primitives::merkle::root(&leaves))
}

impl TokenFile {
    /// Opens a text file, a `.bin` token file, or a directory of either kind (recursively,
    /// hidden entries skipped, sorted by path). A directory mixing `.bin` and other files
    /// is rejected.
    pub fn open(path: &Path) -> Result<Self> {
        let mut files = Vec::new();
        if path.is_dir() {
            list_files(path, &mut files)?;
            files.sort();
        } else {
            files.push(path.to_owned());
        }
        if files.is_empty() {
            return Err(Error::Data(format!("no files in {}", path.display())));
        }
        let is_bin = |p: &PathBuf| p.extension().is_some_and(|e| e == "bin");
        let n_bin = files.iter().filter(|p| is_bin(p)).count();
        if n_bin != 0 && n_bin != files.len() {
            return Err(Error::Data(format!(
                "{} mixes .bin token files and text files; use one kind",
                path.display()
            )));
        }
        let mut tokens = Vec::new();
        for f in &files {
            let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            if n_bin > 0 {
                if bytes.len() % 2 != 0 {
                    return Err(Error::Data(format!(
                        "{} has an odd number of bytes; expected little-endian u16 tokens",
                        f.display()
                    )));
                }
                tokens.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]])),
                );
            } else {
                if let Err(e) = std::str::from_utf8(&bytes) {
                    return Err(Error::Data(format!("{} is not UTF-8: {e}", f.display())));
                }
                tokens.extend(bytes.iter().map(|&b| u16::from(b)));
            }
        }
        let vocab_bound = if n_bin > 0 {
            tokens.iter().copied().max().map_or(0, |m| i64::from(m) + 1)
        } else {
            256
        };
        tracing::info!(
            files = files.len(),
            tokens = tokens.len(),
            "opened token data"
        );
        Ok(TokenFile {
            tokens,
            vocab_bound,
            files,
        })
    }

    /// A source over bytes in memory (byte-level, vocabulary 256).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        TokenFile {
            tokens: bytes.iter().map(|&b| u16::from(b)).collect(),
            vocab_bound: 256,
            files: vec![],
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The empirical unigram entropy in nats/token: the loss of the best model that ignores
    /// context, a baseline a trained model must beat.
    pub fn unigram_entropy(&self) -> f64 {
        let mut counts = std::collections::HashMap::<u16, u64>::new();
        for &t in &self.tokens {
            *counts.entry(t).or_default() += 1;
        }
        let n = self.tokens.len() as f64;
        counts
            .values()
            .map(|&c| c as f64 / n)
            .map(|p| -p * p.ln())
            .sum()
    }
}

impl TokenSource for TokenFile {
    fn sequence(&self, key: u64, n: usize) -> Result<Vec<i64>> {
        if self.tokens.len() < n {
            return Err(Error::Data(format!(
                "need at least {n} tokens, the data has {}",
                self.tokens.len()
            )));
        }
        let starts = (self.tokens.len() - n + 1) as u64;
        let start = (key % starts) as usize;
        Ok(self.tokens[start..start + n]
            .iter()
            .map(|&t| i64::from(t))
            .collect())
    }
    fn vocab_bound(&self) -> i64 {
        self.vocab_bound
    }
    fn describe(&self) -> String {
        format!(
            "{} tokens from {} files",
            self.tokens.len(),
            self.files.len()
        )
    }
}

/// An order-1 Markov chain with a seeded random transition table and a known entropy rate.
#[derive(Debug, Clone)]
pub struct Synthetic {
    seed: u64,
    /// Row-stochastic transition matrix, `n_states × n_states`.
    transition: Vec<Vec<f64>>,
    cumulative: Vec<Vec<f64>>,
    stationary: Vec<f64>,
    stationary_cumulative: Vec<f64>,
}

fn cumulative(p: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    let mut c: Vec<f64> = p
        .iter()
        .map(|x| {
            acc += x;
            acc
        })
        .collect();
    if let Some(last) = c.last_mut() {
        *last = 1.0;
    }
    c
}

fn sample(cdf: &[f64], u: f64) -> usize {
    cdf.iter()
        .position(|&c| u < c)
        .unwrap_or(cdf.len().saturating_sub(1))
}

impl Synthetic {
    /// A chain over `n_states` tokens whose transition row `i` has weights `uᵢⱼ^sharpness`
    /// (u uniform in (0, 1] from the seed), normalised. Larger `sharpness` = lower entropy.
    pub fn new(seed: u64, n_states: usize, sharpness: f64) -> Result<Self> {
        if !(2..=4096).contains(&n_states) {
            return Err(Error::Data(format!(
                "n_states must be in 2..=4096 (the table is dense), got {n_states}"
            )));
        }
        if !(sharpness.is_finite() && sharpness > 0.0) {
            return Err(Error::Data(format!(
                "sharpness must be positive, got {sharpness}"
            )));
        }
        Ok(Synthetic::build(seed, n_states, sharpness))
    }

    /// [`Synthetic::new`] for arguments already checked.
    fn build(seed: u64, n_states: usize, sharpness: f64) -> Self {
        let mut rng = KeyedStream::new("weft-trainer synthetic table v1", &seed.to_le_bytes());
        let transition: Vec<Vec<f64>> = (0..n_states)
            .map(|_| {
                let w: Vec<f64> = (0..n_states)
                    .map(|_| (1.0 - rng.next_f64()).powf(sharpness))
                    .collect();
                let s: f64 = w.iter().sum();
                w.into_iter().map(|x| x / s).collect()
            })
            .collect();
        // Power iteration for the stationary distribution (the chain is dense, hence
        // irreducible and aperiodic, so this converges geometrically).
        let mut pi = vec![1.0 / n_states as f64; n_states];
        for _ in 0..10_000 {
            let mut next = vec![0.0; n_states];
            for (i, row) in transition.iter().enumerate() {
                for (j, p) in row.iter().enumerate() {
                    next[j] += pi[i] * p;
                }
            }
            let diff: f64 = next.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum();
            pi = next;
            if diff < 1e-15 {
                break;
            }
        }
        let cumulative_rows = transition.iter().map(|r| cumulative(r)).collect();
        Synthetic {
            seed,
            stationary_cumulative: cumulative(&pi),
            stationary: pi,
            cumulative: cumulative_rows,
            transition,
        }
    }

    /// The default chain for tests and `--data synthetic`: 16 states, sharpness 4.
    pub fn standard(seed: u64) -> Self {
        Synthetic::build(seed, 16, 4.0)
    }

    /// The entropy rate in nats/token: the expected loss of the perfect model.
    pub fn entropy_rate(&self) -> f64 {
        self.transition
            .iter()
            .zip(&self.stationary)
            .map(|(row, pi)| {
                pi * row
                    .iter()
                    .filter(|&&p| p > 0.0)
                    .map(|&p| -p * p.ln())
                    .sum::<f64>()
            })
            .sum()
    }

    /// The stationary distribution.
    pub fn stationary(&self) -> &[f64] {
        &self.stationary
    }

    /// The entropy of the stationary distribution: the loss of a perfect unigram model.
    pub fn unigram_entropy(&self) -> f64 {
        self.stationary
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -p * p.ln())
            .sum()
    }
}

impl TokenSource for Synthetic {
    fn sequence(&self, key: u64, n: usize) -> Result<Vec<i64>> {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.seed.to_le_bytes());
        k[8..].copy_from_slice(&key.to_le_bytes());
        let mut rng = KeyedStream::new("weft-trainer synthetic row v1", &k);
        let mut out = Vec::with_capacity(n);
        let mut state = sample(&self.stationary_cumulative, rng.next_f64());
        for i in 0..n {
            if i > 0 {
                state = sample(&self.cumulative[state], rng.next_f64());
            }
            out.push(state as i64);
        }
        Ok(out)
    }
    fn vocab_bound(&self) -> i64 {
        self.transition.len() as i64
    }
    fn describe(&self) -> String {
        format!(
            "synthetic Markov chain, {} states, entropy rate {:.4} nats/token",
            self.transition.len(),
            self.entropy_rate()
        )
    }
}

/// One micro-batch: inputs and next-token targets, both int64 `[B, T]` on the CPU.
#[derive(Debug)]
pub struct Batch {
    /// Token ids fed to stage 0.
    pub inputs: Tensor,
    /// The next token at every position, used by the last stage's loss.
    pub targets: Tensor,
}

/// Cuts micro-batches of a fixed shape out of a token source, deterministically.
#[derive(Debug, Clone)]
pub struct Batcher {
    source: Arc<dyn TokenSource>,
    micro_batch_size: i64,
    seq_len: i64,
}

impl Batcher {
    /// A batcher for micro-batches of `micro_batch_size` rows of `seq_len` tokens, checking
    /// that the source fits a vocabulary of `vocab_size`.
    pub fn new(
        source: Arc<dyn TokenSource>,
        micro_batch_size: i64,
        seq_len: i64,
        vocab_size: i64,
    ) -> Result<Self> {
        if micro_batch_size < 1 || seq_len < 1 {
            return Err(Error::Data(
                "batch size and sequence length must be positive".into(),
            ));
        }
        if source.vocab_bound() > vocab_size {
            return Err(Error::Data(format!(
                "the data has token ids up to {} but the model's vocabulary is {vocab_size}",
                source.vocab_bound() - 1
            )));
        }
        Ok(Batcher {
            source,
            micro_batch_size,
            seq_len,
        })
    }

    /// Rows per micro-batch.
    pub fn micro_batch_size(&self) -> i64 {
        self.micro_batch_size
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> i64 {
        self.seq_len
    }

    /// The token source.
    pub fn source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }

    /// The micro-batch `micro` of step `step` of the run with seed `run_seed`.
    pub fn batch(&self, run_seed: u64, step: u64, micro: u32) -> Result<Batch> {
        let (b, t) = (self.micro_batch_size, self.seq_len);
        let mut inputs = Vec::with_capacity((b * t) as usize);
        let mut targets = Vec::with_capacity((b * t) as usize);
        for row in 0..b as u32 {
            let seq = self
                .source
                .sequence(row_key(run_seed, step, micro, row), t as usize + 1)?;
            inputs.extend_from_slice(&seq[..t as usize]);
            targets.extend_from_slice(&seq[1..]);
        }
        Ok(Batch {
            inputs: Tensor::f_from_slice(&inputs)?.f_view([b, t])?,
            targets: Tensor::f_from_slice(&targets)?.f_view([b, t])?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_deterministic_and_distinct() {
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(50);
        let b = Batcher::new(Arc::new(TokenFile::from_bytes(text.as_bytes())), 4, 16, 256).unwrap();
        let x = b.batch(7, 3, 1).unwrap();
        let y = b.batch(7, 3, 1).unwrap();
        assert!(x.inputs.equal(&y.inputs) && x.targets.equal(&y.targets));
        assert!(!x.inputs.equal(&b.batch(7, 4, 1).unwrap().inputs));
        assert!(!x.inputs.equal(&b.batch(7, 3, 0).unwrap().inputs));
        assert!(!x.inputs.equal(&b.batch(8, 3, 1).unwrap().inputs));
        // Targets are the inputs shifted by one.
        assert!(x.inputs.narrow(1, 1, 15).equal(&x.targets.narrow(1, 0, 15)));
        assert_eq!(x.inputs.size(), [4, 16]);

        let s = Batcher::new(Arc::new(Synthetic::standard(1)), 4, 16, 256).unwrap();
        let x = s.batch(7, 3, 1).unwrap();
        assert!(x.inputs.equal(&s.batch(7, 3, 1).unwrap().inputs));
        assert!(!x.inputs.equal(&s.batch(7, 4, 1).unwrap().inputs));
        assert!(x.inputs.max().int64_value(&[]) < 16);
    }

    #[test]
    fn synthetic_statistics_match_the_chain() {
        let s = Synthetic::standard(3);
        let h = s.entropy_rate();
        assert!(h > 0.5 && h < 16f64.ln(), "{h}");
        assert!((s.stationary().iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Empirical conditional log-likelihood of sampled rows ≈ −entropy rate.
        let mut nll = 0.0;
        let mut n = 0usize;
        for key in 0..400u64 {
            let seq = s.sequence(key, 65).unwrap();
            for w in seq.windows(2) {
                nll -= s.transition[w[0] as usize][w[1] as usize].ln();
                n += 1;
            }
        }
        let est = nll / n as f64;
        assert!((est - h).abs() < 0.05, "estimate {est} vs entropy rate {h}");
    }

    #[test]
    fn files_sorted_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.txt"), "world").unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello ").unwrap();
        let f = TokenFile::open(dir.path()).unwrap();
        assert_eq!(
            f.sequence(0, 11).unwrap(),
            "hello world".bytes().map(i64::from).collect::<Vec<_>>()
        );
        assert!(f.sequence(0, 12).is_err());
        std::fs::write(dir.path().join("c.bin"), [1u8, 0]).unwrap();
        assert!(TokenFile::open(dir.path()).is_err());

        let bins = tempfile::tempdir().unwrap();
        std::fs::write(bins.path().join("0.bin"), [1u8, 0, 0x2c, 0x01, 7, 0]).unwrap();
        let f = TokenFile::open(bins.path()).unwrap();
        assert_eq!(f.sequence(0, 3).unwrap(), vec![1, 300, 7]);
        assert_eq!(f.vocab_bound(), 301);
        assert!(Batcher::new(Arc::new(f), 1, 2, 256).is_err());
        std::fs::write(bins.path().join("1.bin"), [1u8]).unwrap();
        assert!(TokenFile::open(bins.path()).is_err());
    }
}
