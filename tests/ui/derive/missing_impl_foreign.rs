use moduletree::ModuleTree;

/// Three fields of types from another crate that hold no layers: one error each.
#[derive(ModuleTree)]
struct Model {
    started: std::time::Instant,
    log: std::fs::File,
    lock: std::sync::Mutex<u8>,
}

fn main() {}
