//! Human-readable rendering: aligned `Label:  value` lines, WEFT amounts, UTC timestamps and
//! one-line event descriptions.

use serde_json::Value;
use weft_primitives::units::{format_amount, TOKEN_SYMBOL};
use weft_primitives::{Balance, Moment};
use weft_runtime::balances::Event as BalancesEvent;
use weft_runtime::{EventRecord, Phase, RuntimeEvent};

/// Width of the label column, colon included.
pub const LABEL_WIDTH: usize = 18;

/// One aligned line: `Label:          value`.
pub fn field(label: &str, value: impl std::fmt::Display) -> String {
    let label = format!("{label}:");
    format!("{label:<LABEL_WIDTH$}{value}")
}

/// `1.5 WEFT`.
pub fn weft(amount: Balance) -> String {
    format!("{} {TOKEN_SYMBOL}", format_amount(amount))
}

/// A plancks decimal string (as RPC returns balances) as `1.5 WEFT`; the string as is when it
/// is not a number.
pub fn weft_str(plancks: &str) -> String {
    match plancks.parse::<Balance>() {
        Ok(b) => weft(b),
        Err(_) => format!("{plancks} plancks"),
    }
}

/// `parts · 10^-decimals` as an exact decimal: `(3_000_000_000, 12)` → `0.003`.
pub fn decimal(parts: u64, decimals: u32) -> String {
    let scale = 10u128.pow(decimals);
    let (int, frac) = (u128::from(parts) / scale, u128::from(parts) % scale);
    if frac == 0 {
        return int.to_string();
    }
    let digits = format!("{frac:0width$}", width = decimals as usize);
    format!("{int}.{}", digits.trim_end_matches('0'))
}

fn ppb(p: weft_runtime::support::Perbill) -> String {
    decimal(u64::from(p.parts()), 9)
}

/// A run's model specification in the JSON notation `weft run register --config` takes.
pub fn model_spec(m: &weft_runtime::runs::ModelSpec) -> String {
    format!(
        "{{\"vocab_size\": {}, \"d_model\": {}, \"n_layers\": {}, \"n_heads\": {}, \"seq_len\": {}, \
         \"mlp_ratio\": {}, \"dropout\": {}, \"tied_embeddings\": {}}}",
        m.vocab_size,
        m.d_model,
        m.n_layers,
        m.n_heads,
        m.seq_len,
        m.mlp_ratio,
        ppb(m.dropout),
        m.tied_embeddings
    )
}

