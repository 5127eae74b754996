//! Towers: the separate models one checkpoint holds (a vision encoder, an audio encoder, a
//! projector, multi-token-prediction layers) beside the language model.
//!
//! A PEFT name such as `q_proj` matches in every tower, so a target is only clear once it is known
//! which tower each match lies in. A tower is recognised by the name of a module among the first
//! [`TOWER_DEPTH`] segments of its path:
//!
//! | kind | module names |
//! |---|---|
//! | vision | `vision_tower`, `visual`, `vision_model`, `vision_encoder`, `vision_backbone`, `vision_embed_tokens`, `image_encoder`, `vpm`, `vit` |
//! | audio | `audio_tower`, `audio_encoder`, `audio_model`, `whisper_encoder`, `speech_encoder` |
//! | projector | `multi_modal_projector`, `mm_projector`, `connector`, `resampler`, `aligner`, `merger`, `mlp1` |
//! | mtp | `mtp`, `mtp_layers`; and, with a `config.json`, the decoder layers at or past its `num_hidden_layers` (DeepSeek-V3's `model.layers.61`) |
//!
//! Everything else is the language model, rooted at a `language_model` module when there is one,
//! else at the checkpoint's root. The walk over the top of the tree is a loop with an explicit
//! stack, bounded by the depth.

use serde::Serialize;

use crate::checkpoint::module::{CheckpointModule, ChildKey};
use crate::tree::Role;

/// How deep (in segments) a tower's root may lie.
pub const TOWER_DEPTH: usize = 3;

/// What a tower is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TowerKind {
    /// The language model: everything not in another tower.
    Language,
    /// An image or video encoder.
    Vision,
    /// An audio encoder.
    Audio,
    /// The projector between an encoder and the language model.
    Projector,
    /// Multi-token-prediction layers.
    Mtp,
}

impl TowerKind {
    /// The kind's name (`vision`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            TowerKind::Language => "language",
            TowerKind::Vision => "vision",
            TowerKind::Audio => "audio",
            TowerKind::Projector => "projector",
            TowerKind::Mtp => "mtp",
        }
    }

    fn of(name: &str) -> Option<TowerKind> {
        Some(match name {
            "vision_tower"
            | "visual"
            | "vision_model"
            | "vision_encoder"
            | "vision_backbone"
            | "vision_embed_tokens"
            | "image_encoder"
            | "vpm"
            | "vit" => TowerKind::Vision,
            "audio_tower" | "audio_encoder" | "audio_model" | "whisper_encoder"
            | "speech_encoder" => TowerKind::Audio,
            "multi_modal_projector"
            | "mm_projector"
            | "connector"
            | "resampler"
            | "aligner"
            | "merger"
            | "mlp1" => TowerKind::Projector,
            "mtp" | "mtp_layers" => TowerKind::Mtp,
            _ => return None,
        })
    }
}

/// One tower of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tower {
    /// The tower's root path (`model.vision_tower`); `""` for a language model rooted at the
    /// checkpoint's root, which then holds everything no other tower does.
    pub path: String,
    /// What the tower is.
    pub kind: TowerKind,
    /// The leaf layers (modules with a kind) in it.
    pub layers: usize,
    /// The length of its first list of repeated blocks (`encoder.layers`: 27), 0 when it has none.
    pub blocks: usize,
}

impl Tower {
    /// Whether `path` (a joined module path) lies in this tower's subtree, on segment
    /// boundaries.
    #[must_use]
    pub fn contains(&self, path: &str) -> bool {
        self.path.is_empty()
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    }
}

fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_owned()
    } else {
        format!("{path}.{segment}")
    }
}

fn segment(key: &ChildKey) -> String {
    match key {
        ChildKey::Index(index) => index.to_string(),
        ChildKey::Name(name) => name.to_string(),
    }
}

