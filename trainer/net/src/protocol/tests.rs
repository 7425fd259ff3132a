//! Unit tests of the stage protocol state machine.
#![allow(clippy::unwrap_used)]

use super::*;
use weft_primitives::tensor::DType;

fn peers(n: usize) -> Vec<PeerId> {
    (0..n).map(|_| PeerId::random()).collect()
}

fn proto(stage: usize, peers: &[PeerId]) -> StageProtocol {
    StageProtocol::new(
        ProtocolConfig {
            run: 7,
            shape: StageShape {
                stage,
                n_stages: peers.len(),
                micro_batches: 2,
                activation: vec![1, 2],
                shared: None,
                global_clip: false,
            },
            peers: peers.to_vec(),
            retry: RetryPolicy {
                attempts: 3,
                initial: Duration::from_millis(10),
                max: Duration::from_millis(15),
            },
        },
        0,
    )
}

fn act(v: f32) -> WireTensor {
    WireTensor {
        dtype: DType::F32,
        shape: vec![1, 2],
        data: [v, v].iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn forward(step: Step, micro: u32, v: f32) -> Request {
    Request::Forward {
        run: 7,
        step,
        micro,
        from_stage: 0,
        tensor: act(v),
    }
}

fn reply(effects: &[Effect]) -> Response {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap()
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn buffers_dedups_and_refuses() {
    let p = peers(2);
    let mut s1 = proto(1, &p);
    let req = |from: PeerId, r: Request| Input::Request { from, request: r };
    // Buffered once; an identical duplicate is acknowledged, a different one refused.
    let e = s1.handle(req(p[0], forward(0, 1, 1.0)));
    assert_eq!(reply(&e), Response::Ack);
    assert!(e.contains(&Effect::Wake));
    assert_eq!(
        reply(&s1.handle(req(p[0], forward(0, 1, 1.0)))),
        Response::Ack
    );
    let conflict = s1.handle(req(p[0], forward(0, 1, 2.0)));
    assert_eq!(code(&reply(&conflict)), Some(ErrorCode::Conflict));
    // Wrong sender, wrong micro-batch, too far ahead.
    let stranger = PeerId::random();
    let e = s1.handle(req(stranger, forward(0, 0, 1.0)));
    assert_eq!(code(&reply(&e)), Some(ErrorCode::NotNeighbour));
    let e = s1.handle(req(p[0], forward(0, 2, 1.0)));
    assert_eq!(code(&reply(&e)), Some(ErrorCode::WrongStage));
    let e = s1.handle(req(p[0], forward(2, 0, 1.0)));
    assert_eq!(code(&reply(&e)), Some(ErrorCode::FutureStep));
    assert!(matches!(
        s1.take(0, Slot::Forward(1)),
        Some(Payload::Tensor(_))
    ));
    assert!(s1.take(0, Slot::Forward(1)).is_none());
    // Past steps are stale once the stage has moved two steps on.
    s1.handle(Input::Advance { step: 2 });
    let e = s1.handle(req(p[0], forward(0, 0, 1.0)));
    assert_eq!(code(&reply(&e)), Some(ErrorCode::StaleStep));
}

#[test]
fn retries_with_backoff_then_gives_up_and_resends_on_request() {
    let p = peers(2);
    let mut s0 = proto(0, &p);
    let e = s0.handle(Input::Send {
        to: 1,
        step: 0,
        request: forward(0, 0, 1.0),
    });
    let Some(Effect::Transmit { id, to: 1, .. }) = e.first().cloned() else {
        panic!("{e:?}");
    };
    assert_eq!(s0.in_flight(), 1);
    let lost = || Delivery::Unreachable("dial failed".into());
    let e = s0.handle(Input::Delivered {
        id,
        outcome: lost(),
    });
    assert_eq!(
        e,
        vec![Effect::RetryAfter {
            id,
            delay: Duration::from_millis(10)
        }]
    );
    assert!(matches!(
        s0.handle(Input::RetryDue { id }).as_slice(),
        [Effect::Transmit { .. }]
    ));
    let e = s0.handle(Input::Delivered {
        id,
        outcome: lost(),
    });
    assert_eq!(
        e,
        vec![Effect::RetryAfter {
            id,
            delay: Duration::from_millis(15)
        }]
    );
    // The third failure is the last attempt: given up, kept in the resend log.
    let e = s0.handle(Input::Delivered {
        id,
        outcome: lost(),
    });
    assert_eq!(e, vec![Effect::Wake]);
    assert_eq!(s0.in_flight(), 0);
    let e = s0.handle(Input::Request {
        from: p[1],
        request: Request::Resend {
            run: 7,
            from_stage: 1,
            from_step: 0,
        },
    });
    assert_eq!(reply(&e), Response::Ack);
    assert!(matches!(e[0], Effect::Transmit { to: 1, .. }));
    // A non-retryable refusal is fatal.
    let Effect::Transmit { id, .. } = e[0].clone() else {
        panic!()
    };
    let e = s0.handle(Input::Delivered {
        id,
        outcome: Delivery::Answered(Response::error(ErrorCode::Malformed, "bad")),
    });
    assert!(matches!(e[0], Effect::Fatal(_)));
    assert!(s0.fatal().is_some_and(|f| f.contains("Malformed")));
}

#[test]
fn our_done_is_retried_even_after_the_partner_said_done() {
    let p = peers(2);
    let mut s0 = proto(0, &p);
    let done = |from_stage| Request::Done {
        run: 7,
        from_stage,
        steps: 4,
    };
    s0.handle(Input::Request {
        from: p[1],
        request: done(1),
    });
    assert!(s0.all_done(&[1]));
    // A tensor for a partner that has finished is dropped when undeliverable…
    let e = s0.handle(Input::Send {
        to: 1,
        step: 3,
        request: forward(3, 0, 1.0),
    });
    let Effect::Transmit { id, .. } = e[0].clone() else {
        panic!()
    };
    let lost = || Delivery::Unreachable("gone".into());
    assert_eq!(
        s0.handle(Input::Delivered {
            id,
            outcome: lost()
        }),
        vec![Effect::Wake]
    );
    // …but our Done is retried: the partner waits for it before it leaves.
    let e = s0.handle(Input::Send {
        to: 1,
        step: 4,
        request: done(0),
    });
    let Effect::Transmit { id, .. } = e[0].clone() else {
        panic!()
    };
    let e = s0.handle(Input::Delivered {
        id,
        outcome: lost(),
    });
    assert!(matches!(e.as_slice(), [Effect::RetryAfter { .. }]), "{e:?}");
    assert_eq!(s0.in_flight(), 1);
    // A partner gone for good: given up after a few attempts, not held forever.
    let mut attempts = 1;
    while s0.in_flight() > 0 {
        s0.handle(Input::RetryDue { id });
        s0.handle(Input::Delivered {
            id,
            outcome: lost(),
        });
        attempts += 1;
        assert!(attempts <= DONE_ATTEMPTS_AFTER_PARTNER_DONE, "{attempts}");
    }
}
