//! Printing module trees (filled in by the display work).