/// The leaf layers under `module`, skipping the subtrees in `skip`, and its first list of
/// blocks (its elements outside `skip`).
fn count(module: &CheckpointModule, skip: &[&CheckpointModule]) -> (usize, usize) {
    let skipped =
        |module: &CheckpointModule| skip.iter().any(|other| core::ptr::eq(*other, module));
    let mut layers = 0;
    let mut blocks = None;
    let mut stack: Vec<&CheckpointModule> = vec![module];
    while let Some(module) = stack.pop() {
        if skipped(module) {
            continue;
        }
        if matches!(module.info().role, Role::Layer(_)) {
            layers += 1;
            continue;
        }
        let children = module.children();
        if blocks.is_none() && module.info().role == Role::Container {
            blocks = Some(children.iter().filter(|(_, child)| !skipped(child)).count());
        }
        stack.extend(children.iter().rev().map(|(_, child)| child));
    }
    (layers, blocks.unwrap_or(0))
}

/// The towers of the tree at `root`, the language model first; `decoder_layers` is
/// `config.json`'s `num_hidden_layers`.
pub(super) fn find(root: &CheckpointModule, decoder_layers: Option<u64>) -> Vec<Tower> {
    let mut found: Vec<(String, TowerKind)> = Vec::new();
    let mut language = String::new();
    let mut stack: Vec<(&CheckpointModule, String, usize)> = vec![(root, String::new(), 0)];
    while let Some((module, path, depth)) = stack.pop() {
        for (key, child) in module.children().iter().rev() {
            let ChildKey::Name(name) = key else {
                continue;
            };
            let child_path = join(&path, name);
            if let Some(kind) = TowerKind::of(name) {
                found.push((child_path, kind));
            } else if &**name == "language_model" && language.is_empty() {
                language = child_path;
            } else if depth + 1 < TOWER_DEPTH {
                stack.push((child, child_path, depth + 1));
            }
        }
    }
    // Decoder layers past the configured count are multi-token-prediction layers.
    if let Some((decoder_layers, (blocks_path, blocks))) =
        decoder_layers.zip(first_blocks(root, &language, &found))
    {
        for (key, _) in blocks.children() {
            if let ChildKey::Index(index) = key
                && *index as u64 >= decoder_layers
            {
                found.push((join(&blocks_path, &index.to_string()), TowerKind::Mtp));
            }
        }
    }
    found.sort_by(|left, right| left.0.cmp(&right.0));
    let mut towers = Vec::with_capacity(found.len() + 1);
    let skip: Vec<&CheckpointModule> = found
        .iter()
        .filter_map(|(path, _)| lookup(root, path))
        .collect();
    if let Some(module) = lookup(root, &language) {
        let (layers, blocks) = count(module, &skip);
        towers.push(Tower {
            path: language,
            kind: TowerKind::Language,
            layers,
            blocks,
        });
    }
    for (path, kind) in found {
        if let Some(module) = lookup(root, &path) {
            let (layers, blocks) = count(module, &[]);
            towers.push(Tower {
                path,
                kind,
                layers,
                blocks,
            });
        }
    }
    towers
}

/// The module at a joined path, looked up segment by segment.
fn lookup<'m>(root: &'m CheckpointModule, path: &str) -> Option<&'m CheckpointModule> {
    if path.is_empty() {
        return Some(root);
    }
    path.split('.')
        .try_fold(root, |module, segment| module.child(segment))
}

/// The language model's first list of blocks (breadth first), outside the other towers.
fn first_blocks<'m>(
    root: &'m CheckpointModule,
    language: &str,
    towers: &[(String, TowerKind)],
) -> Option<(String, &'m CheckpointModule)> {
    let start = lookup(root, language)?;
    let mut queue = std::collections::VecDeque::from([(start, language.to_owned(), 0)]);
    while let Some((module, path, depth)) = queue.pop_front() {
        if module.info().role == Role::Container {
            return Some((path, module));
        }
        if depth > TOWER_DEPTH {
            continue;
        }
        for (key, child) in module.children() {
            let child_path = join(&path, &segment(key));
            if !towers.iter().any(|(tower, _)| *tower == child_path) {
                queue.push_back((child, child_path, depth + 1));
            }
        }
    }
    None
}
