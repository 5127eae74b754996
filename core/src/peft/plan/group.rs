//! The file side of a plan: its tensors grouped into factor pairs and whole parameters by module
//! path, and `ParamWrapper` pairs mapped to the banks they adapt.

use std::collections::{BTreeMap, HashMap};

use crate::peft::adapter::{Adapter, RawTensor};
use crate::peft::error::PeftError;
use crate::peft::names::{AdapterKey, Factor, FactorNaming, parameter_owner, parse_key};
use crate::target::ResolvedLayer;

/// The two halves of one module's factors, as the file names them.
#[derive(Clone, Copy, Default)]
pub(super) struct Pair<'t> {
    pub(super) a: Option<(&'t str, &'t RawTensor)>,
    pub(super) b: Option<(&'t str, &'t RawTensor)>,
    pub(super) naming: Option<FactorNaming>,
}

impl<'t> Pair<'t> {
    fn half(&mut self, factor: Factor) -> &mut Option<(&'t str, &'t RawTensor)> {
        match factor {
            Factor::A => &mut self.a,
            Factor::B => &mut self.b,
        }
    }
}

/// Factor pairs by module path.
pub(super) type Pairs<'t> = BTreeMap<&'t str, Pair<'t>>;

/// Whole parameters by (module path, parameter name): the tensor's key and the tensor.
pub(super) type Parameters<'t> = BTreeMap<(&'t str, &'t str), (&'t str, &'t RawTensor)>;

impl Adapter {
    /// Splits the tensors into factor pairs and whole parameters by module path.
    pub(super) fn group(&self) -> Result<(Pairs<'_>, Parameters<'_>), PeftError> {
        let mut pairs = Pairs::new();
        let mut parameters = BTreeMap::new();
        for (key, tensor) in &self.tensors {
            match parse_key(key) {
                None => return Err(PeftError::UnknownTensor { key: key.clone() }),
                Some(AdapterKey::Parameter { path, param }) => {
                    // PEFT saves `<layer>.base_layer.weight` copies of embedding layers it
                    // adapts (`save_embedding_layers`): a whole parameter of that layer.
                    let path = path.strip_suffix(".base_layer").unwrap_or(path);
                    if let Some((first, _)) =
                        parameters.insert((path, param), (key.as_str(), tensor))
                    {
                        return Err(PeftError::Conflict {
                            path: path.to_owned(),
                            first: first.to_owned(),
                            second: key.clone(),
                        });
                    }
                }
                Some(AdapterKey::Factor(name)) => {
                    let pair = pairs.entry(name.path).or_default();
                    let naming = *pair.naming.get_or_insert(name.naming);
                    // A half given twice, or halves named both as a linear's and an
                    // embedding's, conflict.
                    let other = (naming != name.naming).then(|| pair.a.or(pair.b)).flatten();
                    let half = pair.half(name.factor);
                    if let Some((first, _)) = half.or(other) {
                        return Err(PeftError::Conflict {
                            path: name.path.to_owned(),
                            first: first.to_owned(),
                            second: key.clone(),
                        });
                    }
                    *half = Some((key.as_str(), tensor));
                }
            }
        }
        Ok((pairs, parameters))
    }
}

/// PEFT keys a `ParamWrapper`'s factors on the module that owns the parameter, the wrappers of
/// several parameters of one module nested in their registration order: with `n` adapted
/// parameters, the last is at `<module>`, the one before at `<module>.base_layer`, and so on
/// (`peft/tuners/tuners_utils.py`, `_inject_parameters`). This maps such a pair to the bank it
/// adapts: the selected `grouped_linear` leaves under that module, in walk order, which is
/// their declaration order.
///
/// # Errors
///
/// [`PeftError::Conflict`] when two pairs land on one bank (the nested key and the bank's own
/// path, say).
pub(super) fn bank_pairs<'t>(
    pairs: Pairs<'t>,
    selected: &[ResolvedLayer],
) -> Result<BTreeMap<String, Pair<'t>>, PeftError> {
    let mut banks: HashMap<&str, Vec<&str>> = HashMap::new();
    for layer in selected {
        if layer.kind == crate::kind::Kind::GroupedLinear
            && let Some((module, _)) = layer.path.rsplit_once('.')
        {
            banks.entry(module).or_default().push(&layer.path);
        }
    }
    let mut mapped: BTreeMap<String, Pair<'t>> = BTreeMap::new();
    for (path, pair) in pairs {
        let (module, depth) = parameter_owner(path);
        let bank = banks
            .get(module)
            .and_then(|list| list.len().checked_sub(depth + 1).map(|at| list[at]));
        let target = bank.unwrap_or(path);
        let key = |pair: &Pair<'_>| {
            pair.a
                .or(pair.b)
                .map_or(String::new(), |(key, _)| key.to_owned())
        };
        if let Some(first) = mapped.get(target) {
            return Err(PeftError::Conflict {
                path: target.to_owned(),
                first: key(first),
                second: key(&pair),
            });
        }
        mapped.insert(target.to_owned(), pair);
    }
    Ok(mapped)
}
