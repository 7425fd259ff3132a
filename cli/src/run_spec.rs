//! The JSON surface of a run's model specification and hyper-parameters: what `weft run
//! register --config … --hyper-params …` accepts, converted to the runs pallet's typed
//! values ([`runs::ModelSpec`], [`runs::HyperParams`]; integers and fixed point, units in
//! `weft_pallet_runs::spec`).
//!
//! The JSON is the trainer's (`weft_ml::config::ModelConfig` without `seed`, and
//! `TrainConfig`), with the same defaults:
//!
//! ```json
//! {"vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "seq_len": 128,
//!  "mlp_ratio": 4, "dropout": 0.0, "tied_embeddings": false}
//! {"micro_batch_size": 8, "micro_batches": 4, "lr": 0.001, "warmup_steps": 100,
//!  "total_steps": 10000, "min_lr_ratio": 0.1, "weight_decay": 0.1,
//!  "betas": [0.9, 0.95], "eps": 1e-8, "grad_clip": 1.0, "clip_scope": "stage",
//!  "replica_sync": "apart"}
//! ```
//!
//! `replica_sync` is how the replicas of each stage relate: `"apart"` (the default: each
//! replica pipeline trains its own model), `"average"` (they average their updates every
//! step, sent as f32) or `"average-int8"` (the same, the updates sent as int8 with one scale
//! per tensor); replicas that average may be at most 64 per stage. Any other value is refused
//! ([`SpecError::NotRepresentable`]).
//!
//! Required: `d_model`, `n_layers`, `n_heads`, `seq_len`; `micro_batch_size`, `lr`,
//! `total_steps`. Unknown fields and a `seed` are refused. A number is converted by rounding
//! to the field's resolution (10⁻⁹ for fractions and the clipping norm, 10⁻¹² for `lr`,
//! 10⁻¹⁸ for `eps`) and refused ([`SpecError::NotRepresentable`]) when that changes it by
//! more than one part in 10⁶, or when it is not a finite number. A value on the wrong side
//! of a pallet rule (a negative size, `lr ≤ 0`, a beta of one) is refused with that rule's
//! error ([`SpecError::Rule`]), and the converted values are checked with the pallet's own
//! [`runs::check_run`] ([`SpecError::Check`]) so a run that cannot train is refused before a
//! fee is paid.

use serde_json::{Map, Value};
use weft_runtime::runs::{self, ClipScope, HyperParams, ModelSpec, ReplicaSync};
use weft_runtime::support::{Perbill, StageIndex};

