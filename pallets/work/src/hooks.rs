//! The block hooks: selection of the commitments due at block start, deadline processing of
//! the audits due at block end, one item per nested transaction (see the crate docs, "One
//! item, one transaction").

use crate::audits::{close, select};
use crate::{Event, Sink, DEADLINES, SELECTION_QUEUE};
use weft_pallet_support::{emit, transactional_item, Failure, Rewind, Transactional};
use weft_primitives::BlockNumber;

/// Block start: selection of the commitments due now, each in its own transaction (a
/// failing one is recorded as [`Event::SelectionFailed`]; see the module docs).
pub fn on_initialize(
    s: &mut (impl Transactional + ?Sized),
    ev: &mut (impl Sink + Rewind),
    now: BlockNumber,
) -> Result<(), Failure> {
    if let Some(q) = SELECTION_QUEUE.get(s, &now)? {
        SELECTION_QUEUE.remove(s, &now);
        for id in q {
            if let Err(error) = transactional_item(s, ev, |s, ev| select(s, ev, now, id))? {
                emit(
                    ev,
                    Event::SelectionFailed {
                        commitment: id,
                        error,
                    },
                );
            }
        }
    }
    Ok(())
}

/// Block end: audits whose attestation deadline is this block, each in its own transaction
/// (a failing one is recorded as [`Event::AuditCloseFailed`]; see the module docs).
pub fn on_finalize(
    s: &mut (impl Transactional + ?Sized),
    ev: &mut (impl Sink + Rewind),
    now: BlockNumber,
) -> Result<(), Failure> {
    if let Some(q) = DEADLINES.get(s, &now)? {
        DEADLINES.remove(s, &now);
        for id in q {
            if let Err(error) = transactional_item(s, ev, |s, ev| close(s, ev, now, id))? {
                emit(ev, Event::AuditCloseFailed { audit: id, error });
            }
        }
    }
    Ok(())
}
