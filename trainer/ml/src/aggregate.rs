//! Robust aggregation of the replicas' updates of one stage: the coordinate-wise trimmed
//! mean.
//!
//! Each of `n` replicas of a stage contributes its update `g_r` (its gradient of every
//! parameter, flattened in parameter-name order, all of one length). The aggregate is, for
//! every coordinate `i`,
//!
//! ```text
//! v  = sort({g_0[i], …, g_{n−1}[i]})          IEEE-754 total order
//! t  = ⌊n / 3⌋                               trimmed from each end
//! a_i = f32( (v[t] + v[t+1] + … + v[n−t−1]) / (n − 2t) )    summed in f64, in sorted order
//! ```
//!
//! * **Deterministic, whatever the order the updates arrive in**: the values of a
//!   coordinate are sorted before they are added, and the arithmetic is IEEE-754 binary64
//!   addition and one division, each correctly rounded (Rust does not contract them into fused
//!   multiply-adds), then one rounding to f32. Every machine computes the same bits, so an
//!   auditor checks an aggregate for equality, not within a tolerance.
//! * **Bounded influence**: with at most `t` arbitrary updates among the `n`, every coordinate
//!   of the aggregate lies between the smallest and the largest honest value of that
//!   coordinate (at least one honest value is trimmed on each side of any byzantine value
//!   that survives, and all surviving values lie within the honest range). One poisoned
//!   replica out of three or more therefore moves the result at most to the honest extremes,
//!   however large its update.
//! * `n = 1`: the update itself, bit for bit. `n = 2`: `t = 0`, the mean; two replicas can tell
//!   that they disagree, but not who is right (the audits of the stage decide that).
//! * Non-finite values are refused: a NaN has no place in the order that bounds the result.
//!
//! # Compression
//!
//! An update may cross the network compressed ([`UpdateCodec`]). `Int8` keeps one f32 scale
//! per tensor, `s = max|g| / 127`, and `q = round(g / s)` in `[−127, 127]`; the receiver and
//! the sender both aggregate the decoded values `q · s`, so every replica still aggregates
//! the same numbers (the sender uses its own update as the others will see it). Encoding and
//! decoding are f32 divisions, roundings and products, correctly rounded everywhere, so the
//! decoded values are the same bits on every machine.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// How many values of each coordinate are trimmed from each end among `n` updates.
pub fn trim_count(n: usize) -> usize {
    n / 3
}

/// The coordinate-wise trimmed mean of `updates` (see the module docs).
pub fn trimmed_mean(updates: &[&[f32]]) -> Result<Vec<f32>> {
    let n = updates.len();
    let first = updates
        .first()
        .ok_or_else(|| Error::Pipeline("no update to aggregate".into()))?;
    let len = first.len();
    for (r, u) in updates.iter().enumerate() {
        if u.len() != len {
            return Err(Error::Pipeline(format!(
                "update {r} has {} values, update 0 has {len}",
                u.len()
            )));
        }
        if let Some(i) = u.iter().position(|v| !v.is_finite()) {
            return Err(Error::Pipeline(format!(
                "update {r} holds a non-finite value at {i}"
            )));
        }
    }
    let t = trim_count(n);
    let kept = (n - 2 * t) as f64;
    let mut column = vec![0f32; n];
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        for (slot, u) in column.iter_mut().zip(updates) {
            *slot = u[i];
        }
        column.sort_unstable_by(f32::total_cmp);
        let sum = column[t..n - t]
            .iter()
            .fold(0f64, |acc, v| acc + f64::from(*v));
        out.push((sum / kept) as f32);
    }
    Ok(out)
}

/// The trimmed mean of the replicas' `updates` (each a list of tensors of the same shapes,
/// one per parameter), shaped like the first.
pub fn aggregate(updates: &[Vec<Tensor>]) -> Result<Vec<Tensor>> {
    let like = updates
        .first()
        .ok_or_else(|| Error::Pipeline("no update to aggregate".into()))?;
    let flat = updates
        .iter()
        .map(|u| flatten(u))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&[f32]> = flat.iter().map(Vec::as_slice).collect();
    unflatten(&trimmed_mean(&refs)?, like)
}

/// How an update crosses between replicas (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateCodec {
    /// As is: 4 bytes per parameter.
    Fp32,
    /// int8 with one f32 scale per tensor: 1 byte per parameter and 4 per tensor.
    Int8,
}

impl UpdateCodec {
    /// The bytes of an update of `tensors` tensors with `values` values in all.
    pub fn bytes(self, tensors: usize, values: usize) -> usize {
        match self {
            UpdateCodec::Fp32 => 4 * values,
            UpdateCodec::Int8 => values + 4 * tensors,
        }
    }

    /// `update` as a receiver decodes it.
    pub fn round_trip(self, update: &[Tensor]) -> Result<Vec<Tensor>> {
        match self {
            UpdateCodec::Fp32 => Ok(update.iter().map(Tensor::shallow_clone).collect()),
            UpdateCodec::Int8 => update
                .iter()
                .map(|t| {
                    let v = flatten(std::slice::from_ref(t))?;
                    let (scale, q) = int8_encode(&v);
                    unflatten(&int8_decode(scale, &q), std::slice::from_ref(t))?
                        .pop()
                        .ok_or_else(|| Error::Shape("an empty update tensor".into()))
                })
                .collect(),
        }
    }
}

/// `values` as int8 with one scale: `(s, q)` with `s = max|v| / 127`, `q = round(v / s)`.
pub fn int8_encode(values: &[f32]) -> (f32, Vec<i8>) {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        return (0.0, vec![0; values.len()]);
    }
    let scale = max / 127.0;
    let q = values
        .iter()
        .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (scale, q)
}

