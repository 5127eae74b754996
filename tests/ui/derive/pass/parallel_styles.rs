//! Every `parallel` style, with `parts` on packed layers and `expert_axis` on a bank: the names
//! the derive accepts are `moduletree::Parallel`'s, in its order.

use moduletree::{ModuleTree, Parallel, walk};

#[derive(ModuleTree)]
struct Block {
    #[layer(kind = "linear", parallel = "column")]
    column: (),
    #[layer(kind = "linear", parallel = "row")]
    row: (),
    #[layer(kind = "norm", parallel = "replicated")]
    replicated: (),
    #[layer(kind = "embedding", parallel = "vocab")]
    vocab: (),
    #[layer(kind = "linear", head, parallel = "column_gather")]
    column_gather: (),
    #[layer(kind = "linear", parallel = "row_split")]
    row_split: (),
    #[layer(kind = "linear", parallel = "packed_column", parts = [4, 1, 1])]
    packed_column: (),
    #[layer(kind = "grouped_linear", parallel = "packed_row", parts = [1, 1], expert_axis = 2)]
    packed_row: (),
}

fn main() {
    let block = Block {
        column: (),
        row: (),
        replicated: (),
        vocab: (),
        column_gather: (),
        row_split: (),
        packed_column: (),
        packed_row: (),
    };
    let mut found = Vec::new();
    walk(&block, |node| {
        if let Some(style) = node.parallel() {
            assert_eq!(node.path().to_string(), style.name());
            found.push((style, node.info().parts.to_vec(), node.info().expert_axis));
        }
    });
    let styles: Vec<Parallel> = found.iter().map(|(style, ..)| *style).collect();
    assert_eq!(styles, Parallel::ALL);
    assert_eq!(found[6].1, [4, 1, 1]);
    assert_eq!((found[7].1.as_slice(), found[7].2), (&[1, 1][..], 2));
    assert!(found[..6].iter().all(|(_, parts, axis)| parts.is_empty() && *axis == 0));
}
