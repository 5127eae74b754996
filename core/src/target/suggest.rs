//! Suggestions for a target that matched nothing: the nearest existing names.
//!
//! Distance is the Levenshtein edit distance over characters. A candidate is suggested when it is
//! within a third of the query's length (at least 2 edits); the closest three come first, ties in
//! the order the candidates were given.

/// The most suggestions returned.
pub const MAX_SUGGESTIONS: usize = 3;

/// Up to [`MAX_SUGGESTIONS`] distinct candidates nearest to `query`, closest first.
///
/// ```
/// let names = ["linear_fc1", "linear_fc2", "linear_proj"];
/// let nearest = moduletree::target::suggest::nearest("linear_fc1x", names);
/// assert_eq!(nearest[0], "linear_fc1");
/// ```
#[must_use]
pub fn nearest<'c>(query: &str, candidates: impl IntoIterator<Item = &'c str>) -> Vec<&'c str> {
    let limit = (query.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, usize, &'c str)> = Vec::new();
    for (order, candidate) in candidates.into_iter().enumerate() {
        if candidate == query || scored.iter().any(|(_, _, seen)| *seen == candidate) {
            continue;
        }
        let distance = levenshtein(query, candidate, limit);
        if distance <= limit {
            scored.push((distance, order, candidate));
        }
    }
    scored.sort_unstable();
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, _, candidate)| candidate)
        .collect()
}

/// The edit distance between `a` and `b`, or something above `limit` once it is certain to be.
fn levenshtein(a: &str, b: &str, limit: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        core::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(levenshtein("kitten", "sitting", 10), 3);
        assert_eq!(levenshtein("", "abc", 10), 3);
        assert_eq!(levenshtein("q_proj", "q_proj", 10), 0);
    }

    #[test]
    fn nearest_orders_by_distance() {
        let found = nearest("q_prj", ["v_proj", "q_proj", "o_proj", "gate"]);
        assert_eq!(found, ["q_proj", "v_proj", "o_proj"]);
        assert!(nearest("zzzzzz", ["q_proj"]).is_empty());
    }
}