/// The values of an [`int8_encode`]d tensor.
pub fn int8_decode(scale: f32, q: &[i8]) -> Vec<f32> {
    q.iter().map(|v| f32::from(*v) * scale).collect()
}

/// The values of `tensors` as one f32 vector, in order (what [`trimmed_mean`] takes).
pub fn flatten(tensors: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for t in tensors {
        let flat = t.f_to_kind(Kind::Float)?.f_flatten(0, -1)?;
        out.extend(Vec::<f32>::try_from(&flat)?);
    }
    Ok(out)
}

/// `values` cut back into tensors shaped like `like` (on their devices), in order.
pub fn unflatten(values: &[f32], like: &[Tensor]) -> Result<Vec<Tensor>> {
    let total: usize = like.iter().map(Tensor::numel).sum();
    if total != values.len() {
        return Err(Error::Shape(format!(
            "{} values for tensors of {total} elements",
            values.len()
        )));
    }
    let mut at = 0;
    like.iter()
        .map(|l| {
            let n = l.numel();
            let t = Tensor::f_from_slice(&values[at..at + n])?
                .f_reshape(l.size())?
                .f_to_kind(l.kind())?
                .f_to(l.device())?;
            at += n;
            Ok(t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A small deterministic generator (xorshift) for test values.
    fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    #[test]
    fn one_update_is_itself_and_two_are_their_mean() {
        let a = values(1, 257, 2.0);
        assert_eq!(trimmed_mean(&[&a]).unwrap(), a);
        let b = values(2, 257, 2.0);
        let m = trimmed_mean(&[&a, &b]).unwrap();
        for i in 0..a.len() {
            assert_eq!(m[i], ((f64::from(a[i]) + f64::from(b[i])) / 2.0) as f32);
        }
    }

    #[test]
    fn the_aggregate_does_not_depend_on_the_order_of_the_updates() {
        for n in 2..=7 {
            let us: Vec<Vec<f32>> = (0..n).map(|r| values(r as u64 + 10, 1000, 1e-2)).collect();
            let refs: Vec<&[f32]> = us.iter().map(Vec::as_slice).collect();
            let want = trimmed_mean(&refs).unwrap();
            for rot in 1..n {
                let mut r = refs.clone();
                r.rotate_left(rot);
                r.reverse();
                let got = trimmed_mean(&r).unwrap();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "n = {n}"
                );
            }
        }
    }

    #[test]
    fn up_to_a_third_of_poisoned_updates_cannot_leave_the_honest_range() {
        for n in 3..=9 {
            let t = trim_count(n);
            let honest: Vec<Vec<f32>> = (0..n - t)
                .map(|r| values(r as u64 + 100, 500, 1.0))
                .collect();
            for poison in [1e30f32, -1e30, 0.0, 7.5] {
                let bad: Vec<Vec<f32>> = (0..t)
                    .map(|j| {
                        values(j as u64 + 900, 500, 1.0)
                            .iter()
                            .map(|v| if j % 2 == 0 { poison } else { v * -1e6 })
                            .collect()
                    })
                    .collect();
                let mut all: Vec<&[f32]> = honest.iter().map(Vec::as_slice).collect();
                all.extend(bad.iter().map(Vec::as_slice));
                let agg = trimmed_mean(&all).unwrap();
                for i in 0..500 {
                    let (lo, hi) = honest.iter().fold((f32::MAX, f32::MIN), |(lo, hi), h| {
                        (lo.min(h[i]), hi.max(h[i]))
                    });
                    assert!(
                        (lo..=hi).contains(&agg[i]),
                        "n = {n}, poison {poison}: {} outside [{lo}, {hi}]",
                        agg[i]
                    );
                }
            }
        }
    }

    #[test]
    fn bad_updates_are_refused() {
        let a = values(1, 4, 1.0);
        assert!(trimmed_mean(&[]).is_err());
        assert!(trimmed_mean(&[&a, &a[..3]]).is_err());
        let mut nan = a.clone();
        nan[2] = f32::NAN;
        assert!(trimmed_mean(&[&a, &nan, &a]).is_err());
        let mut inf = a.clone();
        inf[0] = f32::INFINITY;
        assert!(trimmed_mean(&[&inf]).is_err());
    }

    #[test]
    fn int8_keeps_every_value_within_half_a_step_of_its_scale() {
        let v = values(5, 1000, 3.0);
        let (scale, q) = int8_encode(&v);
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert_eq!(scale, max / 127.0);
        let back = int8_decode(scale, &q);
        for (a, b) in v.iter().zip(&back) {
            assert!((a - b).abs() <= 0.5 * scale * 1.0001, "{a} vs {b}");
        }
        assert_eq!(int8_encode(&[0.0; 4]), (0.0, vec![0; 4]));
        assert_eq!(UpdateCodec::Int8.bytes(2, 1000), 1008);
        assert_eq!(UpdateCodec::Fp32.bytes(2, 1000), 4000);
    }

    #[test]
    fn tensors_round_trip_through_the_flat_form() {
        let ts = vec![
            Tensor::f_from_slice(&values(3, 6, 1.0))
                .unwrap()
                .reshape([2, 3]),
            Tensor::f_from_slice(&values(4, 4, 1.0)).unwrap(),
        ];
        let flat = flatten(&ts).unwrap();
        assert_eq!(flat.len(), 10);
        let back = unflatten(&flat, &ts).unwrap();
        for (a, b) in back.iter().zip(&ts) {
            assert_eq!(a.size(), b.size());
            assert!(a.equal(b));
        }
        assert!(unflatten(&flat[..9], &ts).is_err());
    }
}