/// A run's hyper-parameters in the JSON notation `weft run register --hyper-params` takes.
pub fn hyper_params(h: &weft_runtime::runs::HyperParams) -> String {
    let scope = match h.clip_scope {
        weft_runtime::runs::ClipScope::Stage => "stage",
        weft_runtime::runs::ClipScope::Global => "global",
    };
    let sync = match h.replica_sync {
        weft_runtime::runs::ReplicaSync::Apart => "apart",
        weft_runtime::runs::ReplicaSync::Average => "average",
        weft_runtime::runs::ReplicaSync::AverageInt8 => "average-int8",
    };
    format!(
        "{{\"micro_batch_size\": {}, \"micro_batches\": {}, \"lr\": {}, \"warmup_steps\": {}, \
         \"total_steps\": {}, \"min_lr_ratio\": {}, \"weight_decay\": {}, \"betas\": [{}, {}], \
         \"eps\": {}, \"grad_clip\": {}, \"clip_scope\": \"{scope}\", \"replica_sync\": \"{sync}\"}}",
        h.micro_batch_size,
        h.micro_batches,
        decimal(h.lr_pico, 12),
        h.warmup_steps,
        h.total_steps,
        ppb(h.min_lr_ratio),
        ppb(h.weight_decay),
        ppb(h.beta1),
        ppb(h.beta2),
        decimal(h.eps_atto, 18),
        decimal(h.grad_clip_nano, 9),
    )
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss.mmm UTC`.
pub fn timestamp(ms: Moment) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{millis:03} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `[xt 0]` or `[block]`.
pub fn phase(p: &Phase) -> String {
    match p {
        Phase::ApplyExtrinsic(i) => format!("[xt {i}]"),
        Phase::Block => "[block]".to_string(),
    }
}

/// One line describing an event: `[xt 1] balances.transfer from=5Grw… to=5FHn… amount=1.5 WEFT`.
pub fn event(record: &EventRecord) -> String {
    format!("{} {}", phase(&record.phase), event_body(&record.event))
}

fn event_body(event: &RuntimeEvent) -> String {
    match event {
        RuntimeEvent::Balances(e) => match e {
            BalancesEvent::Transfer { from, to, amount } => format!(
                "balances.transfer from={from} to={to} amount={}",
                weft(*amount)
            ),
            BalancesEvent::Endowed {
                account,
                free_balance,
            } => format!(
                "balances.endowed account={account} freeBalance={}",
                weft(*free_balance)
            ),
            BalancesEvent::DustLost { account, amount } => {
                format!(
                    "balances.dustLost account={account} amount={}",
                    weft(*amount)
                )
            }
            BalancesEvent::FeePaid { who, fee, tip } => format!(
                "balances.feePaid who={who} fee={} tip={}",
                weft(*fee),
                weft(*tip)
            ),
            BalancesEvent::Reserved { who, amount } => {
                format!("balances.reserved who={who} amount={}", weft(*amount))
            }
            BalancesEvent::Unreserved { who, amount } => {
                format!("balances.unreserved who={who} amount={}", weft(*amount))
            }
            BalancesEvent::Slashed { who, amount } => {
                format!("balances.slashed who={who} amount={}", weft(*amount))
            }
            #[allow(unreachable_patterns)]
            other => generic(&RuntimeEvent::Balances(other.clone())),
        },
        RuntimeEvent::System(weft_runtime::system::Event::ExtrinsicFailed { error }) => {
            format!("system.extrinsicFailed error={:?}", error.message)
        }
        #[allow(unreachable_patterns)]
        other => generic(other),
    }
}

/// `pallet.variant key=value …` from the event's JSON form.
fn generic(event: &RuntimeEvent) -> String {
    let value = match serde_json::to_value(event) {
        Ok(v) => v,
        Err(_) => return format!("{event:?}"),
    };
    let Some((pallet, inner)) = single_entry(&value) else {
        return value.to_string();
    };
    match inner {
        Value::String(variant) => format!("{pallet}.{variant}"),
        other => match single_entry(other) {
            Some((variant, Value::Object(fields))) => {
                let mut s = format!("{pallet}.{variant}");
                for (k, v) in fields {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    s.push_str(&format!(" {k}={v}"));
                }
                s
            }
            Some((variant, v)) => format!("{pallet}.{variant} {v}"),
            None => format!("{pallet} {other}"),
        },
    }
}

fn single_entry(v: &Value) -> Option<(&String, &Value)> {
    match v {
        Value::Object(map) if map.len() == 1 => map.iter().next(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use weft_primitives::{AccountId, Hash};

    #[test]
    fn exact_decimals() {
        assert_eq!(decimal(3_000_000_000, 12), "0.003");
        assert_eq!(decimal(10_000_000_000, 18), "0.00000001");
        assert_eq!(decimal(1_000_000_000, 9), "1");
        assert_eq!(decimal(1_500_000_000, 9), "1.5");
        assert_eq!(decimal(0, 9), "0");
    }

    #[test]
    fn aligned_fields() {
        assert_eq!(
            field("Hash", "0x00"),
            format!("Hash:{}0x00", " ".repeat(13))
        );
        assert_eq!(field("Extrinsics root", "x"), "Extrinsics root:  x");
        assert_eq!(field("Number", 5).find('5'), Some(LABEL_WIDTH));
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000 UTC");
        // 2024-02-29T12:34:56.789Z
        assert_eq!(timestamp(1_709_210_096_789), "2024-02-29 12:34:56.789 UTC");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn amounts() {
        assert_eq!(weft(1_500_000_000_000), "1.5 WEFT");
        assert_eq!(weft_str("1000000000000"), "1 WEFT");
        assert_eq!(weft_str("x"), "x plancks");
    }

    #[test]
    fn events() {
        let who = AccountId([1; 32]);
        let r = EventRecord {
            phase: Phase::ApplyExtrinsic(2),
            event: RuntimeEvent::Balances(BalancesEvent::FeePaid {
                who,
                fee: 1_000_000_000,
                tip: 0,
            }),
        };
        assert_eq!(
            event(&r),
            format!("[xt 2] balances.feePaid who={who} fee=0.001 WEFT tip=0 WEFT")
        );
        let r = EventRecord {
            phase: Phase::ApplyExtrinsic(0),
            event: RuntimeEvent::System(weft_runtime::system::Event::ExtrinsicSuccess),
        };
        assert_eq!(event(&r), "[xt 0] system.extrinsicSuccess");
        let r = EventRecord {
            phase: Phase::Block,
            event: RuntimeEvent::System(weft_runtime::system::Event::Remarked {
                who,
                hash: Hash::ZERO,
            }),
        };
        let line = event(&r);
        assert!(line.starts_with("[block] system.remarked "), "{line}");
        assert!(line.contains(&format!(" who={who}")), "{line}");
        assert!(
            line.contains(&format!(" hash={}", Hash::ZERO.to_hex())),
            "{line}"
        );
    }
}
