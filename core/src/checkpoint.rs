//! Reading checkpoint headers (filled in by the inspect work).
