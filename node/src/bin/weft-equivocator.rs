//! `weft-equivocator`: a `weft-node` whose Tendermint engine signs a second, conflicting vote
//! for every vote it casts. Test-only: it exists with the `equivocate` feature
//! (`scripts/test.sh` enables it; `scripts/setup.sh` and release builds do not), so that the
//! end-to-end tests can check that an equivocating validator is reported and slashed.

fn main() {
    weft_node::bft::service::equivocate_from_now_on();
    weft_node::entry::main()
}
