//! The layer kinds the derive accepts, and the nearest-name suggestion for a typo.
//!
//! The names mirror `moduletree::Kind::NAMES`; a test in `moduletree-tests` derives a layer of
//! every kind so that the two lists cannot drift apart silently.

/// The built-in kind names, with the `moduletree::Kind` variant each becomes.
pub const KINDS: [(&str, &str); 7] = [
    ("linear", "Linear"),
    ("grouped_linear", "GroupedLinear"),
    ("layernorm_linear", "LayernormLinear"),
    ("embedding", "Embedding"),
    ("router", "Router"),
    ("conv", "Conv"),
    ("norm", "Norm"),
];

/// The `parallel` style names, with the `moduletree::Parallel` variant each becomes (mirrors
/// `moduletree::Parallel::ALL`).
pub const STYLES: [(&str, &str); 8] = [
    ("column", "Column"),
    ("row", "Row"),
    ("replicated", "Replicated"),
    ("vocab", "Vocab"),
    ("column_gather", "ColumnGather"),
    ("row_split", "RowSplit"),
    ("packed_column", "PackedColumn"),
    ("packed_row", "PackedRow"),
];

/// The `moduletree::Kind` variant of a built-in kind name.
pub fn variant(name: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(kind, _)| *kind == name)
        .map(|(_, variant)| *variant)
}

/// The candidate closest to `typo`, when it is close enough to be what was meant.
pub fn nearest<'c>(typo: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let typo = typo.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&typo, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= candidate.len().max(3) / 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (row, left_char) in left.chars().enumerate() {
        let mut current = vec![row + 1];
        for (column, right_char) in right.iter().enumerate() {
            let substitution = previous[column] + usize::from(left_char != *right_char);
            current.push(
                substitution
                    .min(previous[column + 1] + 1)
                    .min(current[column] + 1),
            );
        }
        previous = current;
    }
    previous[right.len()]
}
