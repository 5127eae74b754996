//! The adapters a slot holds by name, which one is active, which one is merged into the base,
//! and whether adapters are disabled: one store for every slot type (linears, embeddings, expert
//! banks), generic over the adapter type.

use crate::candle::adapter::LoraAdapter;
use crate::candle::error::LoraError;

/// The adapters of a slot and which one is active or merged; `A` is the adapter type
/// ([`LoraAdapter`] for linears and embeddings, an expert bank's own for banks).
#[derive(Clone, Debug)]
pub(crate) struct Adapters<A = LoraAdapter> {
    pub(crate) named: Vec<(String, A)>,
    pub(crate) active: Option<usize>,
    pub(crate) merged: Option<usize>,
    /// Set between `disable_adapters` and `enable_adapters`: the slot computes its base alone.
    pub(crate) disabled: bool,
}

impl<A> Default for Adapters<A> {
    fn default() -> Self {
        Adapters {
            named: Vec::new(),
            active: None,
            merged: None,
            disabled: false,
        }
    }
}

impl<A> Adapters<A> {
    /// The adapters and their names, in the order they were added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &A)> {
        self.named
            .iter()
            .map(|(name, adapter)| (name.as_str(), adapter))
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.named.iter().position(|(named, _)| named == name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&A> {
        self.position(name).map(|at| &self.named[at].1)
    }

    pub(crate) fn active(&self) -> Option<(&str, &A)> {
        self.active
            .map(|at| (self.named[at].0.as_str(), &self.named[at].1))
    }

    /// The adapter applied at forward time: the active one unless it is merged.
    pub(crate) fn unmerged_active(&self) -> Option<&A> {
        match (self.active, self.merged, self.disabled) {
            (Some(active), None, false) => Some(&self.named[active].1),
            _ => None,
        }
    }

    /// The name of the adapter merged into the base, if any.
    pub(crate) fn merged_name(&self) -> Option<&str> {
        self.merged
            .and_then(|at| self.named.get(at))
            .map(|(name, _)| name.as_str())
    }

    pub(crate) fn check_not_merged(&self) -> Result<(), LoraError> {
        match self.merged {
            Some(at) => Err(LoraError::Merged {
                path: String::new(),
                adapter: self.named[at].0.clone(),
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn check_new(&self, name: &str) -> Result<(), LoraError> {
        if self.position(name).is_some() {
            return Err(LoraError::DuplicateAdapter {
                path: String::new(),
                adapter: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Adds an adapter that was checked; the first one added becomes active.
    pub(crate) fn push(&mut self, name: &str, adapter: A) {
        self.named.push((name.to_owned(), adapter));
        if self.active.is_none() && self.merged.is_none() {
            self.active = Some(self.named.len() - 1);
        }
    }

    pub(crate) fn set_active(&mut self, name: Option<&str>) -> Result<(), LoraError> {
        self.check_not_merged()?;
        self.active = match name {
            Some(name) => Some(
                self.position(name)
                    .ok_or_else(|| LoraError::MissingAdapter {
                        path: String::new(),
                        adapter: name.to_owned(),
                    })?,
            ),
            None => None,
        };
        Ok(())
    }

    pub(crate) fn remove(&mut self, name: &str) -> Result<A, LoraError> {
        self.check_not_merged()?;
        let at = self
            .position(name)
            .ok_or_else(|| LoraError::MissingAdapter {
                path: String::new(),
                adapter: name.to_owned(),
            })?;
        let (_, adapter) = self.named.remove(at);
        self.active = match self.active {
            Some(active) if active == at => None,
            Some(active) if active > at => Some(active - 1),
            other => other,
        };
        Ok(adapter)
    }

    /// Folds the active adapter into `base` with `fold` unless one is merged already.
    pub(crate) fn merge<B>(&mut self, base: &mut B, fold: Fold<B, A>) -> Result<(), LoraError> {
        if let (Some(active), None) = (self.active, self.merged) {
            *base = fold(base, &self.named[active].1, 1.0).map_err(slot_tensor_error)?;
            self.merged = Some(active);
        }
        Ok(())
    }

    /// Takes the merged adapter out of `base` again with `fold`, if one is merged.
    pub(crate) fn unmerge<B>(&mut self, base: &mut B, fold: Fold<B, A>) -> Result<(), LoraError> {
        if let Some(merged) = self.merged {
            *base = fold(base, &self.named[merged].1, -1.0).map_err(slot_tensor_error)?;
            self.merged = None;
        }
        Ok(())
    }
}

/// Adds `sign · scale · B · A` (in the base's layout) to a slot's base: [`merged_linear`] or
/// [`merged_embedding`].
pub(crate) type Fold<B, A = LoraAdapter> = fn(&B, &A, f64) -> candle_core::Result<B>;

pub(crate) fn slot_tensor_error(source: candle_core::Error) -> LoraError {
    LoraError::Tensor {
        path: String::new(),
        source,
    }
}
