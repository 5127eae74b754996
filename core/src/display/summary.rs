//! [`Summary`]: a model's tree with the targets PEFT users name and its expert layers.

use core::fmt;

use crate::display::{Tree, one_line};
use crate::find::{find_all_embedding_modules, find_all_linear_modules, find_all_router_modules};
use crate::kind::Kind;
use crate::walk::{Walk, walk};

/// A model's tree with the names a LoRA user needs: what `all-linear`, `all-embedding` and
/// `all-router` select, and the expert layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The folded tree.
    pub tree: Tree,
    /// [`find_all_linear_modules`]: linear-family layers, heads excluded.
    pub linear: Vec<String>,
    /// [`find_all_embedding_modules`].
    pub embedding: Vec<String>,
    /// [`find_all_router_modules`].
    pub router: Vec<String>,
    /// The normalized paths of the linear-family layers that are experts, distinct, in walk order.
    pub experts: Vec<String>,
}

impl Summary {
    /// The summary of `model`, which may be a model or a type's [`Schema`](crate::Schema).
    #[must_use]
    pub fn of<T: Walk + ?Sized>(model: &T) -> Summary {
        Summary::with_tree(model, Tree::of(model))
    }

    /// The summary of `model` with a tree already built (for instance with details).
    #[must_use]
    pub fn with_tree<T: Walk + ?Sized>(model: &T, tree: Tree) -> Summary {
        // The same few normalized paths repeat in every layer and expert: compare segments, and
        // build a path's text only the first time it is seen.
        let mut experts: Vec<(Vec<Option<&str>>, String)> = Vec::new();
        walk(model, |node| {
            let path = node.path();
            if node.is_expert()
                && node.kind().is_some_and(Kind::is_linear_family)
                && !experts
                    .iter()
                    .any(|(seen, _)| path.normalized_eq(seen.iter().copied()))
            {
                let segments = path.segments().iter().map(|segment| segment.normalized());
                experts.push((segments.collect(), path.to_owned_string(true)));
            }
        });
        Summary {
            tree,
            linear: find_all_linear_modules(model),
            embedding: find_all_embedding_modules(model),
            router: find_all_router_modules(model),
            experts: experts.into_iter().map(|(_, name)| name).collect(),
        }
    }

    /// The summary as JSON: `tree` (see [`Tree::to_json`]), `linear`, `embedding`, `router`,
    /// `experts`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tree": self.tree.to_json(),
            "linear": self.linear,
            "embedding": self.embedding,
            "router": self.router,
            "experts": self.experts,
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.tree, f)?;
        writeln!(f)?;
        for (title, names) in [
            ("linear targets", &self.linear),
            ("embedding targets", &self.embedding),
            ("router targets", &self.router),
            ("expert layers", &self.experts),
        ] {
            if names.is_empty() {
                writeln!(f, "{title}: none")?;
            } else {
                // The root, when the type is itself a layer, is `""` as a path and `^` as a
                // target name: neither reads as a name.
                let names: Vec<std::borrow::Cow<'_, str>> = names
                    .iter()
                    .map(|name| match name.as_str() {
                        "" | "^" => "(the root)".into(),
                        name => one_line(name),
                    })
                    .collect();
                writeln!(f, "{title}: {}", names.join(", "))?;
            }
        }
        Ok(())
    }
}
