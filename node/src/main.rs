//! `weft-node`: see `weft-node --help`.

fn main() {
    weft_node::entry::main()
}