/// Why a JSON model configuration or hyper-parameter set cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not JSON.
    #[error("the {what} is not JSON: {source}")]
    NotJson {
        /// `model configuration` or `hyper-parameters`.
        what: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// Not a JSON object.
    #[error("the {what} must be a JSON object")]
    NotObject {
        /// Which document.
        what: &'static str,
    },
    /// A field this format does not have.
    #[error("the {what} has an unknown field {field:?} (known: {known})")]
    UnknownField {
        /// Which document.
        what: &'static str,
        /// The field.
        field: String,
        /// The fields it may have.
        known: String,
    },
    /// A required field is missing.
    #[error("the {what} lacks the required field {field:?}")]
    Missing {
        /// Which document.
        what: &'static str,
        /// The field.
        field: &'static str,
    },
    /// The model configuration names a seed.
    #[error("the model configuration names a seed; the run's seed is the chain's block randomness at registration")]
    Seed,
    /// A value the typed field cannot hold.
    #[error("{field} = {value} cannot be registered: {why}")]
    NotRepresentable {
        /// The field.
        field: &'static str,
        /// The value as given.
        value: String,
        /// Why.
        why: String,
    },
    /// A value on the wrong side of one of the pallet's rules.
    #[error("{field} = {value}: {rule}")]
    Rule {
        /// The field.
        field: &'static str,
        /// The value as given.
        value: String,
        /// The rule (the error the chain would return).
        rule: runs::Error,
    },
    /// The converted run breaks one of the pallet's rules.
    #[error("{0}")]
    Check(#[from] runs::Error),
}

type Result<T> = std::result::Result<T, SpecError>;

const MODEL: &str = "model configuration";
const HYPER: &str = "hyper-parameters";
const MODEL_FIELDS: [&str; 8] = [
    "vocab_size",
    "d_model",
    "n_layers",
    "n_heads",
    "seq_len",
    "mlp_ratio",
    "dropout",
    "tied_embeddings",
];
const HYPER_FIELDS: [&str; 12] = [
    "micro_batch_size",
    "micro_batches",
    "lr",
    "warmup_steps",
    "total_steps",
    "min_lr_ratio",
    "weight_decay",
    "betas",
    "eps",
    "grad_clip",
    "clip_scope",
    "replica_sync",
];

struct Doc<'a> {
    what: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Doc<'a> {
    fn parse(what: &'static str, v: &'a Value, known: &[&str]) -> Result<Self> {
        let map = v.as_object().ok_or(SpecError::NotObject { what })?;
        for k in map.keys() {
            if k == "seed" && what == MODEL {
                return Err(SpecError::Seed);
            }
            if !known.contains(&k.as_str()) {
                return Err(SpecError::UnknownField {
                    what,
                    field: k.clone(),
                    known: known.join(", "),
                });
            }
        }
        Ok(Doc { what, map })
    }

    fn get(&self, field: &'static str, required: bool) -> Result<Option<&'a Value>> {
        match self.map.get(field) {
            Some(v) => Ok(Some(v)),
            None if required => Err(SpecError::Missing {
                what: self.what,
                field,
            }),
            None => Ok(None),
        }
    }

    /// A non-negative integer; a negative one breaks `negative`.
    fn int(&self, field: &'static str, default: Option<u64>, negative: runs::Error) -> Result<u64> {
        let Some(v) = self.get(field, default.is_none())? else {
            return Ok(default.unwrap_or(0));
        };
        if let Some(n) = v.as_u64() {
            return Ok(n);
        }
        if v.as_i64().is_some_and(|n| n < 0) || v.as_f64().is_some_and(|x| x < 0.0) {
            return Err(SpecError::Rule {
                field,
                value: v.to_string(),
                rule: negative,
            });
        }
        Err(not_representable(
            field,
            v,
            "must be a non-negative integer",
        ))
    }

    fn u32(&self, field: &'static str, default: Option<u32>, negative: runs::Error) -> Result<u32> {
        let n = self.int(field, default.map(u64::from), negative)?;
        u32::try_from(n).map_err(|_| SpecError::NotRepresentable {
            field,
            value: n.to_string(),
            why: format!("at most {}", u32::MAX),
        })
    }

    fn number(&self, field: &'static str, default: Option<f64>) -> Result<(f64, String)> {
        match self.get(field, default.is_none())? {
            Some(v) => v
                .as_f64()
                .map(|x| (x, v.to_string()))
                .ok_or_else(|| not_representable(field, v, "must be a number")),
            None => Ok((default.unwrap_or(0.0), "default".into())),
        }
    }
}

fn not_representable(field: &'static str, v: &Value, why: &str) -> SpecError {
    SpecError::NotRepresentable {
        field,
        value: v.to_string(),
        why: why.to_string(),
    }
}

/// `x` in units of `10^-decimals`, rounded, at most `max`; `x < 0` breaks `negative`.
fn fixed(
    field: &'static str,
    (x, text): (f64, String),
    decimals: i32,
    max: u64,
    negative: Option<runs::Error>,
) -> Result<u64> {
    let bad = |why: String| SpecError::NotRepresentable {
        field,
        value: text.clone(),
        why,
    };
    if !x.is_finite() {
        return Err(bad("not a finite number".into()));
    }
    if x < 0.0 {
        return Err(match negative {
            Some(rule) => SpecError::Rule {
                field,
                value: text.clone(),
                rule,
            },
            None => bad("must not be negative".into()),
        });
    }
    let scale = 10f64.powi(decimals);
    let parts = (x * scale).round();
    if parts > max as f64 {
        return Err(bad(format!("at most {}", max as f64 / scale)));
    }
    // `parts ≤ max < 2⁶⁴` and non-negative: the cast is exact for every integer-valued f64.
    let n = parts as u64;
    let back = n as f64 / scale;
    if (back - x).abs() > x * 1e-6 {
        return Err(bad(format!(
            "needs more precision than 10^-{decimals} (it would become {back})"
        )));
    }
    Ok(n)
}

fn perbill(
    field: &'static str,
    value: (f64, String),
    negative: Option<runs::Error>,
    above_one: runs::Error,
) -> Result<Perbill> {
    if value.0 > 1.0 {
        return Err(SpecError::Rule {
            field,
            value: value.1,
            rule: above_one,
        });
    }
    let parts = fixed(field, value, 9, u64::from(Perbill::ACCURACY), negative)?;
    Ok(Perbill::from_parts(
        u32::try_from(parts).unwrap_or(Perbill::ACCURACY),
    ))
}

fn parse_json(what: &'static str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|source| SpecError::NotJson { what, source })
}

/// A model configuration (JSON) as the pallet's [`ModelSpec`] (see the module docs).
pub fn model_from_json(bytes: &[u8]) -> Result<ModelSpec> {
    let v = parse_json(MODEL, bytes)?;
    model_from_value(&v)
}

/// [`model_from_json`] of a parsed document.
pub fn model_from_value(v: &Value) -> Result<ModelSpec> {
    let d = Doc::parse(MODEL, v, &MODEL_FIELDS)?;
    let size = runs::Error::ModelSizeNotPositive;
    let tied = match d.get("tied_embeddings", false)? {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| not_representable("tied_embeddings", v, "must be true or false"))?,
    };
    Ok(ModelSpec {
        vocab_size: d.u32("vocab_size", Some(256), size)?,
        d_model: d.u32("d_model", None, size)?,
        n_layers: d.u32("n_layers", None, size)?,
        n_heads: d.u32("n_heads", None, size)?,
        seq_len: d.u32("seq_len", None, size)?,
        mlp_ratio: d.u32("mlp_ratio", Some(4), size)?,
        dropout: perbill(
            "dropout",
            d.number("dropout", Some(0.0))?,
            Some(runs::Error::BadDropout),
            runs::Error::BadDropout,
        )?,
        tied_embeddings: tied,
    })
}

