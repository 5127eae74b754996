//! Helpers shared by the burn test suites.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Every float parameter of `model`, values by record path (LoRA factors under
/// `<weight>.lora.a` / `.b`).
pub fn snapshot<M: Module>(model: &M) -> BTreeMap<String, Vec<f32>> {
    let mut snapshot = Snapshot::default();
    model.visit(&mut snapshot);
    snapshot.values
}

#[derive(Default)]
struct Snapshot {
    values: BTreeMap<String, Vec<f32>>,
    record: Vec<String>,
}

impl ModuleVisitor for Snapshot {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.record.push(name.to_owned());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.record.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = param.val().into_data().try_to_vec::<f32>().unwrap();
        self.values.insert(self.record.join("."), values);
    }
}
