//! burn integration (filled in by the burn work).