/// Hyper-parameters (JSON) as the pallet's [`HyperParams`] (see the module docs).
pub fn hyper_from_json(bytes: &[u8]) -> Result<HyperParams> {
    let v = parse_json(HYPER, bytes)?;
    hyper_from_value(&v)
}

/// [`hyper_from_json`] of a parsed document.
pub fn hyper_from_value(v: &Value) -> Result<HyperParams> {
    let d = Doc::parse(HYPER, v, &HYPER_FIELDS)?;
    let defaults = HyperParams::with_defaults(1, 1, 1);
    let ppb = |p: Perbill| f64::from(p.parts()) / 1e9;
    let (beta1, beta2) = match d.get("betas", false)? {
        None => (defaults.beta1, defaults.beta2),
        Some(v) => {
            let pair = v
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| not_representable("betas", v, "must be [beta1, beta2]"))?;
            let beta = |x: &Value| -> Result<Perbill> {
                let f = x
                    .as_f64()
                    .ok_or_else(|| not_representable("betas", v, "must be two numbers"))?;
                if f >= 1.0 {
                    return Err(SpecError::Rule {
                        field: "betas",
                        value: v.to_string(),
                        rule: runs::Error::BadBetas,
                    });
                }
                perbill(
                    "betas",
                    (f, v.to_string()),
                    Some(runs::Error::BadBetas),
                    runs::Error::BadBetas,
                )
            };
            (beta(&pair[0])?, beta(&pair[1])?)
        }
    };
    let clip_scope = match d.get("clip_scope", false)? {
        None => ClipScope::Stage,
        Some(v) => match v.as_str() {
            Some("stage") => ClipScope::Stage,
            Some("global") => ClipScope::Global,
            _ => {
                return Err(not_representable(
                    "clip_scope",
                    v,
                    "must be \"stage\" or \"global\"",
                ))
            }
        },
    };
    let replica_sync = match d.get("replica_sync", false)? {
        None => ReplicaSync::Apart,
        Some(v) => match v.as_str() {
            Some("apart") => ReplicaSync::Apart,
            Some("average") => ReplicaSync::Average,
            Some("average-int8") => ReplicaSync::AverageInt8,
            _ => {
                return Err(not_representable(
                    "replica_sync",
                    v,
                    "must be \"apart\", \"average\" or \"average-int8\"",
                ))
            }
        },
    };
    let lr = d.number("lr", None)?;
    if lr.0 <= 0.0 {
        return Err(SpecError::Rule {
            field: "lr",
            value: lr.1,
            rule: runs::Error::BadLearningRate,
        });
    }
    let eps = d.number("eps", Some(1e-8))?;
    if eps.0 <= 0.0 {
        return Err(SpecError::Rule {
            field: "eps",
            value: eps.1,
            rule: runs::Error::BadEps,
        });
    }
    Ok(HyperParams {
        micro_batch_size: d.u32("micro_batch_size", None, runs::Error::BatchNotPositive)?,
        micro_batches: d.u32("micro_batches", Some(1), runs::Error::BatchNotPositive)?,
        lr_pico: fixed("lr", lr, 12, u64::MAX, Some(runs::Error::BadLearningRate))?,
        warmup_steps: d.int("warmup_steps", Some(0), runs::Error::WarmupBeyondTotal)?,
        total_steps: d.int("total_steps", None, runs::Error::TotalStepsNotPositive)?,
        min_lr_ratio: perbill(
            "min_lr_ratio",
            d.number("min_lr_ratio", Some(ppb(defaults.min_lr_ratio)))?,
            Some(runs::Error::BadMinLrRatio),
            runs::Error::BadMinLrRatio,
        )?,
        weight_decay: perbill(
            "weight_decay",
            d.number("weight_decay", Some(ppb(defaults.weight_decay)))?,
            Some(runs::Error::BadWeightDecay),
            runs::Error::BadWeightDecay,
        )?,
        beta1,
        beta2,
        eps_atto: fixed("eps", eps, 18, u64::MAX, Some(runs::Error::BadEps))?,
        grad_clip_nano: fixed(
            "grad_clip",
            d.number("grad_clip", Some(1.0))?,
            9,
            u64::MAX,
            None,
        )?,
        clip_scope,
        replica_sync,
    })
}

