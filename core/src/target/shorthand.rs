//! The shorthands of a target spec (`all-linear`, …): families of layers selected by kind and
//! expert role rather than by path.

use core::fmt;

use crate::kind::{Expertise, Kind};

/// A named family of layers, selected by kind rather than by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shorthand {
    /// `all-linear`: the linear family (`linear`, `grouped_linear`, `layernorm_linear`), without
    /// output heads (`#[layer(head)]`); routers have their own kind and are never included.
    AllLinear,
    /// `all-embedding`: every `embedding` layer.
    AllEmbedding,
    /// `all-router`: every `router` layer.
    AllRouter,
    /// `all-experts`: the linear-family layers of routed experts, in any storage (per-expert
    /// linears under `#[expert]`, and `grouped_linear` banks).
    AllExperts,
    /// `all-shared-experts`: the linear-family layers of shared experts (`#[expert(shared)]`).
    AllSharedExperts,
}

impl Shorthand {
    /// Every shorthand, in the order of the enum.
    pub const ALL: [Shorthand; 5] = [
        Shorthand::AllLinear,
        Shorthand::AllEmbedding,
        Shorthand::AllRouter,
        Shorthand::AllExperts,
        Shorthand::AllSharedExperts,
    ];

    /// The shorthand as written in a spec.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Shorthand::AllLinear => "all-linear",
            Shorthand::AllEmbedding => "all-embedding",
            Shorthand::AllRouter => "all-router",
            Shorthand::AllExperts => "all-experts",
            Shorthand::AllSharedExperts => "all-shared-experts",
        }
    }

    /// The shorthand written `name`, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Shorthand> {
        Shorthand::ALL
            .into_iter()
            .find(|shorthand| shorthand.name() == name)
    }

    /// Whether a layer of `kind` (an output head when `head`, a routed or shared expert or
    /// neither by `expertise`) belongs to the family.
    #[must_use]
    pub const fn selects(self, kind: Kind, head: bool, expertise: Expertise) -> bool {
        match self {
            Shorthand::AllLinear => kind.is_linear_family() && !head,
            Shorthand::AllEmbedding => matches!(kind, Kind::Embedding),
            Shorthand::AllRouter => matches!(kind, Kind::Router),
            Shorthand::AllExperts => {
                kind.is_linear_family() && matches!(expertise, Expertise::Routed)
            }
            Shorthand::AllSharedExperts => {
                kind.is_linear_family() && matches!(expertise, Expertise::Shared)
            }
        }
    }
}

impl fmt::Display for Shorthand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
