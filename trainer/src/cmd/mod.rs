//! The subcommands of `weft-trainer` that are not services: one file each.
//! * [`model_args`]: the model and training flags shared by the local commands.
//! * [`local`]: `local-train`, all stages in this process.
//! * [`pipeline`]: `pipeline`, one stage over libp2p with a static peer table.
//! * [`bench`]: `bench`, throughput in process and across processes.
//! * [`bench_infer`]: `bench-infer`, generation through stage holders on loopback.
//! * [`bench_replicas`]: `bench-replicas`, averaging replicas in process; [`bench_round`]: its
//!   round over libp2p on loopback.

pub mod bench;
pub mod bench_infer;
pub mod bench_replicas;
pub mod bench_round;
pub mod local;
pub mod model_args;
pub mod pipeline;