/// Both documents converted and checked against the pallet's rules for a run of `stages`
/// stages of `replicas` replicas and step limit `max_steps` (what `weft run register`
/// submits).
pub fn run_from_json(
    model: &[u8],
    hyper: &[u8],
    stages: StageIndex,
    replicas: u16,
    max_steps: u64,
) -> Result<(ModelSpec, HyperParams)> {
    let m = model_from_json(model)?;
    let h = hyper_from_json(hyper)?;
    runs::check_run(&m, &h, stages, max_steps)?;
    runs::check_replicas(&h, replicas)?;
    Ok((m, h))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rule(r: Result<impl std::fmt::Debug>) -> runs::Error {
        match r {
            Err(SpecError::Rule { rule, .. }) | Err(SpecError::Check(rule)) => rule,
            other => panic!("expected a rule error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_exact() {
        let h =
            hyper_from_json(br#"{"micro_batch_size": 8, "lr": 0.003, "total_steps": 60}"#).unwrap();
        assert_eq!(h, HyperParams::with_defaults(8, 3_000_000_000, 60));
        let full = br#"{"micro_batch_size": 8, "micro_batches": 4, "lr": 0.001,
            "warmup_steps": 100, "total_steps": 10000, "min_lr_ratio": 0.1,
            "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8, "grad_clip": 1.0,
            "clip_scope": "stage"}"#;
        let h = hyper_from_json(full).unwrap();
        assert_eq!((h.lr_pico, h.eps_atto), (1_000_000_000, 10_000_000_000));
        let m = model_from_json(br#"{"d_model": 64, "n_layers": 4, "n_heads": 4, "seq_len": 64}"#)
            .unwrap();
        assert_eq!(
            m,
            ModelSpec {
                d_model: 64,
                n_layers: 4,
                n_heads: 4,
                seq_len: 64,
                ..ModelSpec::tiny()
            }
        );
    }

    #[test]
    fn replica_sync_is_named_and_defaults_to_apart() {
        let h = |sync: &str| {
            hyper_from_json(
                format!(r#"{{"micro_batch_size": 1, "lr": 0.001, "total_steps": 10{sync}}}"#)
                    .as_bytes(),
            )
        };
        assert_eq!(h("").unwrap().replica_sync, ReplicaSync::Apart);
        for (name, sync) in [
            ("apart", ReplicaSync::Apart),
            ("average", ReplicaSync::Average),
            ("average-int8", ReplicaSync::AverageInt8),
        ] {
            let parsed = h(&format!(r#", "replica_sync": "{name}""#)).unwrap();
            assert_eq!(parsed.replica_sync, sync);
            // What `weft run show` prints is what `weft run register` takes back.
            let shown = crate::render::hyper_params(&parsed);
            assert!(
                shown.contains(&format!(r#""replica_sync": "{name}""#)),
                "{shown}"
            );
            assert_eq!(hyper_from_json(shown.as_bytes()).unwrap(), parsed);
        }
        for bad in [
            r#""Average""#,
            r#""average_int8""#,
            r#""int8""#,
            "1",
            "true",
            "null",
        ] {
            let r = h(&format!(r#", "replica_sync": {bad}"#));
            match r {
                Err(SpecError::NotRepresentable { field, why, .. }) => {
                    assert_eq!(field, "replica_sync");
                    assert!(why.contains("\"average-int8\""), "{why}");
                }
                other => panic!("{bad}: expected a refusal, got {other:?}"),
            }
        }
        // Replicas that average: at most 64 per stage, checked before a fee is paid.
        let model = br#"{"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": 8}"#;
        let hyper = br#"{"micro_batch_size": 1, "lr": 0.001, "total_steps": 10,
            "replica_sync": "average"}"#;
        assert!(run_from_json(model, hyper, 2, 64, 0).is_ok());
        assert_eq!(
            rule(run_from_json(model, hyper, 2, 65, 0)),
            runs::Error::TooManyReplicasToAverage
        );
    }

    #[test]
    fn refusals_are_named() {
        let m = |j: &str| model_from_json(j.as_bytes());
        assert_eq!(
            rule(m(
                r#"{"d_model": -5, "n_layers": 0, "n_heads": 3, "seq_len": 8}"#
            )),
            runs::Error::ModelSizeNotPositive
        );
        let r = |j: &str, stages| {
            run_from_json(
                j.as_bytes(),
                br#"{"micro_batch_size": 1, "lr": 0.001, "total_steps": 10}"#,
                stages,
                1,
                0,
            )
        };
        assert_eq!(
            rule(r(
                r#"{"d_model": 30, "n_layers": 2, "n_heads": 4, "seq_len": 8}"#,
                1
            )),
            runs::Error::HeadsDoNotDivide
        );
        assert_eq!(
            rule(r(
                r#"{"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": 8}"#,
                9
            )),
            runs::Error::MoreStagesThanLayers
        );
        let h = |j: &str| hyper_from_json(j.as_bytes());
        assert_eq!(
            rule(h(r#"{"micro_batch_size": 1, "lr": -1, "total_steps": 10}"#)),
            runs::Error::BadLearningRate
        );
        assert_eq!(
            rule(h(
                r#"{"micro_batch_size": 1, "lr": 0.1, "total_steps": 10, "betas": [0.9, 1.0]}"#
            )),
            runs::Error::BadBetas
        );
        assert_eq!(
            rule(h(
                r#"{"micro_batch_size": 1, "lr": 0.1, "total_steps": 10, "min_lr_ratio": 1.5}"#
            )),
            runs::Error::BadMinLrRatio
        );
        assert!(matches!(
            h(r#"{"micro_batch_size": 1, "lr": 1e-15, "total_steps": 10}"#),
            Err(SpecError::NotRepresentable { field: "lr", .. })
        ));
        assert!(matches!(
            h(r#"{"micro_batch_size": 1.5, "lr": 0.1, "total_steps": 10}"#),
            Err(SpecError::NotRepresentable {
                field: "micro_batch_size",
                ..
            })
        ));
        assert!(matches!(
            h(r#"{"lr": 0.1}"#),
            Err(SpecError::Missing {
                field: "micro_batch_size",
                ..
            })
        ));
        assert!(matches!(
            m(r#"{"d_model": 8, "n_layers": 1, "n_heads": 1, "seq_len": 8, "seed": 1}"#),
            Err(SpecError::Seed)
        ));
        assert!(matches!(
            m(r#"{"n_layer": 8}"#),
            Err(SpecError::UnknownField { .. })
        ));
    }
}
